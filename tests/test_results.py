"""The SQLite results store and run-or-load: round trips, failures that never destroy a result,
--force, stale results, per-run locks, concurrent writers, read-only listing, export."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mmsr_lib.config import RunConfig, profile_config
from mmsr_lib.runs import runner as runner_mod
from mmsr_lib.runs.fingerprint import code_fingerprint
from mmsr_lib.runs.runner import run_or_load
from mmsr_lib.runs.store import ResultsStore, git_commit


@pytest.fixture(autouse=True)
def _fake_data_fingerprint(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake runners below report data fingerprint "abc123"; let the stale check agree."""
    monkeypatch.setattr(runner_mod, "current_data_fingerprint", lambda cfg: "abc123")


def fake_result(seed: int) -> dict:
    return {
        "metrics": {"valid": {"HR@10": 1.0 + seed, "NDCG@10": 0.5},
                    "test": {"HR@10": 2.0 + seed, "NDCG@10": 1.0 + seed}},
        "history": [{"epoch": 1, "loss": np.float32(0.75), "valid": {"NDCG@10": 0.5}}],
        "timings": {"total_seconds": 1.5},
        "dataset_fingerprint": "abc123",
        "extra": {"n_users": np.int64(300), "best_epoch": 1},
    }


def test_round_trip(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "sub" / "r.sqlite")
    cfg = profile_config("smoke", name="round", model__sequence="gru4rec")
    assert store.get(cfg.hash()) is None
    store.start(cfg)
    assert store.get(cfg.hash()).status == "running"
    rec = store.finish(cfg, fake_result(0))
    assert rec.status == "done" and rec.config_hash == cfg.hash()
    assert rec.metrics["test"] == {"HR@10": 2.0, "NDCG@10": 1.0}
    assert rec.history[0]["loss"] == pytest.approx(0.75)
    assert rec.extra == {"n_users": 300, "best_epoch": 1}
    assert rec.timings == {"total_seconds": 1.5}
    assert rec.dataset_fingerprint == "abc123"
    assert (rec.name, rec.profile, rec.error) == ("round", "smoke", None)
    assert rec.run_config().hash() == cfg.hash()
    assert rec.created.endswith("+00:00") and rec.updated >= rec.created
    assert rec.git_commit == git_commit()
    # a second store object on the same file sees the same record
    assert ResultsStore(tmp_path / "sub" / "r.sqlite").get(cfg.hash()) == rec
    assert [r.config_hash for r in store.records()] == [cfg.hash()]


def test_start_keeps_a_finished_result_readable(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "r.sqlite")
    cfg = RunConfig(name="again")
    store.finish(cfg, fake_result(1))
    store.start(cfg)  # a re-run starts: the finished result stays until it is replaced
    rec = store.get(cfg.hash())
    assert rec.status == "done" and rec.metrics["test"]["HR@10"] == 3.0
    store.fail(cfg, "RuntimeError: the re-run broke")  # never turns done into failed
    rec = store.get(cfg.hash())
    assert rec.status == "done" and rec.error is None and rec.metrics["test"]["HR@10"] == 3.0


def test_run_or_load_runs_once(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "r.sqlite")
    calls: list[str] = []

    def runner(cfg: RunConfig, **_) -> dict:
        calls.append(cfg.name)
        return fake_result(len(calls))

    cfg = profile_config("smoke", name="once")
    first = run_or_load(cfg, runner=runner, store=store)
    second = run_or_load(cfg.override("name=renamed"), runner=runner, store=store)  # same hash
    assert calls == ["once"]
    assert second == first and first.metrics["test"]["HR@10"] == 3.0
    assert first.code_fingerprint == code_fingerprint(cfg)
    other = run_or_load(cfg.override("train.seed=7"), runner=runner, store=store)
    assert len(calls) == 2 and other.config_hash != first.config_hash


