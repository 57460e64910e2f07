"""Bad input and faults: a named error or a counted skip, nothing lost, nothing executed.

The catalogue of kinds (input -> outcome -> test) is docs/reliability.md; the data-set and
import kinds are tested in test_data_format.py, test_importer_hardening.py and test_adapters.py.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from mmsr_lib.cli import main
from mmsr_lib.config import ConfigError, profile_config
from mmsr_lib.runs.runner import build_model, load_data, run_or_load
from mmsr_lib.runs.store import ResultsStore
from mmsr_lib.train import CheckpointError, fit

SMALL = ("model.dim=16", "train.epochs=2", "data.synth.n_users=60", "data.synth.n_items=40")


# -- settings ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("override", "message"), [
    ("train.epochs=0", r"train.epochs=0 is out of range; allowed \[1, inf\]"),
    ("train.epochs=-1", r"train.epochs=-1 is out of range"),
    ("train.epochs=2.7", r"train.epochs='2.7': expected an integer, not a fraction"),
    ("train.epochs=abc", r"train.epochs='abc': expected an integer"),
    ("train.lr=-0.01", r"train.lr=-0.01 is out of range; allowed \(0.0, inf\]"),
    ("train.lr=nan", r"train.lr=nan must be a finite number"),
    ("train.lr=inf", r"train.lr=inf must be a finite number"),
    ("train.batch_size=0", r"train.batch_size=0 is out of range"),
    ("train.eval_every=0", r"train.eval_every=0 is out of range"),
    ("train.patience=0", r"train.patience=0 is out of range"),
    ("train.decay_to=0", r"train.decay_to=0.0 is out of range"),
    ("train.schedule=cosine", r"train.schedule='cosine'; choose one of \['linear', 'plateau'\]"),
    ("train.schedule=plateau train.plateau=0", r"train.plateau=0 is out of range"),
    ("train.schedule=plateau train.plateau=3", r"train.plateau=3 must not exceed train.patience=2"),
    ("train.device=gpu", r"train.device='gpu'; choose auto, cpu, cuda or cuda:N"),
    ("train.amp=maybe", r"train.amp='maybe': expected a boolean"),
    ("model.dim=0", r"model.dim=0 is out of range"),
    ("model.n_layers=abc", r"model.n_layers='abc': expected an integer"),
    ("model.dropout=1.0", r"model.dropout=1.0 is out of range"),
    ("model.sequence=sasrek", r"model.sequence='sasrek'.*Did you mean 'sasrec'"),
    ("model.item_encoder=audio", r"model.item_encoder='audio'.*choose one of"),
    ("data.source=hm", r"data.source='hm'.*choose one of"),
    ("data.max_len=0", r"data.max_len=0 is out of range"),
    ("data.min_user_interactions=2", r"leave-one-out needs"),
    ("data.cold_mode=all", r"data.cold_mode='all'; choose one of"),
    ("eval.ks=0,10", r"eval.ks=\(0, 10\) must be positive"),
    ("train=5", r"'train' is a section, not a value"),
    ("train.nope=1", r"unknown config field 'train.nope'"),
    ("nope.lr=1", r"unknown config section 'nope'"),
    ("epochs", r"not of the form section.key=value"),
])
def test_every_setting_is_validated_before_anything_runs(override, message):
    with pytest.raises(ConfigError, match=message):
        profile_config("smoke").override(*override.split(" ")).resolved()  # space: several


def test_validation_happens_before_training(tmp_path):
    """`epochs=0` used to be stored as a 'done' run with untrained metrics."""
    store = ResultsStore(tmp_path / "r.sqlite")
    with pytest.raises(ConfigError, match="train.epochs=0"):
        run_or_load(profile_config("smoke").override("train.epochs=0"), store=store)
    assert store.records(status=None) == []


# -- checkpoints ---------------------------------------------------------------------------------
class _Payload:
    """What a crafted checkpoint carries: unpickling it would create `target`."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def _run_dir(cfg) -> Path:
    from mmsr_lib.runs.runner import run_dir_of

    return run_dir_of(cfg)


