"""Transfer (paper Sec. 7.2: Tables IX, X and Figure 3): pre-train MMSR on a source catalog,
fine-tune it on a target catalog with other items and other users.

The warm start is ``train.init_from=<source run hash>`` (`runs.runner.warm_start`): the encoders'
trainable weights, the fusion and the sequence model carry over, ID weights never, so IDSR rows
never warm-start. A target row therefore depends on its source *run*: its configuration names the
source's hash, and the grids of the target rows can only be built once the source is trained
(`transfer_grids` trains the sources through `run_or_load` and returns the target grids).

Catalogs (`TRANSFER_CATALOGS`). The paper scales real data sets by sampling users (HM-100K/200K/
500K into Amazon-10K; Kwai-200K into Bili-10K/20K/50K). ``smoke`` and ``cpu`` use the embedded
synthetic generator: ``data.synth.domain=source`` and ``target`` share the attribute space but
have different items and users, and ``data.synth.n_users`` sets a catalog's size. Table X's pair
uses the generator with another seed (``data.synth.seed=1``), as Kwai -> Bili is a second pair of
platforms. Every catalog keeps the paper's label (``HM-500K``) and `catalog_table` says what stands
for it on the profile. ``paper`` reads the prepared data sets from ``data/<label>``.

Rows (columns of the paper's tables):

* IDSR - SASRec over item IDs trained on the target, for twice the MMSR epoch budget (Fig. 3:
  the paper trains IDSR 300 epochs, MMSR 60). The tables and the figure use the same run.
* Scratch - the profile's MMSR (text + vision encoders, their fusion, SASRec) trained on the
  target from the pretrained encoders only. The fusion is one merge-attention block as the
  paper's (`MMSR_FUSION`), but on ``cpu`` the coarse gate, as the quick start and notebook 12
  fuse there: one merge-attention block costs ~100 min a run on two cores (every step runs the
  whole catalog's tokens through it; docs/results_cpu.md), ~18 cpu-hours for this notebook's
  46 runs against 1.6 measured with the gate (2026-12-07), and the question here is whether
  pre-training transfers, which either fusion asks.
* Transfer - the same configuration warm-started from the source run.

The sources are trained once, with the profile's first seed: a pre-trained model is one artefact
that every target seed starts from (the seeds' spread is the fine-tuning's, not the source's).

"Improv." is Transfer vs Scratch: the relative difference of the seed-averaged test metric, shown
only when both rows converged and the paired Wilcoxon test over the target's test users is
significant (`grids.significance_column`); otherwise "n.s." or "not converged". In Table IX the
transfer row is the best one *on validation* (the paper: "the best transferring").
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from mmsr_lib.config import PROFILES, RunConfig, profile_config, profile_seeds
from mmsr_lib.runs.store import ResultsStore, RunRecord
from mmsr_lib.workbook.grids import Grid, significance_column
from mmsr_lib.workbook.paper_numbers import paper_improvements, paper_wide
from mmsr_lib.workbook.significance import converged, family_tests, summarize, verdict

METRICS = ("HR@10", "NDCG@10")
# profile -> (fusion, blocks) of the MMSR rows: the paper's merge-attention, the gate on cpu (a
# coarse fusion has no blocks)
MMSR_FUSION: dict[str, tuple[str, int | None]] = {
    "paper": ("merge_attn", 1), "cpu": ("gate", None), "smoke": ("merge_attn", 1)}
IDSR_BUDGET_FACTOR = 2  # Fig. 3: IDSR 300 epochs, MMSR 60; we double the MMSR budget
SELECT_ON = "valid"  # the split that picks Table IX's best transfer (never the test split)


@dataclass(frozen=True)
class Catalog:
    """A data set of a transfer experiment: the paper's label and the settings that select it."""

    label: str  # the paper's data set this catalog stands for, e.g. "HM-500K"
    settings: tuple[str, ...]  # dotted overrides, e.g. ("data.synth.domain=source", ...)

    def describe(self) -> str:
        return ", ".join(self.settings)


def _synth(label: str, domain: str, n_users: int, seed: int = 0, *extra: str) -> Catalog:
    return Catalog(label, (f"data.synth.domain={domain}", f"data.synth.n_users={n_users}",
                           f"data.synth.seed={seed}", *extra))


