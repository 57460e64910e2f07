"""One run end to end, and the one run-or-load path every notebook and the CLI use.

`run_experiment`: data -> model -> training -> test at the best checkpoint -> a result dict.
`run_or_load`: the stored record when this configuration is already done with the same code and
data, else train (under a per-run lock) and store; `run_grid` does that for a grid of rows.

Under torchrun every rank runs `run_experiment` (data, model, training and test are collective)
while rank 0 alone opens and writes the results store, takes the lock and decides what to do.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from mmsr_lib.config import DataConfig, RunConfig, profile_seeds
from mmsr_lib.data.format import load_dataset
from mmsr_lib.data.preprocess import SequenceData, build_sequences
from mmsr_lib.data.sources import dataset_root
from mmsr_lib.evaluate import evaluate_model
from mmsr_lib.recommender import Recommender
from mmsr_lib.runs.fingerprint import code_fingerprint, same_code
from mmsr_lib.runs.store import ResultsStore, RunRecord, git_commit
from mmsr_lib.train import fit, resolve_device
from mmsr_lib.util import distributed, registry
from mmsr_lib.util.paths import resolve
from mmsr_lib.util.provenance import machine

log = logging.getLogger("mmsr.runs")

_DATA_CACHE: dict[str, SequenceData] = {}
LOAD_ONLY_ENV = "MMSR_LOAD_ONLY"
SPLITS = ("valid", "test")


def load_data(cfg: DataConfig) -> SequenceData:
    """Preprocessed sequences for a data config, memoised per process (notebooks call it often)."""
    key = json.dumps(dataclasses.asdict(cfg), sort_keys=True)
    if key not in _DATA_CACHE:
        raw = load_dataset(dataset_root(cfg))
        _DATA_CACHE[key] = build_sequences(
            raw,
            max_len=cfg.max_len,
            min_user_interactions=cfg.min_user_interactions,
            min_item_interactions=cfg.min_item_interactions,
            cold_threshold=cfg.cold_threshold,
            train_windows=cfg.train_windows,
        )
    return _DATA_CACHE[key]


def build_model(
    cfg: RunConfig, data: SequenceData, device: torch.device | str = "cpu", cache: bool = True
) -> Recommender:
    """A fresh recommender for `cfg` (the registered `model.recommender`) on `device`,
    initialised from `train.seed`. In fast item encoding the frozen-prefix caches are built here
    (where valid), once per model, from the shared on-disk cache when `train.feature_cache` is set.
    """
    cfg = cfg.resolved()
    torch.manual_seed(cfg.train.seed)
    model = registry.create("recommender", cfg.model.recommender, cfg, data).to(device)
    if cfg.train.init_from:
        warm_start(model, cfg.train.init_from, cfg.train.checkpoint_dir)
    encoder = getattr(model, "item_encoder", None)
    if cache and cfg.model.item_encoding == "fast" and hasattr(encoder, "enable_cache"):
        folder = resolve(cfg.train.feature_cache) if cfg.train.feature_cache else None
        encoder.enable_cache("auto", cache_dir=folder)
    return model


# weights that belong to one catalog's item IDs: never carried into another catalog
ID_WEIGHTS = ("item_encoder.embedding.", "id_embedding.", "item_embedding.")


def run_dir_of(cfg: RunConfig) -> Path:
    """The folder of a run's resumable checkpoint: ``<train.checkpoint_dir>/<hash>``."""
    return resolve(cfg.train.checkpoint_dir) / cfg.hash()


def lock_of(cfg: RunConfig) -> Path:
    """The file `run_or_load` holds locked while it trains or loads a run (a second process
    waits on it; `mmsr grid --list` probes it): ``<train.checkpoint_dir>/<hash>.lock``."""
    return resolve(cfg.train.checkpoint_dir) / f"{cfg.hash()}.lock"


