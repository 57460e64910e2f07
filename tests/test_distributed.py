"""Data-parallel training: 2 CPU processes under torchrun (gloo) equal 1 process.

The 2-process job is the real launcher, `python -m torch.distributed.run --nproc_per_node=2`,
running this file as its worker script (see `_worker` at the bottom). With dropout 0 and the same
global batch the runs differ only by float summation order, so we require:

- per-epoch training losses equal within 1e-5 (absolute; losses are ~0.5-1.4),
- validation and test metrics equal (identical ranks; `approx` only absorbs float printing),
- final weights `allclose(rtol=1e-4, atol=1e-5)`, except the attention KEY bias: softmax is
  invariant to it, so its exact gradient is 0 and Adam turns float rounding noise (~1e-9) into
  lr-sized steps in either run; any change of summation order (even the thread count of one
  process) moves it. It changes no output, which the loss and metric checks cover.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch

from mmsr_lib.config import RunConfig, profile_config
from mmsr_lib.data.format import load_dataset
from mmsr_lib.data.preprocess import SequenceData, build_sequences
from mmsr_lib.encoders.frozen_cache import FrozenCache
from mmsr_lib.runs.runner import build_model, run_experiment
from mmsr_lib.runs.store import ResultsStore
from mmsr_lib.train import fit
from mmsr_lib.util import distributed

WORLD = 2
LOSS_TOL = 1e-5
WEIGHT_RTOL, WEIGHT_ATOL = 1e-4, 1e-5
INTERRUPT_AFTER = 0  # the 2-process job is killed after this epoch and resumed


def make_data_root(root: Path) -> Path:
    """49 users walking a cycle of 40 items: with batch 16 the last global batch has 1 row, so
    rank 1 gets an empty shard; validation (eval batch 16) is split 32 / 17 users."""
    from conftest import write_sequences

    rng = np.random.default_rng(0)
    seqs = {}
    for u in range(49):
        start, n = rng.integers(40), rng.integers(6, 18)
        seqs[f"u{u}"] = [f"i{(start + k) % 40}" for k in range(n)]
    return write_sequences(root, seqs)


def load(root: Path) -> SequenceData:
    return build_sequences(load_dataset(root), max_len=8)


def ddp_cfg(root: Path) -> RunConfig:
    # dropout 0: each rank draws its own dropout masks, so only a dropout-free run is comparable
    return profile_config("smoke").override(
        "model.sequence=sasrec", "model.dim=16", "model.dropout=0.0", "train.epochs=3",
        "train.patience=10", "train.batch_size=16", "train.lr=0.01", "eval.batch_size=16",
        "data.source=path", f"data.path={root}", "data.max_len=8",
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Interrupt(Exception):
    pass


def comparable(name: str, value: torch.Tensor) -> torch.Tensor:
    """Mask of the entries whose gradient is not identically zero (all but the key bias)."""
    keep = torch.ones_like(value, dtype=torch.bool)
    if name.endswith("attn.qkv.bias"):  # [q | k | v]
        dim = len(value) // 3
        keep[dim : 2 * dim] = False
    return keep


# -- the 2-process job (runs once for the module) --------------------------------------------------
@pytest.fixture(scope="module")
def job(tmp_path_factory):
    base = tmp_path_factory.mktemp("ddp")
    root = make_data_root(base / "data")
    out = base / "out"
    out.mkdir()
    env = {
        **os.environ,
        "MMSR_HOME": str(base / "home"),
        "MMSR_RESULTS": str(base / "home" / "results.sqlite"),
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(Path(__file__).parent), os.environ.get("PYTHONPATH")) if p
        ),
        "OMP_NUM_THREADS": "1",
    }
    cmd = [
        sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={WORLD}",
        "--master_addr=127.0.0.1", f"--master_port={free_port()}",
        __file__, str(root), str(out), str(base / "fit_runs"),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    return {"root": root, "base": base, "ranks": ranks}


@pytest.fixture(scope="module")
def single(job):
    """The same fit in this process (no process group), uninterrupted."""
    assert not distributed.is_distributed()
    data = load(job["root"])
    cfg = ddp_cfg(job["root"])
    model = build_model(cfg, data)
    res = fit(model, data, cfg, progress=False)
    return {"res": res, "state": model.state_dict()}


def test_two_ranks_match_one_process_losses_metrics_weights(job, single):
    res = single["res"]
    for r, got in enumerate(job["ranks"]):
        assert got["world_size"] == WORLD and got["resumed_from"] == INTERRUPT_AFTER
        assert len(got["history"]) == len(res.history) == 3
        for a, b in zip(got["history"], res.history, strict=True):
            assert a["loss"] == pytest.approx(b["loss"], abs=LOSS_TOL), (r, a["epoch"])
            assert a["valid"] == pytest.approx(b["valid"], abs=1e-9), (r, a["epoch"])
        assert got["best_epoch"] == res.best_epoch
        assert got["best_valid"] == pytest.approx(res.best_valid, abs=1e-9)
        assert got["state"].keys() == single["state"].keys()
        for k, v in single["state"].items():
            keep = comparable(k, v)
            assert torch.allclose(got["state"][k][keep], v[keep], rtol=WEIGHT_RTOL,
                                  atol=WEIGHT_ATOL), (r, k)
    # the ranks hold identical replicas (DDP keeps them in step)
    for k, v in job["ranks"][0]["state"].items():
        assert torch.equal(v, job["ranks"][1]["state"][k]), k
    assert res.history[-1]["loss"] < res.history[0]["loss"]  # it did train


def test_sharded_item_table_equals_encode_all(job):
    for got in job["ranks"]:
        assert torch.equal(got["table_sharded"], got["table_local"])


def text_branch(root: Path, data: SequenceData):
    cfg = ddp_cfg(root).override("model.item_encoder=text")
    return build_model(cfg, data, cache=False).item_encoder.text


def test_shared_frozen_cache_build_equals_one_process(job):
    # 40 items in chunks of 8: rounds (0, 1), (2, 3), (4,) -> rank 1 idles in the last round
    data = load(job["root"])
    expected = FrozenCache.build(text_branch(job["root"], data), data.n_items, batch_size=8).table
    for got in job["ranks"]:
        assert torch.equal(got["cache_mem"], expected)
        assert np.array_equal(got["cache_disk"], expected.numpy().astype(np.float16))
    # rank 0's table only, no temporaries; the builders' lock file stays by design (build_lock)
    files = sorted(p.name for p in (job["base"] / "frozen").iterdir())
    tables = [name for name in files if name.endswith(".npy")]
    assert len(tables) == 1 and files == sorted([tables[0], f".{tables[0][:-4]}.lock"])


def test_only_rank_zero_writes_checkpoint_and_results(job, single, monkeypatch):
    # rank 1 runs with atomic_save replaced by a refusal (see _worker); rank 0's file is there
    assert all(got["rank1_saves_refused"] for got in job["ranks"])
    ck_files = list((job["base"] / "fit_runs").glob("*"))
    assert [p.name for p in ck_files] == ["checkpoint.pt"]  # no stray temporary files
    ck = torch.load(ck_files[0], weights_only=True)
    assert ck["epoch"] == 2 and ck["done"]

    # run_experiment via run_or_load: rank 0 stored the record in the results store
    cfg = ddp_cfg(job["root"])
    store = ResultsStore(job["base"] / "home" / "results.sqlite")
    rec = store.get(cfg.hash())
    assert rec is not None and rec.status == "done" and rec.extra["world_size"] == WORLD
    assert [r.config_hash for r in store.records(status=None)] == [cfg.hash()]
    for got in job["ranks"]:  # every rank returned the stored record
        assert got["record_metrics"] == rec.metrics

    # and it equals a 1-process run_experiment of the same configuration
    monkeypatch.setenv("MMSR_HOME", str(job["base"] / "single_home"))
    one = run_experiment(cfg, progress=False)
    assert one["extra"]["world_size"] == 1
    for split in ("valid", "test"):
        assert rec.metrics[split] == pytest.approx(one["metrics"][split], abs=1e-9), split


# -- the uneven all_gather helper ---------------------------------------------------------------
def test_helpers_without_process_group_are_identity():
    t = torch.arange(6.0).view(3, 2)
    assert not distributed.is_distributed() and distributed.world_size() == 1
    assert distributed.all_gather_uneven(t) == [t]
    assert torch.equal(distributed.all_gather_cat(t), t)
    assert distributed.shard_range(10, block=4) == (0, 10)
    assert distributed.broadcast_object({"a": 1}) == {"a": 1}
    with pytest.raises(ValueError, match="row dimension"):
        distributed.all_gather_uneven(torch.tensor(1.0))


def test_uneven_all_gather_across_two_ranks(job):
    for r, got in enumerate(job["ranks"]):
        parts = got["gathered"]
        # rank 0 sent 3 rows, rank 1 sent 1 row, each row filled with (rank + 1)
        assert [tuple(p.shape) for p in parts] == [(3, 2, 5), (1, 2, 5)], r
        assert torch.equal(parts[0], torch.full((3, 2, 5), 1, dtype=torch.int64))
        assert torch.equal(parts[1], torch.full((1, 2, 5), 2, dtype=torch.int64))
        # an empty shard on rank 1 (shape (0,)) takes the trailing shape of rank 0
        assert [tuple(p.shape) for p in got["gathered_empty"]] == [(2, 3), (0, 3)], r
        assert got["shape_mismatch"].startswith("all_gather_uneven: rank 1 sent [2, 4]"), r
        assert got["shards"] == [(0, 4), (4, 10)], r  # 3 blocks of 4: one, then two


# -- the worker: this file run by torchrun ------------------------------------------------------
def _worker(root: Path, out: Path, fit_dir: Path) -> None:
    import mmsr_lib.train as train_mod
    from mmsr_lib.runs.runner import run_or_load

    torch.set_num_threads(1)
    assert distributed.init_from_env("cpu", timeout=timedelta(seconds=120))
    me, report = distributed.rank(), {}

    # uneven all_gather: rank 0 has 3 rows, rank 1 has 1
    mine = torch.full((3 if me == 0 else 1, 2, 5), me + 1, dtype=torch.int64)
    report["gathered"] = distributed.all_gather_uneven(mine)
    empty = torch.ones(2, 3) if me == 0 else torch.empty(0)
    report["gathered_empty"] = distributed.all_gather_uneven(empty)
    try:
        distributed.all_gather_uneven(torch.zeros(2, 3 if me == 0 else 4))
    except ValueError as err:
        report["shape_mismatch"] = str(err)
    report["shards"] = distributed.all_gather_uneven(
        torch.tensor([distributed.shard_range(10, block=4)])
    )
    report["shards"] = [tuple(int(x) for x in t[0]) for t in report["shards"]]

    # fit, killed after epoch INTERRUPT_AFTER and resumed; rank 1 must never save
    saves_refused = True
    if me != 0:
        def refuse(obj, path):
            nonlocal saves_refused
            saves_refused = False
            raise AssertionError(f"rank {me} tried to write {path}")

        train_mod.atomic_save = refuse
    data = load(root)
    cfg = ddp_cfg(root)

    def kill(epoch: int, record: dict) -> None:
        if epoch == INTERRUPT_AFTER:
            raise Interrupt

    try:
        fit(build_model(cfg, data), data, cfg, run_dir=fit_dir, progress=False, on_epoch_end=kill)
    except Interrupt:
        pass
    model = build_model(cfg, data)
    res = fit(model, data, cfg, run_dir=fit_dir, progress=False)
    model.eval()
    report.update(
        history=res.history, best_epoch=res.best_epoch, best_valid=res.best_valid,
        resumed_from=res.resumed_from, world_size=res.world_size, state=model.state_dict(),
        table_sharded=model.item_table(batch_size=7), table_local=model.item_encoder.encode_all(),
    )
    # the frozen-prefix cache built by both ranks, in memory and as rank 0's file
    branch = text_branch(root, data)
    report["cache_mem"] = FrozenCache.build(branch, data.n_items, batch_size=8).table
    disk = FrozenCache.build(branch, data.n_items, batch_size=8, path=fit_dir.parent / "frozen")
    report["cache_disk"] = torch.from_numpy(np.array(disk.table))  # loads with weights_only
    # run_experiment through the results store, as `mmsr train` under torchrun does
    record = run_or_load(cfg, progress=False)
    report["record_metrics"] = record.metrics
    report["rank1_saves_refused"] = distributed.broadcast_object(saves_refused, src=1)
    torch.save(report, out / f"rank{me}.pt")  # the test harness's own output


if __name__ == "__main__":
    _worker(*(Path(a) for a in sys.argv[1:4]))