def _path(label: str, root: str = "data") -> Catalog:
    return Catalog(label, ("data.source=path", f"data.path={root}/{label.lower()}"))


def _plan(sources: Sequence[Catalog], target: Catalog, x_source: Catalog,
          x_targets: Sequence[Catalog]) -> dict:
    return {"IX": {"sources": tuple(sources), "target": target},
            "X": {"source": x_source, "targets": tuple(x_targets)}}


# Sizes per profile. cpu: sources of 1,000 / 2,000 / 5,000 users into a 300-user target (ratios
# 3-17, the paper's 10-50); Table X: a 2,000-user source into targets of 300 / 600 / 1,200 users
# (ratios 7-1.7, the paper's 20-4). smoke: the same shape, tiny (CI only).
_SMOKE_ITEMS = ("data.synth.n_items=50",)
TRANSFER_CATALOGS: dict[str, dict] = {
    "smoke": _plan(
        [_synth(n, "source", u, 0, *_SMOKE_ITEMS) for n, u in
         (("HM-100K", 40), ("HM-200K", 60), ("HM-500K", 100))],
        _synth("Amazon-10K", "target", 40, 0, *_SMOKE_ITEMS),
        _synth("Kwai-200K", "source", 60, 1, *_SMOKE_ITEMS),
        [_synth(n, "target", u, 1, *_SMOKE_ITEMS) for n, u in
         (("Bili-10K", 40), ("Bili-20K", 50), ("Bili-50K", 60))],
    ),
    "cpu": _plan(
        [_synth(n, "source", u) for n, u in
         (("HM-100K", 1000), ("HM-200K", 2000), ("HM-500K", 5000))],
        _synth("Amazon-10K", "target", 300),
        _synth("Kwai-200K", "source", 2000, 1),
        [_synth(n, "target", u, 1) for n, u in
         (("Bili-10K", 300), ("Bili-20K", 600), ("Bili-50K", 1200))],
    ),
}
PAPER_LABELS = {"IX": (("HM-100K", "HM-200K", "HM-500K"), "Amazon-10K"),
                "X": ("Kwai-200K", ("Bili-10K", "Bili-20K", "Bili-50K"))}


def _paper_plan(root: str = "data") -> dict:
    (s9, t9), (s10, t10) = PAPER_LABELS["IX"], PAPER_LABELS["X"]
    return _plan([_path(n, root) for n in s9], _path(t9, root), _path(s10, root),
                 [_path(n, root) for n in t10])


TRANSFER_CATALOGS["paper"] = _paper_plan()


def catalogs(profile: str, root: str | None = None) -> dict:
    """The transfer catalogs of `profile`: {"IX": {sources, target}, "X": {source, targets}}.
    On ``paper`` each is the prepared data set ``<root>/<label lowercased>`` (default root
    ``data``, e.g. ``data/hm-500k`` made by ``mmsr data import --format hm --users 500000``)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {PROFILES}")
    if profile == "paper" and root is not None:
        return _paper_plan(root)
    return TRANSFER_CATALOGS[profile]


def catalog_table(profile: str, *overrides: str, count: bool = True,
                  root: str | None = None) -> pd.DataFrame:
    """What stands for each of the paper's data sets on `profile`: role, settings and (with
    `count`, which loads or generates each catalog) users, items and training interactions."""
    from mmsr_lib.runs.runner import load_data

    plan = catalogs(profile, root)
    rows = [("IX", "source", c) for c in plan["IX"]["sources"]]
    rows += [("IX", "target", plan["IX"]["target"]), ("X", "source", plan["X"]["source"])]
    rows += [("X", "target", c) for c in plan["X"]["targets"]]
    out = []
    for table, role, cat in rows:
        row = {"table": table, "role": role, "stands for": cat.label,
               "settings": cat.describe()}
        if count:
            data = load_data(mmsr_config(profile, cat, *overrides).resolved().data)
            row.update(users=data.n_users, items=data.n_items,
                       interactions=int(sum(len(s) for s in data.seqs)))
        out.append(row)
    return pd.DataFrame(out).set_index(["table", "role", "stands for"])


# -- configurations --------------------------------------------------------------------------------
def mmsr_config(profile: str, catalog: Catalog, *overrides: str, name: str = "") -> RunConfig:
    """The profile's MMSR (its text + vision encoders, the profile's fusion `MMSR_FUSION`,
    SASRec) on `catalog`; `overrides` (dotted) apply last."""
    fusion, blocks = MMSR_FUSION[profile]
    depth = (f"model.fusion_layers={blocks}",) if blocks else ()
    return profile_config(profile).override(
        "model.item_encoder=mm", "model.sequence=sasrec", f"model.fusion={fusion}", *depth,
        *catalog.settings, f"name={name or 'tr-' + catalog.label}", *overrides)


def idsr_config(profile: str, catalog: Catalog, *overrides: str, name: str = "") -> RunConfig:
    """IDSR (SASRec over item IDs) on `catalog` with `IDSR_BUDGET_FACTOR` times the MMSR epoch
    budget (after `overrides`), as the paper's Fig. 3 trains it. Never warm-started."""
    budget = mmsr_config(profile, catalog, *overrides).resolved().train.epochs
    cfg = profile_config(profile).override(
        "model.item_encoder=id", "model.sequence=sasrec", *catalog.settings,
        f"name={name or 'tr-idsr-' + catalog.label}", *overrides)
    return cfg.override(f"train.epochs={IDSR_BUDGET_FACTOR * budget}", "train.init_from=none")