def test_force_trains_from_scratch_and_replaces_only_when_done(tmp_path: Path) -> None:
    """--force used to reset the stored row first, then resume the finished checkpoint."""
    store = ResultsStore(tmp_path / "r.sqlite")
    cfg = profile_config("smoke", name="forced")
    seen: list[tuple] = []

    def runner(c: RunConfig, run_dir=None, **_) -> dict:
        old = store.get(c.hash())
        seen.append((old.status if old else None, old.metrics.get("test") if old else None,
                     Path(run_dir)))
        return fake_result(len(seen))

    run_or_load(cfg, runner=runner, store=store)
    forced = run_or_load(cfg, runner=runner, store=store, force=True)
    # during the forced run the old result was still stored and done
    assert seen[1][0] == "done" and seen[1][1]["HR@10"] == 3.0
    # it trained in a fresh folder, not on the finished run's checkpoint
    assert seen[1][2] != seen[0][2] and seen[1][2].parent == seen[0][2]
    assert forced.metrics["test"]["HR@10"] == 4.0

    def broken(c: RunConfig, **_) -> dict:
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        run_or_load(cfg, runner=broken, store=store, force=True)
    rec = store.get(cfg.hash())
    assert rec.status == "done" and rec.metrics["test"]["HR@10"] == 4.0  # the result survived


def test_a_rerun_cut_short_resumes_with_the_same_command(tmp_path: Path) -> None:
    """A forced re-run stopped by a signal keeps its folder (the old result and checkpoint stay
    in place); the same command resumes it there; once it completes, a new --force starts a
    new folder. A real error still removes the re-run's folder."""
    store = ResultsStore(tmp_path / "r.sqlite")
    cfg = profile_config("smoke", name="resumed",
                         train__checkpoint_dir=str(tmp_path / "runs")).resolved()
    dirs: list[Path] = []

    def runner(c: RunConfig, run_dir=None, **_) -> dict:
        run_dir = Path(run_dir)
        dirs.append(run_dir)
        resumed = (run_dir / "checkpoint.pt").exists()
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "checkpoint.pt").write_text(f"epochs of run {len(dirs)}")
        if len(dirs) == 2:
            raise KeyboardInterrupt  # SIGTERM arrives as cli.Terminated, a KeyboardInterrupt
        return fake_result(10 if resumed else len(dirs))

    run_or_load(cfg, runner=runner, store=store)
    with pytest.raises(KeyboardInterrupt):
        run_or_load(cfg, runner=runner, store=store, force=True)
    assert dirs[1] != dirs[0] and (dirs[1] / "checkpoint.pt").exists()  # kept
    rec = store.get(cfg.hash())
    assert rec.status == "done" and rec.metrics["test"]["HR@10"] == 3.0  # untouched
    assert (dirs[0] / "checkpoint.pt").read_text() == "epochs of run 1"
    resumed = run_or_load(cfg, runner=runner, store=store, force=True)
    assert dirs[2] == dirs[1] and resumed.metrics["test"]["HR@10"] == 12.0
    assert (dirs[0] / "checkpoint.pt").read_text() == "epochs of run 3"  # promoted
    assert not dirs[1].exists()
    run_or_load(cfg, runner=runner, store=store, force=True)
    assert dirs[3] not in dirs[:3]  # a completed re-run is not resumed by the next --force

    def broken(c: RunConfig, run_dir=None, **_) -> dict:
        dirs.append(Path(run_dir))
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        run_or_load(cfg, runner=broken, store=store, force=True)
    assert not dirs[-1].exists()


def test_stale_results_are_not_reused_silently(tmp_path: Path, monkeypatch) -> None:
    store = ResultsStore(tmp_path / "r.sqlite")
    cfg = profile_config("smoke", name="stale")
    calls: list[int] = []

    def runner(c: RunConfig, **_) -> dict:
        calls.append(1)
        return fake_result(len(calls))

    run_or_load(cfg, runner=runner, store=store)
    monkeypatch.setattr(runner_mod, "code_fingerprint", lambda *cfg: "other-code")
    kept = run_or_load(cfg, runner=runner, store=store, allow_stale=True)
    assert len(calls) == 1 and kept.metrics["test"]["HR@10"] == 3.0  # reused only when asked
    rerun = run_or_load(cfg, runner=runner, store=store)
    assert len(calls) == 2 and rerun.code_fingerprint == "other-code"
    monkeypatch.setattr(runner_mod, "current_data_fingerprint", lambda c: "new-data")
    run_or_load(cfg, runner=runner, store=store)  # the data changed: run again
    assert len(calls) == 3


def _locked_runner(path: str, counter: str) -> None:
    import time as _time

    from mmsr_lib.runs.runner import run_or_load as rol

    def runner(c: RunConfig, **_) -> dict:
        with open(counter, "a") as fh:
            fh.write("x")
        _time.sleep(1.5)
        return fake_result(0)

    runner_mod.current_data_fingerprint = lambda cfg: "abc123"
    rec = rol(profile_config("smoke", name="same"), runner=runner, store=ResultsStore(path))
    assert rec.status == "done"