def test_a_crafted_checkpoint_is_refused_and_runs_nothing(tmp_path):
    cfg = profile_config("smoke").override(*SMALL)
    data = load_data(cfg.resolved().data)
    run_dir = _run_dir(cfg)
    run_dir.mkdir(parents=True)
    target = tmp_path / "pwned"
    with open(run_dir / "checkpoint.pt", "wb") as fh:
        pickle.dump({"config_hash": cfg.hash(), "x": _Payload(target)}, fh)
    with pytest.raises(CheckpointError, match="never unpickled"):
        fit(build_model(cfg, data), data, cfg, run_dir=run_dir, progress=False)
    assert not target.exists()
    # the command line says the same in one line, exit code 2
    assert main(["train", "--profile", "smoke", *sum((["--set", s] for s in SMALL), [])]) == 2
    assert not target.exists()


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated zip", b"\x80\x04garbage"])
def test_corrupt_or_truncated_checkpoints_are_named(tmp_path, capsys, content):
    cfg = profile_config("smoke").override(*SMALL)
    run_dir = _run_dir(cfg)
    run_dir.mkdir(parents=True)
    (run_dir / "checkpoint.pt").write_bytes(content)
    args = ["train", "--profile", "smoke", *sum((["--set", s] for s in SMALL), [])]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "checkpoint.pt" in err and "--force" in err and err.count("\n") == 1
    # --force trains in a fresh folder and leaves the broken file alone until it succeeds
    assert main([*args, "--force"]) == 0
    assert (run_dir / "checkpoint.pt").stat().st_size > 1000


def test_a_checkpoint_of_another_run_is_refused(tmp_path):
    cfg = profile_config("smoke").override(*SMALL)
    data = load_data(cfg.resolved().data)
    fit(build_model(cfg, data), data, cfg, run_dir=tmp_path / "r", progress=False)
    other = cfg.override("train.lr=0.5")
    with pytest.raises(CheckpointError, match="another configuration"):
        fit(build_model(other, data), data, other, run_dir=tmp_path / "r", progress=False)


# -- the command line ----------------------------------------------------------------------------
def test_nan_loss_is_one_line_and_claims_no_checkpoint(capsys, monkeypatch):
    from mmsr_lib import recommender

    monkeypatch.setattr(recommender, "bce_loss", lambda *a, **k: torch.tensor(float("nan"),
                                                                                 requires_grad=True))
    assert main(["train", "--profile", "smoke", *sum((["--set", s] for s in SMALL), [])]) == 2
    err = capsys.readouterr().err
    assert "loss is nan at epoch 1" in err and "No epoch had finished" in err
    assert "intact" not in err and err.count("\n") == 1


def test_results_store_errors_are_one_line(tmp_path, capsys):
    missing = tmp_path / "typo.sqlite"
    assert main(["results", "list", "--results", str(missing)]) == 2
    assert f"{missing} does not exist" in capsys.readouterr().err
    assert not missing.exists()
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"garbage" * 200)
    assert main(["results", "list", "--results", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "not a valid SQLite database" in err and err.count("\n") == 1
    assert main(["train", "--profile", "smoke", "--results", str(bad), "--set",
                 "train.epochs=1"]) == 2
    assert str(bad) in capsys.readouterr().err


def test_listing_a_read_only_store_works_and_marks_stale_rows(tmp_path, capsys, monkeypatch):
    from mmsr_lib.runs import fingerprint

    path = tmp_path / "r.sqlite"
    args = ["--results", str(path)]
    assert main(["train", "--profile", "smoke", *args, *sum((["--set", s] for s in SMALL),
                                                            [])]) == 0
    capsys.readouterr()
    path.chmod(0o444)
    try:
        assert main(["results", "list", *args]) == 0
        out = capsys.readouterr().out
        assert "sasrec" in out and "stale" not in out
        assert max(len(line) for line in out.splitlines()) <= 120
        monkeypatch.setattr(fingerprint, "code_fingerprint", lambda *cfg: "changed")
        assert main(["results", "list", *args]) == 0
        assert "stale" in capsys.readouterr().out
    finally:
        path.chmod(0o644)


def test_progress_bar_ends_complete_when_stopping_early(capsys):
    cfg = profile_config("smoke").override(*SMALL, "train.epochs=30", "train.patience=1",
                                           "train.lr=1e-6")
    data = load_data(cfg.resolved().data)
    res = fit(build_model(cfg, data), data, cfg, progress=True)
    assert res.stopped_early and res.epochs_run < 30
    last = capsys.readouterr().out.strip().split("\r")[-1]
    assert "100%" in last and f"{res.epochs_run}/{res.epochs_run}" in last


def test_misspelled_notebook_is_an_error(capsys):
    from mmsr_lib.workbook import notebooks

    assert notebooks.main(["run", "no_such_notebook"]) == 2
    assert "00_quickstart" in capsys.readouterr().err


def test_same_seed_same_numbers_in_two_processes(tmp_path):
    """NextItNet's quickstart HR@10 varied between clean runs (threaded scatter-adds)."""
    import json
    import os
    import subprocess
    import sys

    code = (
        "import json, sys, torch\n"
        "from mmsr_lib.config import profile_config\n"
        "from mmsr_lib.runs.runner import run_experiment\n"
        "torch.set_num_threads(2)\n"
        f"cfg = profile_config('smoke').override('model.sequence=nextitnet', *{SMALL!r},\n"
        "    'train.checkpoint_dir=' + sys.argv[1])\n"
        "r = run_experiment(cfg, progress=False)\n"
        "print(json.dumps([[h['loss'] for h in r['history']], r['metrics']['test']]))\n"
    )
    outs = []
    for i in range(2):
        env = {**os.environ, "OMP_NUM_THREADS": "2"}
        proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / f"ck{i}")],
                              capture_output=True, text=True, env=env, timeout=600, check=True)
        outs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert outs[0] == outs[1]


