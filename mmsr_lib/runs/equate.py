"""Keep the stored results through a change of code that cannot alter them, after checking it.

Every stored run carries the fingerprint of the code it executed (`runs.fingerprint`), and a run
whose code changed is stale: trained again. That is right for a change of the trainer's maths
and wasteful for one that cannot alter a number (how worker processes stop, a refactor, a
message): on the 2-core machine the store holds days of training. `equate` checks such a change
instead of trusting it:

1. the code at `since` (a git revision) is unpacked from git into a temporary folder;
2. every stored run that is stale now is looked up under that code: only runs whose stored
   fingerprint equals what `since`'s code gives for their configuration are candidates (a run
   stored by any other code is left alone, stale);
3. for each pair (fingerprint at `since`, fingerprint now) and each kind of run in it (one
   fingerprint covers several code paths: the combinations of `KIND_FIELDS`, e.g. ID SASRec
   with softmax CE on MovieLens), the kind's cheapest run is trained for `epochs` epoch(s) under
   `since`'s code and under the current code, in two fresh processes with one thread each, from
   the same stored configuration (the cheapest whose data set is on this machine; a kind with
   none is reported "not checked", with what to do, and its pair is not recorded);
4. only when the losses of every epoch, the validation and test metrics and the per-user ranks
   are equal to the last bit for every kind is the pair written to
   ``runs/equivalent_code.json``, with the runs it was checked on; `fingerprint.same_code` then
   reads the stored runs of the old fingerprint as current.

A change that alters results fails step 4 and its runs stay stale. Short runs are the evidence:
a change whose effect shows only after many epochs or in a path no stored kind takes would pass,
so equate changes that are meant to alter nothing, not ones that might. The file is committed
with the change it vouches for, so a clean clone keeps the same reading of every store.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from mmsr_lib.data.format import is_dataset_dir
from mmsr_lib.runs import fingerprint
from mmsr_lib.runs.fingerprint import ROOT, code_fingerprint, same_code
from mmsr_lib.runs.store import ResultsStore, RunRecord
from mmsr_lib.util.atomic import atomic_write_text
from mmsr_lib.util.paths import home, resolve

# run in a subprocess whose first path entry is one code tree: prints the fingerprints of the
# configurations on stdin, or trains the first one for EPOCHS epochs and prints what it computed
PROBE = r'''
import json, sys
import torch
from mmsr_lib.config import RunConfig
from mmsr_lib.runs.fingerprint import code_fingerprint

mode, configs = sys.argv[1], json.loads(sys.stdin.read())
if mode == "fingerprints":
    print(json.dumps([code_fingerprint(RunConfig.from_dict(c)) for c in configs]))
else:
    from mmsr_lib.runs.runner import run_experiment
    torch.set_num_threads(1)
    cfg = RunConfig.from_dict(configs[0]).override(
        f"train.epochs={int(sys.argv[2])}", f"train.checkpoint_dir={sys.argv[3]}")
    r = run_experiment(cfg, progress=False)
    history = [{k: v for k, v in h.items() if not k.endswith("_seconds")} for h in r["history"]]
    ranks = {k: [int(x) for x in v] for k, v in (r["ranks"] or {}).items()}
    print(json.dumps({"history": history, "metrics": r["metrics"], "ranks": ranks,
                      "dataset_fingerprint": r["dataset_fingerprint"]}))
'''


# the settings that pick different code paths within one fingerprint: each combination of them
# among a pair's runs is checked on its cheapest run
KIND_FIELDS = (("model", "recommender"), ("model", "item_encoder"), ("model", "sequence"),
               ("model", "fusion"), ("train", "loss"), ("data", "train_windows"),
               ("data", "source"))


@dataclass(frozen=True)
class Check:
    """One run trained under both codes: what it computed, and the first difference."""

    old: str  # the fingerprint of `since`'s code (the stored runs')
    new: str  # the current code's
    kind: str  # the settings of `KIND_FIELDS`, e.g. "sequential/id/sasrec/-/ce/all/synthetic"
    runs: int  # stored runs of this pair and kind
    config_hash: str  # the run it was checked on (the kind's cheapest)
    name: str
    computed: str  # what was compared, e.g. "1 epoch (loss 6.41), test NDCG@10 1.23, 943 users"
    difference: str  # the first thing that differed; "" when everything was equal
    # why no run of the kind could be trained here (its data set is missing); "" when checked
    unchecked: str = ""

    @property
    def equal(self) -> bool:
        return not self.difference and not self.unchecked


@dataclass(frozen=True)
class Report:
    since: str  # the full commit
    checks: list[Check]
    other_code: int  # stale runs computed by code other than `since`'s: left stale
    current: int  # runs already current

    def by_pair(self) -> dict[tuple[str, str], list[Check]]:
        """(old, new) -> the checks of its kinds, in the order they ran."""
        out: dict[tuple[str, str], list[Check]] = {}
        for c in self.checks:
            out.setdefault((c.old, c.new), []).append(c)
        return out

    def pairs(self) -> dict[tuple[str, str], bool]:
        """(old, new) -> whether every kind of its runs computed the same under both codes."""
        return {pair: all(c.equal for c in checks) for pair, checks in self.by_pair().items()}


def run_kind(config: dict) -> str:
    """The code path a stored configuration takes, as `KIND_FIELDS` names it."""
    return "/".join(str(config.get(sec, {}).get(key) or "-") for sec, key in KIND_FIELDS)


def code_tree(repo: Path, rev: str, dest: Path) -> str:
    """Unpack `rev`'s ``mmsr_lib`` from the git repository `repo` into `dest`; returns the
    commit's full hash. Nothing in the checkout changes."""
    def git(*args: str) -> bytes:
        try:
            return subprocess.run(["git", "-C", str(repo), *args], check=True,
                                  capture_output=True).stdout
        except (OSError, subprocess.CalledProcessError) as err:
            detail = getattr(err, "stderr", b"") or b""
            raise RuntimeError(f"git cannot read revision {rev!r} of {repo}: "
                               f"{detail.decode(errors='replace').strip() or err}") from err

    commit = git("rev-parse", "--verify", f"{rev}^{{commit}}").decode().strip()
    archive = git("archive", "--format=tar", commit, "mmsr_lib")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    return commit