def checkpoint_of(source: str, checkpoint_dir: str) -> Path:
    """The checkpoint file a warm start names: a file path, or a run hash under
    ``<checkpoint_dir>/<hash>/checkpoint.pt``."""
    path = Path(source).expanduser()
    if path.is_file():
        return path
    candidate = resolve(checkpoint_dir) / source / "checkpoint.pt"
    if candidate.is_file():
        return candidate
    raise FileNotFoundError(
        f"train.init_from={source!r} is neither a checkpoint file nor a run hash with "
        f"{candidate}; train the source run first (`mmsr train ...`, its hash is printed) or "
        "pass the path of its checkpoint.pt. A run whose result is stored but whose weights are "
        "not here (imported from docs/runs, or trained on another machine) must be trained "
        "again here: its `mmsr train` line with --force")


def warm_start(model: Recommender, source: str, checkpoint_dir: str = "runs") -> dict:
    """Initialise `model` from another run's best weights (transfer): every tensor whose name
    and shape match, except ID-based ones (`ID_WEIGHTS`). Returns what was loaded and skipped;
    loading nothing is an error (the source is another architecture)."""
    from mmsr_lib.train import read_checkpoint

    path = checkpoint_of(source, checkpoint_dir)
    ck = read_checkpoint(path)
    state = ck.get("best_state") or ck["model"]
    own = model.state_dict()
    take, skipped = {}, []
    for name, tensor in state.items():
        if name.startswith(ID_WEIGHTS) or name not in own or own[name].shape != tensor.shape:
            skipped.append(name)
        else:
            take[name] = tensor
    if not take:
        raise ValueError(f"{path}: no tensor matches this model (the source is another "
                         "architecture or an ID model); nothing to transfer")
    model.load_state_dict(take, strict=False)
    log.info("warm start from %s: %d tensors loaded, %d skipped (%s)", path, len(take),
             len(skipped), ", ".join(skipped[:5]))
    return {"loaded": sorted(take), "skipped": skipped, "source": str(path)}


def evaluate_splits(
    model: Recommender, data: SequenceData, cfg: RunConfig
) -> tuple[dict, dict, dict[str, np.ndarray]]:
    """Metrics of valid, test and their cold subsets with one encoded catalog; also the
    per-user ranks (for paired tests) and the cold-set sizes."""
    metrics, extra, ranks = {}, {}, {}
    model.eval()
    with torch.no_grad():
        scorer = model.scorer()
        for split in SPLITS:
            res = evaluate_model(model, data.eval_set(split), cfg.eval.ks, cfg.eval.batch_size,
                                 scorer=scorer)
            metrics[split], ranks[split] = res.metrics, res.ranks
            cold = data.cold_eval_set(split, cfg.data.cold_mode)
            extra[f"n_cold_{split}"] = len(cold)
            if len(cold):
                res = evaluate_model(model, cold, cfg.eval.ks, cfg.eval.batch_size, scorer=scorer)
                metrics[f"cold_{split}"], ranks[f"cold_{split}"] = res.metrics, res.ranks
            else:
                metrics[f"cold_{split}"] = {}
    return metrics, extra, ranks