def source_configs(profile: str, *overrides: str, root: str | None = None
                   ) -> dict[str, RunConfig]:
    """Source label -> the source run (MMSR on the source catalog, the profile's first seed).
    Table X's source may be one of Table IX's (then it is one run)."""
    seed = profile_seeds(profile)[0]
    plan = catalogs(profile, root)
    out = {}
    for cat in (*plan["IX"]["sources"], plan["X"]["source"]):
        out[cat.label] = mmsr_config(profile, cat, *overrides, f"train.seed={seed}",
                                     name=f"tr-source-{cat.label}")
    return out


def _source_hash(source: RunRecord | RunConfig | str) -> str:
    if isinstance(source, RunRecord):
        if source.status != "done":
            raise ValueError(f"source run {source.name} [{source.config_hash}] is "
                             f"{source.status}, not done; train it first")
        return source.config_hash
    if isinstance(source, RunConfig):
        return source.hash()
    if not isinstance(source, str) or not source:
        raise TypeError(f"a source is a RunRecord, a RunConfig or a run hash, got {source!r}")
    return source


def table9_configs(profile: str, sources: Mapping[str, RunRecord | RunConfig | str],
                   *overrides: str, root: str | None = None) -> Grid:
    """Table IX: one target, several source sizes. Keys (group, row) as the paper's:
    ("IDSR", "IDSR"), ("MMSR", "Scratch"), ("MMSR", "Transfer HM-100K"), ...

    `sources` maps each source label of the profile's Table IX to its trained run (a record, or
    its hash): the transfer rows warm-start from it.
    """
    plan = catalogs(profile, root)["IX"]
    target = plan["target"]
    missing = [c.label for c in plan["sources"] if c.label not in sources]
    if missing:
        raise KeyError(f"Table IX needs the source runs {missing}; train them with "
                       "train_sources() (or pass their hashes)")
    grid = Grid("IX", ("group", "row"))
    grid["IDSR", "IDSR"] = idsr_config(profile, target, *overrides)
    grid["MMSR", "Scratch"] = mmsr_config(profile, target, *overrides,
                                          name=f"tr-scratch-{target.label}")
    for cat in plan["sources"]:
        grid["MMSR", f"Transfer {cat.label}"] = mmsr_config(
            profile, target, *overrides, f"train.init_from={_source_hash(sources[cat.label])}",
            name=f"tr-transfer-{cat.label}-{target.label}")
    return grid


def table10_configs(profile: str, source: RunRecord | RunConfig | str, *overrides: str,
                    root: str | None = None) -> Grid:
    """Table X: one source, several target sizes. Keys (target, row) with the paper's rows
    "ID", "Scratch", "Transfer" per target (e.g. ("Bili-10K", "Transfer"))."""
    plan = catalogs(profile, root)["X"]
    key = _source_hash(source)
    grid = Grid("X", ("target", "row"))
    for cat in plan["targets"]:
        grid[cat.label, "ID"] = idsr_config(profile, cat, *overrides)
        grid[cat.label, "Scratch"] = mmsr_config(profile, cat, *overrides,
                                                 name=f"tr-scratch-{cat.label}")
        grid[cat.label, "Transfer"] = mmsr_config(
            profile, cat, *overrides, f"train.init_from={key}",
            name=f"tr-transfer-{plan['source'].label}-{cat.label}")
    return grid