def test_same_configuration_in_two_processes_runs_once(tmp_path: Path) -> None:
    path, counter = str(tmp_path / "r.sqlite"), str(tmp_path / "calls.txt")
    ResultsStore(path)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_locked_runner, args=(path, counter)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0, 0]
    assert Path(counter).read_text() == "x"  # the second waited for the first, then loaded


def test_failure_is_recorded_and_reraised(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "r.sqlite")
    cfg = RunConfig(name="boom")

    def runner(_: RunConfig, **__) -> dict:
        raise RuntimeError("CUDA out of memory; lower train.batch_size")

    with pytest.raises(RuntimeError, match="out of memory"):
        run_or_load(cfg, runner=runner, store=store)
    rec = store.get(cfg.hash())
    assert rec.status == "failed"
    assert rec.error == "RuntimeError: CUDA out of memory; lower train.batch_size"
    assert store.records() == [] and len(store.records("failed")) == 1
    # a failed run is retried, not loaded
    ok = run_or_load(cfg, runner=lambda c, **_: fake_result(0), store=store)
    assert ok.status == "done" and ok.error is None


def test_bad_results_are_rejected(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "r.sqlite")
    cfg = RunConfig()
    with pytest.raises(ValueError, match="unknown result keys"):
        store.finish(cfg, {"metrics": {}, "loss": 1.0})
    with pytest.raises(ValueError, match="metrics"):
        store.finish(cfg, {"history": []})
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        store.finish(cfg, {"metrics": {}, "extra": {"obj": object()}})
    with pytest.raises(ValueError, match="status must be one of"):
        store.records("finished")
    assert store.get(cfg.hash()) is None


def test_default_path_follows_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMSR_RESULTS", str(tmp_path / "env" / "x.sqlite"))
    assert ResultsStore().path == tmp_path / "env" / "x.sqlite"
    assert (tmp_path / "env" / "x.sqlite").exists()


def _writer(path: str, worker: int) -> None:
    store = ResultsStore(path)
    for i in range(25):
        cfg = RunConfig(name=f"w{worker}-{i}").override(train__seed=1000 * worker + i)
        store.start(cfg)
        store.finish(cfg, fake_result(i))


def test_concurrent_writers(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.sqlite")
    ResultsStore(path)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    store = ResultsStore(path)
    recs = store.records()
    assert len(recs) == 100 and len({r.config_hash for r in recs}) == 100
    assert {r.name for r in recs} == {f"w{w}-{i}" for w in range(4) for i in range(25)}
    con = sqlite3.connect(path)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        con.close()


def test_frame_and_export_csv(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "r.sqlite")
    a = profile_config("smoke", name="a", model__sequence="sasrec")
    b = profile_config("smoke", name="b", model__sequence="nextitnet")
    store.finish(a, fake_result(0))
    store.finish(b, fake_result(1))
    store.fail(RunConfig(name="c"), "ValueError: bad")
    frame = store.to_frame("test")
    assert list(frame["name"]) == ["a", "b", "c"]
    assert list(frame["model.sequence"]) == ["sasrec", "nextitnet", "sasrec"]
    assert frame.loc[frame["name"] == "b", "HR@10"].item() == 3.0
    assert np.isnan(frame.loc[frame["name"] == "c", "HR@10"].item())
    assert list(frame["status"]) == ["done", "done", "failed"]
    assert {"hash", "profile", "git_commit", "NDCG@10"} <= set(frame.columns)
    assert ResultsStore(tmp_path / "empty.sqlite").to_frame().empty
    assert ResultsStore(tmp_path / "r.sqlite", readonly=True).to_frame("test").shape == frame.shape

    out = store.export_csv(tmp_path / "exports" / "runs.csv")
    assert out == tmp_path / "exports" / "runs.csv"
    csv = pd.read_csv(out)
    assert len(csv) == 3 and csv.loc[1, "valid/HR@10"] == 2.0 and csv.loc[1, "test/HR@10"] == 3.0
    assert csv.loc[2, "error"] == "ValueError: bad"
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]


def test_read_only_listing_never_creates_or_writes(tmp_path: Path) -> None:
    missing = tmp_path / "typo" / "mmsr.sqlite"
    with pytest.raises(FileNotFoundError, match=f"{missing} does not exist"):
        ResultsStore(missing, readonly=True)
    assert not missing.parent.exists()
    store = ResultsStore(tmp_path / "r.sqlite")
    store.finish(profile_config("smoke", name="ro"), fake_result(0))
    (tmp_path / "r.sqlite").chmod(0o444)
    try:
        ro = ResultsStore(tmp_path / "r.sqlite", readonly=True)
        assert [r.name for r in ro.records()] == ["ro"]
        with pytest.raises(RuntimeError, match="read-only"):
            ro.start(profile_config("smoke"))
    finally:
        (tmp_path / "r.sqlite").chmod(0o644)


