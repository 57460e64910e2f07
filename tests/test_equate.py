"""`mmsr results equate`: stored runs survive a change of code only when it is shown, by training
under both codes, not to alter their results."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from mmsr_lib.config import profile_config
from mmsr_lib.runs import fingerprint
from mmsr_lib.runs.equate import equate, first_difference, report_lines
from mmsr_lib.runs.fingerprint import ROOT, same_code
from mmsr_lib.runs.runner import stale_reason
from mmsr_lib.runs.store import ResultsStore

CFG = profile_config("smoke").override("train.epochs=1", "name=equate")


def test_same_code_follows_recorded_pairs_forward_only(tmp_path):
    path = tmp_path / "eq.json"
    assert same_code("a", "a", path) and not same_code("a", "b", path)  # no file: identity only
    assert not same_code(None, "a", path)
    path.write_text(json.dumps({"equivalences": [{"from": "a", "to": "b"},
                                                 {"from": "b", "to": "c"}]}))
    assert same_code("a", "b", path) and same_code("a", "c", path) and same_code("b", "c", path)
    assert not same_code("c", "a", path) and not same_code("b", "a", path)
    assert not same_code("x", "c", path)


def test_first_difference_names_the_first_field_that_differs():
    a = {"history": [{"loss": 1.0}, {"loss": 0.5}], "metrics": {"test": {"HR@10": 0.3}}}
    assert first_difference(a, json.loads(json.dumps(a))) == ""
    b = {"history": [{"loss": 1.0}, {"loss": 0.25}], "metrics": {"test": {"HR@10": 0.3}}}
    assert first_difference(a, b) == "history.1.loss: 0.5 vs 0.25"
    assert first_difference({"r": [1, 2]}, {"r": [1]}) == "r: 2 vs 1 entries"


def _old_code(tmp_path: Path, edit: Callable[[Path], None]) -> Path:
    """A git repository whose one commit holds this checkout's mmsr_lib with `edit` applied."""
    repo = tmp_path / "old"
    shutil.copytree(ROOT, repo / "mmsr_lib", ignore=shutil.ignore_patterns("__pycache__"))
    edit(repo / "mmsr_lib")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t",
           "-c", "commit.gpgsign=false"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "old code"]):
        subprocess.run([*git, *args], check=True, capture_output=True)
    return repo