def run_experiment(
    cfg: RunConfig,
    progress: bool = True,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    run_dir: str | Path | None = None,
) -> dict:
    """Train and evaluate one configuration; returns what the results store keeps.

    `run_dir` holds the resumable checkpoint (default ``<train.checkpoint_dir>/<hash>``). Under
    torchrun it joins the process group first (gloo on CPU, NCCL on ``cuda:LOCAL_RANK``); rank 0
    prepares the data set on disk before the others read it.
    """
    cfg = cfg.resolved()
    t0 = time.perf_counter()
    if distributed.launched():
        distributed.init_from_env(resolve_device(cfg.train.device))
    with distributed.main_process_first():  # generating/converting a data set writes files
        data = load_data(cfg.data)
    t_data = time.perf_counter() - t0
    device = resolve_device(cfg.train.device)
    model = build_model(cfg, data, device)
    extra: dict = {"n_users": data.n_users, "n_items": data.n_items, "data": data.name,
                   "device": str(device), "machine": machine()}
    history: list = []
    t_train = t_earlier = 0.0
    if model.trainable:
        run_dir = Path(run_dir) if run_dir is not None else run_dir_of(cfg)
        fr = fit(model, data, cfg, run_dir=run_dir, progress=progress, on_epoch_end=on_epoch_end)
        history, t_train, t_earlier = fr.history, fr.train_seconds, fr.earlier_seconds
        extra.update(
            best_epoch=fr.best_epoch, epochs_run=fr.epochs_run, stopped_early=fr.stopped_early,
            converged=fr.converged, resumed_from=fr.resumed_from, world_size=fr.world_size,
            run_dir=str(run_dir),
        )
    e0 = time.perf_counter()
    metrics, more, ranks = evaluate_splits(model, data, cfg)
    extra.update(more)
    extra.update(
        n_parameters=sum(p.numel() for p in model.parameters()),
        n_trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
    )
    return {
        "metrics": metrics,
        "history": history,
        "timings": {
            "data_seconds": t_data,
            "train_seconds": t_train,  # all segments of a resumed run
            "test_seconds": time.perf_counter() - e0,
            "total_seconds": t_earlier + time.perf_counter() - t0,
            "earlier_segments_seconds": t_earlier,  # epochs run by processes before this one
        },
        "dataset_fingerprint": data.fingerprint(),
        "ranks": ranks,
        "extra": extra,
    }