def test_corrupt_store_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(RuntimeError, match=f"results store {bad}.*not a valid SQLite database"):
        ResultsStore(bad)
    with pytest.raises(RuntimeError, match=f"{bad}"):
        ResultsStore(bad, readonly=True).records()


def test_per_user_ranks_round_trip(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "r.sqlite")
    cfg = profile_config("smoke", name="ranks")
    ranks = {"test": np.array([0, 5, 17, 1_000_000]), "cold_test": np.array([3])}
    store.finish(cfg, {**fake_result(0), "ranks": ranks})
    got = store.ranks(cfg.hash())
    assert set(got) == {"test", "cold_test"}
    assert got["test"].tolist() == [0, 5, 17, 1_000_000] and got["cold_test"].tolist() == [3]
    with pytest.raises(ValueError, match="0-based ranks"):
        store.finish(cfg, {**fake_result(0), "ranks": {"test": np.array([-1])}})


def test_the_fingerprint_covers_the_code_a_run_executes_and_no_other():
    """A new baseline or VLP file must not make ID runs stale; the trainer must."""
    from mmsr_lib.runs.fingerprint import ROOT, component_modules, module_closure

    idsr = profile_config("smoke").resolved()
    files = {p.relative_to(ROOT).as_posix() for p in module_closure(component_modules(idsr))}
    assert {"train.py", "evaluate.py", "runs/runner.py", "encoders/item.py",
            "sequence/sasrec.py", "data/preprocess.py", "config.py"} <= files
    assert not any(f.startswith(("baselines/fdsa", "encoders/vlp", "workbook/", "cli"))
                   for f in files)
    mm = profile_config("smoke").override("model.item_encoder=mm").resolved()
    mm_files = {p.relative_to(ROOT).as_posix() for p in module_closure(component_modules(mm))}
    assert {"encoders/text.py", "encoders/vision.py", "fusion/base.py"} <= mm_files
    assert code_fingerprint(idsr) != code_fingerprint(mm)


def test_a_fusion_runs_fingerprint_holds_its_own_family_only():
    """Each fusion family is its own module, found by the registry without an import: a change
    to the attention fusions (or a new fusion module) leaves a gate run current, and back."""
    from mmsr_lib.runs.fingerprint import ROOT, component_modules, module_closure

    def files(fusion: str) -> set[str]:
        cfg = profile_config("smoke").override("model.item_encoder=mm",
                                               f"model.fusion={fusion}").resolved()
        return {p.relative_to(ROOT).as_posix() for p in module_closure(component_modules(cfg))}

    gate, gate_dnn, co, authors = (files(f) for f in ("gate", "gate+dnn", "co_attn",
                                                     "gate_authors"))
    family = {"fusion/coarse.py", "fusion/attention.py", "fusion/authors.py"}
    assert gate & family == gate_dnn & family == {"fusion/coarse.py"}
    assert co & family == {"fusion/attention.py"}
    assert authors & family == {"fusion/authors.py"}
    assert {"fusion/__init__.py", "fusion/base.py", "fusion/api.py"} <= gate & co & authors


def test_load_only_draws_from_the_store_and_never_trains(tmp_path, monkeypatch):
    """`make figures` (MMSR_LOAD_ONLY=1): stored runs load, stale ones too, missing ones fail."""
    store = ResultsStore(tmp_path / "r.sqlite")
    cfg = profile_config("smoke", name="fig")
    calls: list[int] = []

    def runner(c: RunConfig, **_) -> dict:
        calls.append(1)
        return fake_result(0)

    run_or_load(cfg, runner=runner, store=store)
    monkeypatch.setenv("MMSR_LOAD_ONLY", "1")
    monkeypatch.setattr(runner_mod, "code_fingerprint", lambda *c: "other-code")  # stale
    assert run_or_load(cfg, runner=runner, store=store).metrics["test"]["HR@10"] == 2.0
    with pytest.raises(RuntimeError, match="not in the results store.*make notebooks"):
        run_or_load(cfg.override("train.seed=5"), runner=runner, store=store)
    assert calls == [1]