def _probe(tree: Path, args: Sequence[str], configs: list[dict]) -> Any:
    """Run `PROBE` with `tree`'s mmsr_lib first on the path; its last stdout line, parsed."""
    # run in `tree` (python -c puts the working folder first on the path), with this process's
    # home, so that both codes read the same data set and nothing lands in the checkout
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(tree), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "OMP_NUM_THREADS": "1", "MMSR_THREADS": "1", "MMSR_HOME": str(home())}
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], input=json.dumps(configs),
                          capture_output=True, text=True, env=env, cwd=tree)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"the probe under {tree} failed:\n{tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def first_difference(a: Any, b: Any, where: str = "") -> str:
    """Where two probe outputs differ first ("" when equal), e.g. ``metrics.test.HR@10: 0.31 vs
    0.32``."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                return f"{where}{key}: present in one only"
            diff = first_difference(a[key], b[key], f"{where}{key}.")
            if diff:
                return diff
        return ""
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{where.rstrip('.')}: {len(a)} vs {len(b)} entries"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            diff = first_difference(x, y, f"{where}{i}.")
            if diff:
                return diff
        return ""
    return "" if a == b else f"{where.rstrip('.')}: {a!r} vs {b!r}"


def equate(store: ResultsStore, since: str, repo: Path | None = None, epochs: int = 1,
           path: Path | None = None, write: bool = True) -> Report:
    """Check that the code at `since` and the current code compute the same results for the
    store's stale runs, and record the pairs that do in `path` (default
    `fingerprint.EQUIVALENT_CODE`) unless `write` is false. `repo` (default: this checkout) is
    the git repository `since` is read from; the current code is always this process's. See
    the module docstring."""
    repo = Path(repo) if repo is not None else ROOT.parent
    path = Path(path) if path is not None else fingerprint.EQUIVALENT_CODE
    records = store.records()
    now = {rec.config_hash: code_fingerprint(rec.run_config()) for rec in records}
    stale = [rec for rec in records if not same_code(rec.code_fingerprint, now[rec.config_hash],
                                                     path)]
    with tempfile.TemporaryDirectory(prefix="mmsr-equate-") as tmp:
        tree = Path(tmp) / "code"
        commit = code_tree(repo, since, tree)
        then = _probe(tree, ["fingerprints"], [rec.config for rec in stale]) if stale else []
        groups: dict[tuple[str, str], list[RunRecord]] = {}
        for rec, old in zip(stale, then, strict=True):
            # stored by `since`'s code, or by code already verified to compute what it does
            # (a run kept by an earlier equate still carries its first fingerprint)
            if same_code(rec.code_fingerprint, old, path):
                groups.setdefault((old, now[rec.config_hash]), []).append(rec)
        checks = []
        for (old, new), recs in groups.items():
            kinds: dict[str, list[RunRecord]] = {}
            for rec in recs:
                kinds.setdefault(run_kind(rec.config), []).append(rec)
            for kind, same in sorted(kinds.items()):
                # the kind's cheapest run whose data set is on this machine: fewest users, then
                # fewest items (a fresh clone has only the data sets its notebooks wrote)
                missing = [missing_data(r.config) for r in same]
                here = [r for r, path in zip(same, missing, strict=True) if path is None]
                if not here:
                    checks.append(Check(old, new, kind, len(same), same[0].config_hash,
                                        same[0].name, "", "", unchecked_reason(missing[0])))
                    continue
                rec = min(here, key=lambda r: (r.extra.get("n_users", 0),
                                               r.extra.get("n_items", 0)))
                outs = [_probe(root, ["train", str(epochs), str(Path(tmp) / f"ck-{i}")],
                               [rec.config])
                        for i, root in enumerate((tree, ROOT.parent))]  # then, and this process's
                checks.append(Check(old, new, kind, len(same), rec.config_hash, rec.name,
                                    _computed(outs[1]), first_difference(*outs)))
    report = Report(commit, checks, len(stale) - sum(len(v) for v in groups.values()),
                    len(records) - len(stale))
    if write and any(report.pairs().values()):
        record_equivalences(report, epochs, path)
    return report


def missing_data(config: dict) -> str | None:
    """The data folder a stored configuration reads (``data.path``) when it is not a data set
    on this machine, else None. Generated sources (the synthetic catalog, MovieLens-100K) are
    made by the run itself; a folder written by a notebook (a subsample, a transfer catalog)
    exists only where that notebook's grid ran."""
    path = (config.get("data") or {}).get("path")
    if path and not is_dataset_dir(resolve(path)):
        return str(path)
    return None