def train_sources(profile: str, *overrides: str, store: ResultsStore | None = None,
                  progress: bool = True, root: str | None = None) -> dict[str, RunRecord]:
    """Train (or load) every source run of `profile`; label -> its record."""
    from mmsr_lib.runs.runner import run_or_load

    store = store if store is not None else ResultsStore()
    return {label: run_or_load(cfg, store=store, progress=progress)
            for label, cfg in source_configs(profile, *overrides, root=root).items()}


@dataclass
class TransferGrids:
    """The trained sources and the two target grids that depend on them."""

    sources: dict[str, RunRecord]
    table9: Grid
    table10: Grid


def transfer_grids(profile: str, *overrides: str, store: ResultsStore | None = None,
                   progress: bool = True, root: str | None = None) -> TransferGrids:
    """Train the sources (`train_sources`), then build Table IX's and Table X's target rows,
    which name the sources' hashes. Run the grids with `run_grid`. A target row still to train
    whose source is stored without its checkpoint (imported results) stops here with what to
    do (`missing_source_checkpoints`), not at its warm start."""
    store = store if store is not None else ResultsStore()
    sources = train_sources(profile, *overrides, store=store, progress=progress, root=root)
    x_source = catalogs(profile, root)["X"]["source"].label
    grids = TransferGrids(sources, table9_configs(profile, sources, *overrides, root=root),
                          table10_configs(profile, sources[x_source], *overrides, root=root))
    untrained = [cfg for grid in (grids.table9, grids.table10) for cfg in grid.values()
                 if getattr(store.get(cfg.hash()), "status", None) != "done"]
    missing = missing_source_checkpoints(untrained, store)
    if missing:
        raise FileNotFoundError("\n".join(
            source_checkpoint_message(h, rec, f"the source's line of `mmsr grid 08 --list "
                                              f"--profile {profile}` with --force")
            for h, rec in missing.items()))
    return grids


def missing_source_checkpoints(configs: Sequence[RunConfig], store: ResultsStore | None
                               ) -> dict[str, RunRecord | None]:
    """The warm-start sources (``train.init_from`` run hashes) of `configs` whose checkpoint is
    not on this machine -> their stored record (None when the store has none). A stored
    record without a checkpoint is what `mmsr results import docs/runs` gives: results travel
    between machines, weights do not."""
    from mmsr_lib.runs.runner import checkpoint_of

    out: dict[str, RunRecord | None] = {}
    for cfg in configs:
        train = cfg.resolved().train
        source = train.init_from
        if not source or source in out:
            continue
        try:
            checkpoint_of(source, train.checkpoint_dir)
        except FileNotFoundError:
            out[source] = store.get(source) if store is not None else None
    return out


def source_checkpoint_message(source: str, record: RunRecord | None, command: str) -> str:
    """What to do about a warm-start source without a checkpoint here (`command`: how to train
    it, e.g. its ``mmsr train`` line with --force)."""
    if record is not None and record.status == "done":
        return (f"source run {record.name} [{source}] is stored (its result, e.g. imported from "
                "docs/runs) but its checkpoint is not on this machine, and the transfer rows "
                f"warm-start from its weights: train it again with {command} (the stored result "
                "is replaced only when the new run completes), then run the targets")
    return f"source run [{source}] is not trained: train it first ({command})"


def source_table(sources: Mapping[str, RunRecord], metric: str = "NDCG@10") -> pd.DataFrame:
    """One line per trained source run: its hash (what the target rows name), size, epochs,
    convergence and its own validation and test `metric`."""
    rows = []
    for label, rec in sources.items():
        ex = rec.extra
        rows.append({"source": label, "hash": rec.config_hash, "users": ex.get("n_users"),
                     "items": ex.get("n_items"),
                     "best epoch": f"{ex.get('best_epoch')} of {rec.config['train']['epochs']}",
                     "converged": bool(ex.get("converged")),
                     f"valid {metric}": rec.metrics.get("valid", {}).get(metric, math.nan),
                     f"test {metric}": rec.metrics.get("test", {}).get(metric, math.nan)})
    return pd.DataFrame(rows).set_index("source")