def test_load_only_never_waits_on_a_training_run(tmp_path, monkeypatch):
    """`make figures` beside a training process: a stored run is read although its re-run holds
    the lock; a run being trained and not yet stored fails at once, saying so."""
    from mmsr_lib.plan import training_now
    from mmsr_lib.runs.runner import lock_of, run_lock

    store = ResultsStore(tmp_path / "r.sqlite")
    cfg = profile_config("smoke", name="fig", train__checkpoint_dir=str(tmp_path / "runs"))
    run_or_load(cfg, runner=lambda c, **_: fake_result(0), store=store)
    other = cfg.override("train.seed=5")
    monkeypatch.setenv("MMSR_LOAD_ONLY", "1")
    with run_lock(lock_of(cfg)), run_lock(lock_of(other)):  # held as a training process would
        assert training_now(cfg) and training_now(other)
        assert run_or_load(cfg, store=store).metrics["test"]["HR@10"] == 2.0
        with pytest.raises(RuntimeError, match="training in another process.*only draws"):
            run_or_load(other, store=store)
    assert not training_now(other)


def test_the_fingerprint_ignores_comments_and_docstrings(tmp_path):
    from mmsr_lib.runs.fingerprint import _code_of

    a, b, c = (tmp_path / f"{n}.py" for n in "abc")
    a.write_text('"""Doc."""\ndef f(x):\n    """Why."""\n    return x + 1  # note\n')
    b.write_text('"""Other doc."""\n\n\ndef f(x):\n    # a comment\n    return x + 1\n')
    c.write_text('def f(x):\n    return x + 2\n')
    assert _code_of(a) == _code_of(b) != _code_of(c)


def test_the_fingerprint_leaves_the_profile_table_to_the_run_hash(tmp_path):
    """A profile's settings reach a run only through its resolved configuration, which its hash
    covers: editing them changes the hashes of the runs they affect, not every run's code."""
    from mmsr_lib.config import PROFILE_TABLE
    from mmsr_lib.runs.fingerprint import _code_of

    a, b, c = (tmp_path / f"{n}.py" for n in "abc")
    a.write_text('PROFILE_TABLE: dict = {"cpu": {"BY_KIND": {"train.epochs": 200}}}\nX = 1\n')
    b.write_text('PROFILE_TABLE: dict = {"cpu": {"BY_KIND": {"train.epochs": 400}}}\nX = 1\n')
    c.write_text('PROFILE_TABLE: dict = {"cpu": {"BY_KIND": {"train.epochs": 200}}}\nX = 2\n')
    assert _code_of(a) == _code_of(b) != _code_of(c)
    # ...because every setting of the table shows in the hash of the runs it applies to
    cpu = profile_config("cpu")
    budget = PROFILE_TABLE["cpu"]["BY_KIND"]["*"]["train.epochs"]
    assert cpu.hash() == cpu.override(f"train.epochs={budget}").hash()
    assert cpu.hash() != cpu.override(f"train.epochs={budget + 1}").hash()


def test_wall_seconds_counts_every_segment_of_a_resumed_run(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "r.sqlite")
    history = [{"epoch": e, "loss": 1.0, "train_seconds": 10.0, "eval_seconds": 2.0}
               for e in (1, 2, 3)]
    stored = []
    for name, timings, resumed in (
        ("fresh", {"total_seconds": 40.0}, None),
        # stored before timings covered earlier segments: the process resumed after epoch 2
        # (0-based 1) and timed only epoch 3; epochs 1-2 come back from the history
        ("old", {"total_seconds": 13.0}, 1),
        ("new", {"total_seconds": 37.0, "earlier_segments_seconds": 24.0}, 1),
    ):
        cfg = profile_config("smoke", name=name, train__seed=len(stored))
        store.start(cfg)
        stored.append(store.finish(cfg, {**fake_result(0), "history": history, "timings": timings,
                                         "extra": {"resumed_from": resumed}}))
    assert [r.wall_seconds() for r in stored] == [40.0, 13.0 + 24.0, 37.0]


