"""A grid's pending runs trained side by side, one process per run, on a CPU.

The cpu profile's models are small (d=64, 2 blocks, batches of 128 x 20): their kernels are too
short to keep two threads busy, so one process with two threads trains slower than two
single-threaded processes each training its own run (measured in BENCHMARKS.md, "Grids: runs
side by side"). `run_grid` therefore hands the runs it has to train to this module when
`grid_workers` says more than one: each worker process calls `run_or_load` for one run at a time
(the per-run file lock keeps two processes off the same run, the results store is SQLite in WAL
mode), and `run_grid` then reads every record from the store in grid order. A run's numbers do
not depend on which process trained it; with a different thread count they can differ in the
last float digits, as they always could (`util.threads`).
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from tqdm.auto import tqdm

from mmsr_lib.config import RunConfig
from mmsr_lib.runs.store import RunRecord
from mmsr_lib.util.threads import chosen_threads, usable_cores

log = logging.getLogger("mmsr.runs")

WORKERS_ENV = "MMSR_WORKERS"


def grid_workers(cfg: RunConfig, pending: int) -> int:
    """Processes for a grid's `pending` runs: ``$MMSR_WORKERS`` if set; else, for the cpu
    profile on a CPU, one per usable core; else 1 (smoke runs take seconds, less than a worker
    takes to start; a GPU is shared better by one run at a time)."""
    env = os.environ.get(WORKERS_ENV, "")
    if env:
        if not env.isdigit() or int(env) < 1:
            raise ValueError(f"${WORKERS_ENV}={env!r}: give a whole number of processes >= 1")
        n = int(env)
    elif cfg.profile == "cpu" and _on_cpu(cfg.resolved().train.device):
        n = usable_cores()
    else:
        n = 1
    return max(1, min(n, pending))


def _on_cpu(device: str) -> bool:
    import torch

    return device == "cpu" or (device == "auto" and not torch.cuda.is_available())


def worker_threads(workers: int) -> int:
    """Intra-op threads of each of `workers` processes: the user's choice (`chosen_threads`),
    else the usable cores shared out."""
    return chosen_threads() or max(1, usable_cores() // workers)


LOG_EVERY = 10  # epochs between a worker's progress lines


def epoch_logger(name: str, every: int = LOG_EVERY) -> Callable[[int, dict], None]:
    """An `on_epoch_end` that logs a run's progress every `every` epochs: a worker has no
    progress bar (several would garble one terminal), and a cpu run lasts minutes to hours."""
    start = time.perf_counter()
    best = {"score": -math.inf, "epoch": 0}

    def log_epoch(epoch: int, record: dict) -> None:
        score = record.get("valid", {}).get("NDCG@10")
        if score is not None and score > best["score"]:
            best.update(score=score, epoch=epoch + 1)
        if (epoch + 1) % every == 0:
            log.info("%s: epoch %d, loss %.4f, best valid NDCG@10 %.2f at epoch %d, %.0f s",
                     name, epoch + 1, record.get("loss", math.nan), best["score"],
                     best["epoch"], time.perf_counter() - start)

    return log_epoch


PARENT_POLL_SECONDS = 1.0


def _die_with_parent(parent: int) -> None:
    """Pool initializer: a worker ends (SIGTERM to itself, as `_stop` would send) once the
    process that started it is gone. Without it a worker whose parent was killed (a notebook
    kernel shut down by papermill, `kill -9` of a grid) went on training as an orphan, holding its
    run's lock, so a restarted grid waited on it. Its checkpoint is written atomically, so the
    run resumes from it next time."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_SECONDS)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="mmsr-parent-watch", daemon=True).start()


def _train_one(run: Callable[..., RunRecord], cfg: RunConfig, store_path: str, threads: int,
               force: bool, allow_stale: bool) -> str:
    """Worker body: train (or load) one run with `threads` intra-op threads, logging its
    progress to the terminal every `LOG_EVERY` epochs."""
    from mmsr_lib.runs.store import ResultsStore
    from mmsr_lib.util.threads import configure_threads

    if not logging.getLogger().handlers:  # a spawned process starts without any
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    configure_threads(threads)
    record = run(cfg, store=ResultsStore(store_path), force=force, allow_stale=allow_stale,
                 progress=False, on_epoch_end=epoch_logger(f"{cfg.name} seed {cfg.train.seed}"))
    return record.config_hash


def train_in_processes(configs: Sequence[RunConfig], store_path: str | Path, workers: int,
                       run: Callable[..., RunRecord], force: bool = False,
                       allow_stale: bool = False, progress: bool = True) -> list[str]:
    """Train `configs` in `workers` spawned processes, each calling `run` (`runner.run_or_load`,
    passed in by reference so that this module does not import the runner that imports it;
    threads per process: `worker_threads`); returns their config hashes in order of `configs`.

    The first failure stops what has not started and is raised with the run's name; runs that
    finished are stored, and a run cut short resumes from its checkpoint next time."""
    from mmsr_lib.data.sources import dataset_root

    # each data set is made (generated, imported) here, before any worker starts: two workers
    # making the same one at once would each swap their copy into place under the other's feet
    # (once made, `dataset_root` only reads its manifest)
    for cfg in configs:
        dataset_root(cfg.resolved().data)
    threads = worker_threads(workers)
    log.info("training %d runs in %d processes, %d thread(s) each", len(configs), workers,
             threads)
    bar = tqdm(total=len(configs), desc=f"runs ({workers} processes)", disable=not progress,
               dynamic_ncols=True)
    ctx = multiprocessing.get_context("spawn")  # fork after torch's threads start can hang
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx,
                               initializer=_die_with_parent, initargs=(os.getpid(),))
    futures = {pool.submit(_train_one, run, cfg, str(store_path), threads, force, allow_stale):
               cfg
               for cfg in configs}
    try:
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            bar.update(len(finished))
            for fut in finished:
                err = fut.exception()
                if err is not None:
                    raise RuntimeError(failure_message(futures[fut], err)) from err
    except BaseException:
        # an interrupt (a notebook's stop button reaches only this process) or a failure: stop
        # the workers now; checkpoints are written atomically, so a cut run resumes next time
        _stop(pool)
        raise
    finally:
        bar.close()
    pool.shutdown(wait=True)
    return [cfg.hash() for cfg in configs]


def failure_message(cfg: RunConfig, err: BaseException) -> str:
    """What a worker's failure says; a pool broken by a dead worker adds the usual causes,
    since its own message names none."""
    msg = f"run {cfg.name} [{cfg.hash()}] failed in a worker process: {type(err).__name__}: {err}"
    if isinstance(err, BrokenProcessPool):
        msg += ("; a worker process died. Usual causes: memory (fewer workers: MMSR_WORKERS=1 "
                "trains in this process), a kill, or a script that calls the grid without "
                "`if __name__ == \"__main__\":` (spawned workers re-import the main script; the "
                "traceback above then shows it starting a second pool)")
    return msg


def _stop(pool: ProcessPoolExecutor) -> None:
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        if proc.is_alive():
            proc.terminate()
    for proc in processes:
        proc.join(timeout=10)
