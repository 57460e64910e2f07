"""`mmsr results replay`: a stored run's first epochs trained again here are compared with its
stored history to the last bit, so a user knows before re-training whether this machine
re-computes the run."""

from __future__ import annotations

import json
import sqlite3

import pytest
import torch

from mmsr_lib.cli import main
from mmsr_lib.config import profile_config
from mmsr_lib.runs.replay import replay, report_lines
from mmsr_lib.runs.runner import run_or_load
from mmsr_lib.runs.store import ResultsStore

CFG = profile_config("smoke").override("train.epochs=3", "train.patience=5", "name=replay")


@pytest.fixture
def stored(tmp_path):
    """A store holding one finished smoke run of three epochs."""
    store = ResultsStore(tmp_path / "r.sqlite")
    run_or_load(CFG, store=store, progress=False)
    rec = store.get(CFG.hash())
    assert rec is not None and len(rec.history) == 3
    return store


def test_a_run_trained_here_replays_equal_and_nothing_is_written(stored, tmp_path):
    rows = sqlite3.connect(stored.path).execute("SELECT updated FROM runs").fetchall()
    torch.set_num_threads(1)
    r = replay(stored, CFG.hash(), epochs=2)
    assert r.equal and r.difference == "" and r.same_code
    assert [e["epoch"] for e in r.here] == [1, 2] and r.here == r.stored
    assert r.here[0]["loss"] == stored.get(CFG.hash()).history[0]["loss"]  # bit for bit
    assert "valid" in r.here[0]  # the validation metrics are compared too
    assert r.threads == 1 and torch.get_num_threads() == 1
    assert sqlite3.connect(stored.path).execute("SELECT updated FROM runs").fetchall() == rows
    lines = report_lines(r)
    assert lines[0].startswith(f"run {CFG.hash()} (replay), first 2 epoch(s)")
    assert "(equal)" in lines[3] and lines[-1].startswith("equal to the last bit")


def test_a_history_this_machine_does_not_compute_is_named_at_its_first_difference(stored):
    """The stored loss of epoch 2 moved in its last bits, as another CPU's kernels would move
    it: epoch 1 still agrees, the report names epoch 2's loss and says what it means."""
    rec = stored.get(CFG.hash())
    history = rec.history
    history[1]["loss"] = history[1]["loss"] * (1 + 1e-15)
    with sqlite3.connect(stored.path) as con:
        con.execute("UPDATE runs SET history = ? WHERE config_hash = ?",
                    (json.dumps(history), rec.config_hash))
    one = replay(stored, CFG.hash()[:8], epochs=1)  # a unique prefix names the run
    assert one.equal
    two = replay(stored, CFG.hash(), epochs=2)
    assert not two.equal and two.difference.startswith("epoch 2 loss: ")
    lines = report_lines(two)
    assert "(differs)" in lines[4] and lines[5].startswith("differs: first at epoch 2 loss")
    assert "machine's kernels are the cause" in lines[6]


def test_replay_refuses_what_it_cannot_compare(stored):
    with pytest.raises(ValueError, match="no finished run 'ffff"):
        replay(stored, "ffff")
    with pytest.raises(ValueError, match="stored 3 epoch"):
        replay(stored, CFG.hash(), epochs=4)
    with pytest.raises(ValueError, match="at least 1"):
        replay(stored, CFG.hash(), epochs=0)


def test_the_command_exits_0_when_equal(stored, capsys):
    assert main(["results", "replay", CFG.hash(), "--results", str(stored.path)]) == 0
    out = capsys.readouterr().out
    assert "epoch 1: loss " in out and "equal to the last bit" in out


def test_a_run_trained_on_a_gpu_or_several_processes_is_named_as_the_cause(stored):
    rec = stored.get(CFG.hash())
    history = rec.history
    history[0]["loss"] += 1e-9
    extra = {**rec.extra, "device": "cuda:0", "world_size": 2}
    with sqlite3.connect(stored.path) as con:
        con.execute("UPDATE runs SET history = ?, extra = ? WHERE config_hash = ?",
                    (json.dumps(history), json.dumps(extra), rec.config_hash))
    r = replay(stored, CFG.hash())
    assert not r.equal and r.trained_otherwise == "on cuda:0 and on 2 processes (torchrun)"
    assert "trained on cuda:0 and on 2 processes (torchrun), replayed in one CPU process" in (
        report_lines(r)[-1])


def test_a_model_without_training_has_nothing_to_replay(tmp_path):
    store = ResultsStore(tmp_path / "r.sqlite")
    pop = profile_config("smoke").override("model.recommender=mostpop", "name=pop")
    run_or_load(pop, store=store, progress=False)
    with pytest.raises(ValueError, match="no training history"):
        replay(store, pop.hash())


def test_a_run_without_a_recorded_machine_names_threads_and_machine_as_causes(stored):
    rec = stored.get(CFG.hash())
    history = rec.history
    history[0]["loss"] += 1e-9
    extra = {k: v for k, v in rec.extra.items() if k != "machine"}
    with sqlite3.connect(stored.path) as con:
        con.execute("UPDATE runs SET history = ?, extra = ? WHERE config_hash = ?",
                    (json.dumps(history), json.dumps(extra), rec.config_hash))
    lines = report_lines(replay(stored, CFG.hash()))
    assert lines[1] == "  stored on: not recorded (stored before runs named their machine)"
    assert "machine and thread count were not recorded (replayed with 1 thread(s))" in lines[-1]