def test_a_stored_run_names_the_machine_that_computed_it(tmp_path):
    """Two runs of one hash may differ across machines (CPU kernels by instruction set, sums by
    thread count); the stored record says which machine, so a reader can tell."""
    cfg = profile_config("smoke").override(*SMALL, f"train.checkpoint_dir={tmp_path / 'ck'}")
    run_or_load(cfg, store=ResultsStore(tmp_path / "r.sqlite"), progress=False)
    rec = ResultsStore(tmp_path / "r.sqlite").get(cfg.hash())
    m = rec.extra["machine"]
    assert m["torch"] == torch.__version__
    assert m["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert m["torch_threads"] == torch.get_num_threads() >= 1
    assert m["cpu"] and m["cores"] >= 1 and m["python"].count(".") == 2


def _started(cfg) -> bool:
    """A worker holds the run's lock and has recorded it as running (it takes the lock first,
    so the lock alone may come a moment before the store's row)."""
    from mmsr_lib.plan import training_now

    rec = ResultsStore().get(cfg.hash())
    return training_now(cfg) and rec is not None and rec.status == "running"


def _grid_training_two_endless_runs(stderr: int):
    """`mmsr grid 00 --train` with two worker processes and epochs without end, once both
    workers are training a run: (the process, the sequence models' configurations).
    Most-popular is left out: it finishes at once, never "endless"."""
    import os
    import subprocess
    import sys
    import time

    from mmsr_lib.plan import notebook_runs

    endless = ("--set", "train.epochs=100000", "--set", "train.patience=100000")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mmsr_lib.cli", "grid", "00", "--train", "--profile", "smoke",
         *endless], env={**os.environ, "MMSR_WORKERS": "2"}, stdout=subprocess.DEVNULL,
        stderr=stderr, text=True)
    configs = [r.config for r in notebook_runs("00", "smoke", *endless[1::2])
               if r.label != "MostPop"]
    deadline = time.monotonic() + 300
    try:
        while sum(map(_started, configs)) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, \
                (proc.stderr.read() if proc.stderr and proc.poll() is not None  # ended
                 else "the grid did not start two runs in time")
            time.sleep(0.5)
    except BaseException:
        proc.kill()
        raise
    return proc, configs


def test_sigterm_to_a_training_grid_stops_its_workers_and_their_runs_resume():
    """`kill PID` of `mmsr grid --train` (SIGTERM) used to end only that process: its spawned
    workers kept training as orphans holding their runs' locks, so a restarted grid waited on
    them. Now the pool stops them, the command exits 143 with one line, and the runs they held
    are listed as stopped (they resume from their checkpoints)."""
    import signal
    import subprocess

    from mmsr_lib.plan import run_state

    proc, configs = _grid_training_two_endless_runs(subprocess.PIPE)
    try:
        proc.send_signal(signal.SIGTERM)
        err = proc.communicate(timeout=120)[1]
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM
    assert "mmsr: terminated (a resumable run continues" in err
    states = [run_state(cfg, ResultsStore()) for cfg in configs]
    assert "training" not in states and states.count("stopped") == 2, states


def test_workers_end_when_their_parent_dies_without_a_word():
    """SIGKILL leaves the pool no chance to stop its workers (and papermill ends a notebook's
    kernel so): each worker watches its parent and ends itself, releasing its run's lock, so the
    runs are stopped (they resume) instead of training on as orphans."""
    import subprocess
    import time

    from mmsr_lib.plan import run_state, training_now

    proc, configs = _grid_training_two_endless_runs(subprocess.DEVNULL)
    try:
        proc.kill()
        proc.wait(timeout=60)
        deadline = time.monotonic() + 60
        while any(map(training_now, configs)):  # the orphans notice within a second or so
            assert time.monotonic() < deadline, "worker processes outlived their parent"
            time.sleep(0.5)
    finally:
        proc.kill()
    states = [run_state(cfg, ResultsStore()) for cfg in configs]
    assert states.count("stopped") == 2, states