def warm_starts_ok(transfer: TransferGrids) -> bool:
    """Every transfer row names a trained source's hash and no other row warm-starts."""
    hashes = {r.config_hash for r in transfer.sources.values()}
    for grid in (transfer.table9, transfer.table10):
        for key, cfg in grid.items():
            init = cfg.resolved().train.init_from
            if ("Transfer" in key[1]) != (init in hashes):
                return False
    return True


# -- tables ----------------------------------------------------------------------------------------
def _mean(runs: Sequence[RunRecord], split: str, metric: str) -> float:
    return float(summarize(runs, split, (metric,))[metric]) if runs else math.nan


def best_transfer(results: Mapping, keys: Sequence, split: str = SELECT_ON,
                  metric: str = "NDCG@10") -> object:
    """The transfer row with the highest seed-mean `metric` on `split` (validation by default,
    so the test split never chooses what it then scores)."""
    scored = [(k, _mean(results.get(k, []), split, metric)) for k in keys]
    scored = [(k, v) for k, v in scored if not math.isnan(v)]
    if not scored:
        raise ValueError(f"none of the transfer rows {list(keys)} has {split} {metric}")
    return max(scored, key=lambda kv: kv[1])[0]


def improvement(store: ResultsStore, results: Mapping, transfer: object, scratch: object,
                metrics: Sequence[str] = METRICS, split: str = "test") -> dict[str, str]:
    """Metric -> the "Improv." cell of Transfer vs Scratch: "+6.83% (p=0.004)" when both rows
    converged in every seed and the paired test is significant, else "n.s. (p=...)" or
    "not converged"."""
    return {m: significance_column(store, results, {"Improv.": (transfer, scratch)}, split,
                                   m)["Improv."] for m in metrics}


def table9_wide(store: ResultsStore, results: Mapping, grid: Grid,
                metrics: Sequence[str] = METRICS, split: str = "test") -> pd.DataFrame:
    """Table IX in the paper's layout: one row per metric; IDSR, Scratch, Transfer per source
    (seed means, percent) and "Improv." (the best transfer on validation vs Scratch)."""
    transfers = [k for k in grid if k[1].startswith("Transfer")]
    best = best_transfer(results, transfers)
    improv = improvement(store, results, best, ("MMSR", "Scratch"), metrics, split)
    rows = []
    for m in metrics:
        row = {"metric": m}
        for key in grid:
            row[key[1]] = _mean(results.get(key, []), split, m)
        row["Improv."] = improv[m]
        row["best transfer"] = best[1]
        rows.append(row)
    return pd.DataFrame(rows).set_index("metric")


def table10_wide(store: ResultsStore, results: Mapping, grid: Grid,
                 metrics: Sequence[str] = METRICS, split: str = "test") -> pd.DataFrame:
    """Table X, one row per (target, metric): ID, Scratch, Transfer (seed means) and "Improv."
    (Transfer vs Scratch on the same target)."""
    rows = []
    for target in dict.fromkeys(k[0] for k in grid):
        improv = improvement(store, results, (target, "Transfer"), (target, "Scratch"),
                             metrics, split)
        for m in metrics:
            row = {"target": target, "metric": m}
            for r in ("ID", "Scratch", "Transfer"):
                row[r] = _mean(results.get((target, r), []), split, m)
            row["Improv."] = improv[m]
            rows.append(row)
    return pd.DataFrame(rows).set_index(["target", "metric"])


def _paper_improv(table: str) -> pd.DataFrame:
    imp = paper_improvements()
    imp = imp[imp["table"] == table]
    return imp.assign(cell=[f"{v:+.2f}%" for v in imp["printed"]])


def paper_table9(metrics: Sequence[str] = METRICS) -> pd.DataFrame:
    """The paper's Table IX in `table9_wide`'s layout (HM -> Amazon-10K)."""
    paper = paper_wide("IX").set_index("row")
    imp = _paper_improv("IX").set_index("metric")["cell"]
    rows = []
    for m in metrics:
        row = {"metric": m, **{r: float(paper.loc[r, m]) for r in paper.index}}
        row["Improv."] = imp.get(m, "")
        rows.append(row)
    return pd.DataFrame(rows).set_index("metric")