def test_a_run_is_credited_to_the_code_it_started_with(tmp_path: Path, monkeypatch) -> None:
    """The checkout is edited (and committed) while a run trains: the stored record names the
    code and commit the run loaded, not those on disk when it finished."""
    from mmsr_lib.runs.fingerprint import _code_of

    disk = {"code": "loaded", "commit": "a" * 40}
    monkeypatch.setattr(runner_mod, "code_fingerprint", lambda cfg: disk["code"])
    monkeypatch.setattr(runner_mod, "git_commit", lambda: disk["commit"])

    def runner(cfg: RunConfig, **_) -> dict:
        disk.update(code="edited", commit="b" * 40)  # an edit lands mid-run
        return fake_result(0)

    store = ResultsStore(tmp_path / "r.sqlite")
    rec = run_or_load(profile_config("smoke", name="edit"), runner=runner, store=store)
    assert (rec.code_fingerprint, rec.git_commit) == ("loaded", "a" * 40)
    # and a module's source is read once per process: an edit after that is not its code
    module = tmp_path / "m.py"
    module.write_text("def f(x):\n    return x + 1\n")
    before = _code_of(module)
    module.write_text("def f(x):\n    return x + 2\n")
    assert _code_of(module) == before


def test_archive_of_one_profile_leaves_the_others_out(tmp_path, capsys):
    """`mmsr results archive DIR --profile cpu` writes the cpu runs only: the smoke runs tests
    leave in the same store do not end up in docs/runs."""
    from mmsr_lib.cli import main

    store = ResultsStore(tmp_path / "s.sqlite")
    runs = {p: profile_config(p, name=f"r-{p}") for p in ("smoke", "cpu")}
    for s, cfg in enumerate(runs.values()):
        store.finish(cfg, {**fake_result(s), "ranks": {"test": np.arange(3)}})
    args = ["results", "archive", str(tmp_path / "arc"), "--results", str(tmp_path / "s.sqlite")]
    assert main([*args, "--profile", "cpu"]) == 0
    assert [p.name for p in (tmp_path / "arc").iterdir()] == [f"{runs['cpu'].hash()}.json.gz"]
    assert "written 1, unchanged 0" in capsys.readouterr().out
    assert main(args) == 0  # no filter: every profile
    assert len(list((tmp_path / "arc").iterdir())) == 2


def test_archive_round_trip_is_deterministic_and_never_replaces_a_finished_run(tmp_path, capsys):
    """`mmsr results archive` / `import`: every column and the per-user ranks come back equal, an
    unchanged run is an unchanged file, a finished run is never overwritten, bad files are named."""
    from mmsr_lib.cli import main
    from mmsr_lib.runs.archive import import_archive, write_archive

    src = ResultsStore(tmp_path / "a.sqlite")
    cfgs = [profile_config("smoke", name=f"r{s}", train__seed=s) for s in (1, 2)]
    ranks = {"test": np.array([0, 5, 2**31 - 1, 17]), "valid": np.arange(4)}
    for s, cfg in enumerate(cfgs):
        src.finish(cfg, {**fake_result(s), "ranks": ranks}, code_fingerprint="fp")
    src.fail(profile_config("smoke", name="broken", train__seed=9), "boom")  # not archived
    folder = tmp_path / "arc"
    first = write_archive(src, folder)
    assert sorted(first.written) == sorted(f"{c.hash()}.json.gz" for c in cfgs)
    data = {p.name: p.read_bytes() for p in folder.iterdir()}
    again = write_archive(src, folder)
    assert (again.written, sorted(again.unchanged)) == ([], sorted(data))
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == data  # byte for byte

    dst = ResultsStore(tmp_path / "b.sqlite")
    kept = dst.finish(cfgs[0], fake_result(7))  # already finished here: must stay as it is
    (folder / "0000000000000000.json.gz").write_bytes(b"not gzip")
    report = import_archive(dst, folder)
    assert report.written == [f"{cfgs[1].hash()}.json.gz"]
    assert report.unchanged == [f"{cfgs[0].hash()}.json.gz"]
    assert report.skipped[0][0] == "0000000000000000.json.gz"
    assert "not a gzipped JSON file" in report.skipped[0][1]
    assert dst.get(cfgs[0].hash()) == kept
    assert dst.get(cfgs[1].hash()) == src.get(cfgs[1].hash())  # every column, provenance too
    got = dst.ranks(cfgs[1].hash())
    assert set(got) == {"test", "valid"} and np.array_equal(got["test"], ranks["test"])
    # the command line: a skipped file makes the import exit 1 and names it
    assert main(["results", "import", str(folder), "--results", str(tmp_path / "c.sqlite")]) == 1
    out = capsys.readouterr().out
    assert "imported 2, unchanged 0, skipped 1" in out and "0000000000000000.json.gz" in out
    assert len(ResultsStore(tmp_path / "c.sqlite").records()) == 2
    with pytest.raises(FileNotFoundError, match="no results archive"):
        import_archive(dst, tmp_path / "nowhere")