def unchecked_reason(path: str | None) -> str:
    """What to do when no run of a kind has its data set (`path`) here."""
    return (f"no run of this kind has its data set on this machine ({path}); "
            "the notebook that made it writes it when its grid is built (`mmsr grid NN --list "
            "--profile P`): do that and run equate again")


def _computed(out: dict) -> str:
    """A short account of what one probe computed (so the report shows the check was real)."""
    history = out.get("history") or []
    loss = f" (loss {history[-1]['loss']:.4f})" if history and "loss" in history[-1] else ""
    test = out.get("metrics", {}).get("test", {})
    ndcg = f", test NDCG@10 {test['NDCG@10']:.4f}" if "NDCG@10" in test else ""
    users = len(next(iter(out.get("ranks", {}).values()), []))
    return f"{len(history)} epoch(s){loss}{ndcg}, {users} users' ranks"


def record_equivalences(report: Report, epochs: int, path: Path) -> None:
    """Append the report's pairs whose every check was equal to `path` (atomically; a pair
    already there is kept)."""
    doc = json.loads(path.read_text()) if path.exists() else {"equivalences": []}
    have = {(e["from"], e["to"]) for e in doc["equivalences"]}
    for (old, new), checks in report.by_pair().items():
        if not all(c.equal for c in checks) or (old, new) in have:
            continue
        doc["equivalences"].append({
            "from": old, "to": new, "since": report.since, "date": date.today().isoformat(),
            "runs": sum(c.runs for c in checks), "epochs": epochs,
            "evidence": "losses of every epoch, validation and test metrics and per-user ranks "
                        "equal under both codes, on one run of each kind",
            "checked_on": [f"{c.kind}: {c.name} [{c.config_hash}], {c.computed}"
                           for c in checks]})
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")


def report_lines(report: Report, written: bool = True) -> list[str]:
    """What `mmsr results equate` prints (`written`: whether equal pairs were recorded)."""
    out = [f"since {report.since[:12]}: {report.current} stored runs current, "
           f"{sum(c.runs for c in report.checks)} computed by that commit's code, "
           f"{report.other_code} by other code (left stale)"]
    for (old, new), checks in report.by_pair().items():
        equal = all(c.equal for c in checks)
        verdict = ("equal: recorded" if written else "equal (dry run: not recorded)") if equal \
            else "DIFFERENT: not recorded, these runs stay stale" \
            if any(c.difference for c in checks) \
            else "NOT CHECKED (a kind's data set is missing): not recorded, these runs stay stale"
        out.append(f"{old} -> {new}: {sum(c.runs for c in checks)} runs, "
                   f"{len(checks)} kind(s) checked: {verdict}")
        for c in checks:
            out.append(f"  {c.kind} ({c.runs} runs) on {c.name} [{c.config_hash}]: "
                       + (c.computed if c.equal else f"not checked: {c.unchecked}"
                          if c.unchecked else f"differs at {c.difference}"))
    return out