def _store_a_run_with(repo: Path, db: Path) -> None:
    """Train `CFG` with the code in `repo` (its own process) into the store `db`."""
    code = ("import json, sys\nfrom mmsr_lib.config import RunConfig\n"
            "from mmsr_lib.runs.runner import run_or_load\n"
            "from mmsr_lib.runs.store import ResultsStore\n"
            "assert 'old' in __import__('mmsr_lib').__file__\n"
            "run_or_load(RunConfig.from_dict(json.loads(sys.argv[1])),\n"
            "            store=ResultsStore(sys.argv[2]), progress=False)\n")
    subprocess.run([sys.executable, "-c", code, CFG.to_json(), str(db)], cwd=repo, check=True,
                   capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def _append(rel: str, text: str) -> Callable[[Path], None]:
    return lambda lib: (lib / rel).write_text((lib / rel).read_text() + text)


def _replace(rel: str, old: str, new: str) -> Callable[[Path], None]:
    def edit(lib: Path) -> None:
        src = (lib / rel).read_text()
        assert old in src
        (lib / rel).write_text(src.replace(old, new))
    return edit


@pytest.mark.parametrize("edit, equal", [
    (_append("runs/parallel.py", "\n_UNUSED = None\n"), True),  # code changed, results cannot
    (_replace("train.py", "t.seed * 100_003 + epoch", "t.seed * 100_003 + epoch + 1"), False),
], ids=["neutral-change", "result-changing-change"])
def test_equate_records_a_pair_only_when_both_codes_compute_the_same(tmp_path, monkeypatch, edit,
                                                                     equal):
    repo, db, pairs = _old_code(tmp_path, edit), tmp_path / "r.sqlite", tmp_path / "eq.json"
    monkeypatch.setattr(fingerprint, "EQUIVALENT_CODE", pairs)  # what stale_reason reads
    _store_a_run_with(repo, db)
    store = ResultsStore(db)
    rec = store.get(CFG.hash())
    assert rec is not None and "other code" in stale_reason(rec, None)

    report = equate(store, "HEAD", repo=repo)

    assert report.current == 0 and report.other_code == 0 and len(report.checks) == 1
    check = report.checks[0]
    assert (check.old, check.config_hash, check.runs) == (rec.code_fingerprint, CFG.hash(), 1)
    assert check.kind == "sequential/id/sasrec/-/bce/all/synthetic"
    assert check.equal is equal and report.pairs() == {(check.old, check.new): equal}
    assert check.computed.startswith("1 epoch(s) (loss ") and "users' ranks" in check.computed
    if equal:
        entry = json.loads(pairs.read_text())["equivalences"][0]
        assert (entry["from"], entry["to"]) == (check.old, check.new)
        assert stale_reason(store.get(CFG.hash()), None) is None
        assert report_lines(report)[1].endswith("1 kind(s) checked: equal: recorded")
        again = equate(store, "HEAD", repo=repo)  # nothing left to check
        assert again.current == 1 and again.checks == []
    else:
        assert check.difference.startswith("history.0.loss")  # the shuffling changed
        assert not pairs.exists()
        assert "other code" in stale_reason(store.get(CFG.hash()), None)
        assert "DIFFERENT" in report_lines(report)[1]
        assert "differs at history.0.loss" in report_lines(report)[2]


def test_equate_leaves_runs_of_other_code_stale(tmp_path, monkeypatch):
    """A run stored by code that is neither `since`'s nor the current one is not a candidate."""
    repo, db, pairs = tmp_path / "old", tmp_path / "r.sqlite", tmp_path / "eq.json"
    monkeypatch.setattr(fingerprint, "EQUIVALENT_CODE", pairs)
    _store_a_run_with(_old_code(tmp_path, _append("runs/parallel.py", "\n_A = 1\n")), db)
    shutil.rmtree(repo)
    _old_code(tmp_path, _append("runs/parallel.py", "\n_B = 2\n"))  # `since` is other code
    report = equate(ResultsStore(db), "HEAD", repo=repo)
    assert report.other_code == 1 and report.checks == [] and not pairs.exists()


def test_equate_follows_pairs_recorded_before(tmp_path, monkeypatch):
    """A run kept by an earlier equate still carries its first code's fingerprint; it is a
    candidate again when that code was verified equal to `since`'s, and after the check the
    chain reaches the current code."""
    from mmsr_lib.runs.equate import _probe

    repo, db, pairs = tmp_path / "old", tmp_path / "r.sqlite", tmp_path / "eq.json"
    monkeypatch.setattr(fingerprint, "EQUIVALENT_CODE", pairs)
    _store_a_run_with(_old_code(tmp_path, _append("runs/parallel.py", "\n_A = 1\n")), db)
    shutil.rmtree(repo)
    _old_code(tmp_path, _append("runs/parallel.py", "\n_B = 2\n"))  # `since`: other code
    store = ResultsStore(db)
    rec = store.get(CFG.hash())
    first, since = rec.code_fingerprint, _probe(repo, ["fingerprints"], [rec.config])[0]
    assert since != first
    pairs.write_text(json.dumps({"equivalences": [{"from": first, "to": since}]}))

    report = equate(store, "HEAD", repo=repo)

    assert report.other_code == 0 and [c.equal for c in report.checks] == [True]
    assert report.checks[0].old == since
    assert stale_reason(store.get(CFG.hash()), None) is None  # first -> since -> current


def test_equate_names_a_revision_git_cannot_read(tmp_path):
    with pytest.raises(RuntimeError, match="git cannot read revision 'nope'"):
        from mmsr_lib.runs.equate import code_tree
        code_tree(ROOT.parent, "nope", tmp_path / "x")


def test_a_kind_whose_data_set_is_missing_is_reported_not_checked(tmp_path, monkeypatch):
    """A fresh clone lacks the data sets that notebooks write (a subsample, a transfer
    catalog): equate names the kind and what to do, records nothing for its pair, and does not
    stop; the pair's other kind is still checked."""
    from mmsr_lib.runs.equate import _probe

    repo, db, pairs = tmp_path / "old", tmp_path / "r.sqlite", tmp_path / "eq.json"
    monkeypatch.setattr(fingerprint, "EQUIVALENT_CODE", pairs)
    _store_a_run_with(_old_code(tmp_path, _append("runs/parallel.py", "\n_UNUSED = None\n")), db)
    gone = CFG.override("data.source=path", f"data.path={tmp_path / 'subsample-gone'}",
                        "name=equate-gone")
    old = _probe(repo, ["fingerprints"], [gone.to_dict()])[0]
    store = ResultsStore(db)
    assert old == store.get(CFG.hash()).code_fingerprint  # one pair, two kinds
    store.finish(gone, {"metrics": {"test": {"HR@10": 1.0}}, "history": [],
                        "timings": {"total_seconds": 1.0}, "dataset_fingerprint": "x",
                        "extra": {}}, code_fingerprint=old)

    report = equate(store, "HEAD", repo=repo)

    by_kind = {c.kind.rsplit("/", 1)[1]: c for c in report.checks}
    assert set(by_kind) == {"synthetic", "path"}
    assert by_kind["synthetic"].equal and by_kind["synthetic"].computed.startswith("1 epoch")
    missing = by_kind["path"]
    assert not missing.equal and not missing.difference and "subsample-gone" in missing.unchecked
    assert report.pairs() == {(missing.old, missing.new): False} and not pairs.exists()
    lines = report_lines(report)
    assert "NOT CHECKED" in lines[1] and "mmsr grid" in "\n".join(lines)