# -- run or load ----------------------------------------------------------------------------------
@contextlib.contextmanager
def run_lock(path: Path) -> Iterator[None]:
    """An exclusive lock per configuration: a second process running the same configuration
    waits here until the first is done (and then loads its result) instead of resuming the first
    one's checkpoint while it is still being written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("another process is running this configuration (lock %s); waiting for it",
                        path)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def stale_reason(record: RunRecord, data_fingerprint: str | None) -> str | None:
    """Why a stored run may not describe what this code on this data would compute, or None."""
    code = code_fingerprint(record.run_config())
    if not same_code(record.code_fingerprint, code):
        return (f"it was computed by other code (fingerprint {record.code_fingerprint} vs "
                f"{code} now: the library's sources or torch/transformers/timm changed; if the "
                "change cannot alter results, `mmsr results equate --since REV` checks that)")
    if data_fingerprint is not None and record.dataset_fingerprint != data_fingerprint:
        return (f"it was computed on other data (fingerprint {record.dataset_fingerprint} vs "
                f"{data_fingerprint} now)")
    return None


def current_data_fingerprint(cfg: RunConfig) -> str:
    """The fingerprint a run of `cfg` would store for its data (loads the data, memoised)."""
    return load_data(cfg.resolved().data).fingerprint()


def run_or_load(
    config: RunConfig,
    *,
    store: ResultsStore | None = None,
    force: bool = False,
    allow_stale: bool = False,
    progress: bool = True,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    runner: Callable[..., dict] | None = None,
) -> RunRecord:
    """The stored record when this configuration is done, else run it and store the result.

    - A stored run is reused only while its code and data fingerprints match the current ones;
      a stale one is re-run (its old row stays readable until the new result replaces it), or
      reused with `allow_stale`.
    - `force` trains again from scratch in a fresh checkpoint folder; the stored result is
      replaced only when the new run completes. A re-run (forced or stale) cut short by an
      interrupt keeps its folder, and the same command resumes it (`_retrain_tag`).
    - A failure marks the run failed with its message, unless a finished result is stored: that
      stays, so a failed duplicate or re-run never destroys a result.
    - Two processes with the same configuration: the second waits for the first (a file lock
      per run) and then loads its result.
    - Under ``$MMSR_LOAD_ONLY=1`` (`make figures`) nothing is trained and nothing waits: the
      stored result is read without the lock (a re-run of it in progress leaves it readable);
      a run without one is an error at once, saying whether another process is training it.

    Under torchrun every rank must call this; rank 0 alone uses the store and the lock.
    """
    cfg = config.resolved()
    runner = runner if runner is not None else run_experiment
    load_only = os.environ.get(LOAD_ONLY_ENV) == "1"  # `make figures`: draw, never train
    allow_stale = allow_stale or load_only
    if distributed.launched():
        distributed.init_from_env(resolve_device(cfg.train.device))
    main = distributed.is_main_process()
    store = (store if store is not None else ResultsStore()) if main else None
    key = cfg.hash()
    if load_only:
        return distributed.broadcast_object(_stored_or_raise(cfg, store) if main else None)
    with run_lock(lock_of(cfg)) if main else contextlib.nullcontext():
        decision = _decide(cfg, store, force, allow_stale) if main else None
        decision = distributed.broadcast_object(decision)
        if decision["reuse"]:
            return distributed.broadcast_object(store.get(key) if main else None)
        run_dir = run_dir_of(cfg)
        fresh = run_dir / f"retrain-{decision['tag']}" if decision["fresh"] else None
        if fresh is not None and main and (fresh / "checkpoint.pt").exists():
            log.info("resuming the re-run of %s cut short earlier in %s (delete that folder to "
                     "start it from scratch)", cfg.name, fresh)
        if store is not None:
            store.start(cfg)
        # the code this process loaded and the commit it came from, taken before training: a
        # checkout edited during a run of hours must not be credited with its result
        code, commit = (code_fingerprint(cfg), git_commit()) if main else (None, None)
        try:
            result = runner(cfg, progress=progress, on_epoch_end=on_epoch_end,
                            run_dir=fresh or run_dir)
        except BaseException as err:
            if store is not None:
                store.fail(cfg, f"{type(err).__name__}: {err}")
            if fresh is not None and main:
                if isinstance(err, (KeyboardInterrupt, SystemExit)):  # Terminated included
                    log.warning("the re-run of %s stopped; its checkpoint stays in %s and the "
                                "same command resumes it", cfg.name, fresh)
                else:  # ours; the old checkpoint is intact
                    shutil.rmtree(fresh, ignore_errors=True)
            raise
        if store is None:
            return distributed.broadcast_object(None)
        if fresh is not None:  # the checkpoint moves to the run's folder (`_promote_checkpoint`)
            result.setdefault("extra", {})["run_dir"] = str(run_dir)
        record = store.finish(cfg, result, code_fingerprint=code, commit=commit)
        if fresh is not None:
            _promote_checkpoint(fresh, run_dir)
        distributed.broadcast_object(record)
        return record


def _decide(cfg: RunConfig, store: ResultsStore, force: bool, allow_stale: bool) -> dict:
    """Rank 0's choice: reuse the stored record, resume/start in the run folder, or (force,
    stale) start from scratch in a fresh folder."""
    existing = store.get(cfg.hash())
    tag = _retrain_tag(existing)
    if force:
        return {"reuse": False, "fresh": True, "tag": tag}
    if existing is None or existing.status != "done":
        return {"reuse": False, "fresh": False, "tag": tag}
    if allow_stale:
        return {"reuse": True}
    reason = stale_reason(existing, current_data_fingerprint(cfg))
    if reason is None:
        return {"reuse": True}
    log.warning("the stored result of %s [%s] is stale: %s; training again (pass allow_stale to "
                "reuse it)", cfg.name, cfg.hash(), reason)
    return {"reuse": False, "fresh": True, "tag": tag}


def _retrain_tag(existing: RunRecord | None) -> str:
    """The folder suffix of a re-run from scratch, fixed by the finished record it replaces: a
    re-run cut short resumes when the same command is given again, and one asked for after it
    completed (a new record) starts afresh."""
    stamp = existing.updated if existing is not None and existing.status == "done" else "none"
    return hashlib.sha256(stamp.encode()).hexdigest()[:8]


def lock_held(path: Path) -> bool:
    """Whether a process holds the run lock `path` (`lock_of`) now: probed with a shared,
    non-blocking lock that is let go at once, so nothing waits on it."""
    try:
        fh = open(path, "rb")
    except OSError:  # no lock file: never started here
        return False
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
    return False


def _stored_or_raise(cfg: RunConfig, store: ResultsStore) -> RunRecord:
    """Under ``$MMSR_LOAD_ONLY``: the stored finished record (stale or not, read without the
    run's lock), else a clear error now instead of a wait behind a training process."""
    record = store.get(cfg.hash())
    if record is not None and record.status == "done":
        return record
    where = (f"is training in another process now (it holds {lock_of(cfg)}): wait for it to "
             "finish (`mmsr grid NN --list` shows its epoch), then draw again"
             if lock_held(lock_of(cfg)) else
             f"is not in the results store; run the notebooks first (`make notebooks "
             f"PROFILE={cfg.profile}`)")
    raise RuntimeError(f"run {cfg.name} [{cfg.hash()}] {where}; ${LOAD_ONLY_ENV}=1 only draws "
                       "from stored results")


def _promote_checkpoint(fresh: Path, run_dir: Path) -> None:
    """The finished re-run's checkpoint becomes the run's checkpoint (atomic rename)."""
    src = fresh / "checkpoint.pt"
    if src.exists():
        os.replace(src, run_dir / "checkpoint.pt")
    shutil.rmtree(fresh, ignore_errors=True)


def pending_runs(configs: Sequence[RunConfig], store: ResultsStore, force: bool = False,
                 allow_stale: bool = False) -> list[RunConfig]:
    """The configurations `run_or_load` would train rather than load (`_decide`), in order."""
    return [cfg for cfg in configs
            if not _decide(cfg.resolved(), store, force, allow_stale)["reuse"]]


def train_pending(pending: Sequence[RunConfig], store: ResultsStore, workers: int | None = None,
                  force: bool = False, allow_stale: bool = False, progress: bool = True) -> None:
    """Train `pending` (`pending_runs`) into `store`: in `workers` processes (default
    `parallel.grid_workers`) when that is more than one, outside torchrun and `make figures`;
    else one after the other in this process."""
    if not pending:
        return
    from mmsr_lib.runs.parallel import grid_workers, train_in_processes

    n = grid_workers(pending[0], len(pending)) if workers is None else min(workers, len(pending))
    if n > 1 and not distributed.launched() and os.environ.get(LOAD_ONLY_ENV) != "1":
        train_in_processes(pending, store.path, n, run_or_load, force=force,
                           allow_stale=allow_stale, progress=progress)
        return
    for cfg in pending:
        run_or_load(cfg, store=store, force=force, allow_stale=allow_stale, progress=progress)


def run_grid(
    configs: Mapping[Hashable, RunConfig],
    store: ResultsStore | None = None,
    force: bool = False,
    progress: bool = True,
    allow_stale: bool = False,
    seeds: Sequence[int] | None = None,
    workers: int | None = None,
) -> dict[Hashable, list[RunRecord]]:
    """`run_or_load` for every configuration of a grid and every seed.

    Returns label -> one record per seed (`seeds`, default: the profile's, see
    `config.profile_seeds`), so tables can show mean +- std and paired tests can compare rows.
    With `workers` > 1 (default `grid_workers`) the runs not yet stored train first in that many
    processes, one run each at a time (`parallel.train_in_processes`); the records are then read
    in grid order, so the result does not depend on who trained what.
    """
    store = store or ResultsStore()
    jobs = [(label, cfg.override(f"train.seed={seed}"))
            for label, cfg in configs.items()
            for seed in (seeds if seeds is not None else profile_seeds(cfg.profile))]
    pending = pending_runs([cfg for _, cfg in jobs], store, force, allow_stale)
    if pending:
        train_pending(pending, store, workers, force, allow_stale, progress)
        force = False  # trained just now: what follows only loads
    out: dict[Hashable, list[RunRecord]] = {}
    for label, seeded in jobs:
        log.info("%s seed %d: %s", label, seeded.train.seed, seeded.hash())
        out.setdefault(label, []).append(run_or_load(seeded, store=store, force=force,
                                                     allow_stale=allow_stale, progress=progress))
    return out