def paper_table10(metrics: Sequence[str] = METRICS) -> pd.DataFrame:
    """The paper's Table X in `table10_wide`'s layout (Kwai-200K -> Bili-10K/20K/50K)."""
    paper = paper_wide("X")
    imp = _paper_improv("X").set_index(["dataset", "metric"])["cell"]
    rows = []
    for target in dict.fromkeys(paper["dataset"]):
        cell = paper[paper["dataset"] == target].set_index("row")
        for m in metrics:
            rows.append({"target": target, "metric": m,
                         **{r: float(cell.loc[r, m]) for r in ("ID", "Scratch", "Transfer")},
                         "Improv.": imp.get((target, m), "")})
    return pd.DataFrame(rows).set_index(["target", "metric"])


def side_by_side(ours: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """Our rows and the paper's interleaved under one more index level, "source" (ours /
    paper), in our order; the columns are ours (NaN where the paper has no such cell)."""
    rows, index = [], []
    for key in ours.index:
        for source, frame in (("ours", ours), ("paper", paper)):
            if key in frame.index:
                rows.append(frame.loc[key].reindex(ours.columns))
                index.append((*(key if isinstance(key, tuple) else (key,)), source))
    names = [*ours.index.names, "source"]
    return pd.DataFrame(rows, index=pd.MultiIndex.from_tuples(index, names=names),
                        columns=ours.columns).astype({c: ours[c].dtype for c in ours.columns})


def value_columns(table: pd.DataFrame) -> list[str]:
    """The numeric model columns of a wide transfer table (what bold/underline compare)."""
    return [c for c in table.columns if pd.api.types.is_numeric_dtype(table[c])]


# -- sentences -------------------------------------------------------------------------------------
Pair = tuple[str, object, str, object]  # (name A, row A, name B, row B)


def transfer_verdicts(store: ResultsStore, results: Mapping, pairs: Sequence[Pair],
                      metric: str = "NDCG@10", split: str = "test") -> list[str]:
    """One sentence per pair under the significance rule: a claim only for rows that converged
    in every seed and a significant paired test (Holm over the pairs: one family, see
    `family_tests`), else "no significant difference" / "no claim"."""
    tests = family_tests(store, results, [(a, b) for _, a, _, b in pairs], split, metric)
    out = []
    for name_a, a, name_b, b in pairs:
        if (a, b) not in tests:
            out.append(f"{name_a} vs {name_b}: not run")
            continue
        out.append(verdict(tests[a, b], name_a, name_b, converged(results[a]),
                           converged(results[b])))
    return out


def table9_pairs(grid: Grid) -> list[Pair]:
    """Transfer from each source vs Scratch, the largest vs the smallest source, Scratch vs
    IDSR."""
    transfers = [k for k in grid if k[1].startswith("Transfer")]
    scratch = ("MMSR", "Scratch")
    pairs: list[Pair] = [(k[1], k, "Scratch", scratch) for k in transfers]
    if len(transfers) >= 2:
        pairs.append((transfers[-1][1], transfers[-1], transfers[0][1], transfers[0]))
    pairs.append(("Scratch", scratch, "IDSR", ("IDSR", "IDSR")))
    return pairs


def table10_pairs(grid: Grid) -> list[Pair]:
    """Per target: Transfer vs Scratch and Scratch vs ID."""
    pairs: list[Pair] = []
    for target in dict.fromkeys(k[0] for k in grid):
        pairs.append((f"Transfer on {target}", (target, "Transfer"), f"Scratch on {target}",
                      (target, "Scratch")))
        pairs.append((f"Scratch on {target}", (target, "Scratch"), f"ID on {target}",
                      (target, "ID")))
    return pairs


# -- Figure 3: convergence -------------------------------------------------------------------------
CURVE_LABELS = ("IDSR", "MMSR-Scratch", "MMSR-Transfer")
_COLORS = {"IDSR": "tab:gray", "MMSR-Scratch": "tab:blue", "MMSR-Transfer": "tab:red"}


def figure3_panels(profile: str, results9: Mapping, results10: Mapping
                   ) -> dict[str, dict[str, list[RunRecord]]]:
    """The paper's two pairs: Table IX's largest source into its target, and Table X's source
    into its smallest target. Panel title -> curve label -> the row's runs (one per seed)."""
    plan = catalogs(profile)
    largest, target9 = plan["IX"]["sources"][-1].label, plan["IX"]["target"].label
    x_source, first = plan["X"]["source"].label, plan["X"]["targets"][0].label
    return {
        f"{largest} -> {target9}": {
            "IDSR": list(results9.get(("IDSR", "IDSR"), [])),
            "MMSR-Scratch": list(results9.get(("MMSR", "Scratch"), [])),
            "MMSR-Transfer": list(results9.get(("MMSR", f"Transfer {largest}"), [])),
        },
        f"{x_source} -> {first}": {
            "IDSR": list(results10.get((first, "ID"), [])),
            "MMSR-Scratch": list(results10.get((first, "Scratch"), [])),
            "MMSR-Transfer": list(results10.get((first, "Transfer"), [])),
        },
    }


def curve(record: RunRecord, metric: str = "NDCG@10") -> tuple[list[int], list[float]]:
    """(epochs, validation `metric`) of one run's history (epochs counted from 1)."""
    points = [(h["epoch"], h["valid"][metric]) for h in record.history
              if h.get("valid") and metric in h["valid"]]
    return [p[0] for p in points], [p[1] for p in points]


def plot_convergence(panels: Mapping[str, Mapping[str, Sequence[RunRecord]]],
                     metric: str = "NDCG@10") -> plt.Figure:
    """Validation `metric` per epoch, one panel per source/target pair: every seed is a line
    (the first solid, the others faint), integer epoch ticks, the legend outside the axes."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.0 * len(panels), 3.6), squeeze=False)
    handles = {}
    for ax, (title, rows) in zip(axes[0], panels.items(), strict=True):
        for label, runs in rows.items():
            for i, rec in enumerate(runs):
                ep, val = curve(rec, metric)
                if not ep:
                    continue
                (line,) = ax.plot(ep, val, color=_COLORS.get(label), lw=1.6 if i == 0 else 0.9,
                                  alpha=1.0 if i == 0 else 0.4,
                                  marker="o" if len(ep) < 15 else None, ms=3)
                handles.setdefault(label, line)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(xlabel="epoch", ylabel=f"valid {metric} (%)", title=title)
        ax.grid(alpha=0.3)
    labels = [lab for lab in (*CURVE_LABELS, *handles) if lab in handles]
    labels = list(dict.fromkeys(labels))
    names = {"IDSR": f"IDSR ({IDSR_BUDGET_FACTOR}x the epoch budget)"}
    fig.legend([handles[lab] for lab in labels], [names.get(lab, lab) for lab in labels],
               loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    return fig


def convergence_summary(panels: Mapping[str, Mapping[str, Sequence[RunRecord]]],
                        metric: str = "NDCG@10", share: float = 0.95) -> pd.DataFrame:
    """Per panel and curve: epoch budget, epochs run and best epoch per seed, the validation
    `metric` after the first epoch and at its best (seed means), and the first epoch that reached
    `share` of the run's own best (seed mean): descriptive numbers, no test."""
    rows = []
    for title, curves in panels.items():
        for label, runs in curves.items():
            first, best, reach = [], [], []
            for rec in runs:
                ep, val = curve(rec, metric)
                if not ep:
                    continue
                top = max(val)
                first.append(val[0])
                best.append(top)
                reach.append(next(e for e, v in zip(ep, val, strict=True) if v >= share * top))
            rows.append({
                "pair": title, "curve": label,
                "budget": runs[0].config.get("train", {}).get("epochs") if runs else None,
                "epochs run": "/".join(str(r.extra.get("epochs_run", "-")) for r in runs),
                "best epoch": "/".join(str(r.extra.get("best_epoch", "-")) for r in runs),
                f"valid {metric} epoch 1": float(np.mean(first)) if first else math.nan,
                f"best valid {metric}": float(np.mean(best)) if best else math.nan,
                f"epochs to {share:.0%} of best": float(np.mean(reach)) if reach else math.nan,
            })
    return pd.DataFrame(rows).set_index(["pair", "curve"])
