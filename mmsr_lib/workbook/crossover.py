"""Notebook 12 (beyond the paper): where, as items get sparser, do text and images overtake IDs?

Trained to convergence under one rule, SASRec over ID embeddings (IDSR) and over frozen MiniLM
text (MMSR-T) tie on the embedded catalog (~46 interactions per item), while the paper reports
content ahead on all four of its data sets. An ID embedding learns only from its own item's
interactions; a content encoder shares what it learns across items. So the answer should depend
on how often an item is seen. This module sweeps that density and finds the crossing.

* `density_sweep_configs`: the synthetic catalog at several densities, as a grid keyed by
  (point, encoder). Default knob: the catalog grows (``data.synth.n_items`` x factor) while the
  users and their sequences keep their number and lengths, so the training interactions and the
  number of test users stay fixed (54,146 interactions, 3,000 users on cpu) and only interactions
  per item change. ``knob="n_users"`` instead removes users (cheaper, but fewer test users and
  less data for the sequence model too). Factor 1 is the profile's catalog itself: those runs
  are the quick start's (same configuration hashes), trained once.
* `subsample_sweep_configs`: the same picture on a real data set (MovieLens-100K, or
  ``data.path``) by keeping part of its interactions (`subsample_interactions`). Default
  ``method="recent"``: each user keeps the most recent share of their interactions (at least
  ``min_interactions``). Sequences stay contiguous and in order, every user stays, and the
  validation and test targets (each user's last two items) are unchanged, so the evaluation is
  on the same users and targets at every point; only the training part shrinks (users whose kept
  history is shorter than ``max_len + 2`` also see a shorter input). ``method="users"`` keeps a
  random share of whole users (the paper's own user sampling): sequences intact, but fewer test
  users and items vanish with their users. Dropping random interactions inside sequences is not
  offered: it turns neighbouring items into skip-transitions, which changes the sequential
  structure being modelled.
* `split_ranks`: overall, cold and warm test users from the stored per-user ranks and the data's
  cold items (warm = the test item is not cold), without retraining.
* `estimate_crossover`: per point the paired test of content vs IDs (the project's rule:
  converged runs, Wilcoxon over users of the seed-averaged metric); the crossing is the zero of
  the mean difference interpolated linearly in log(interactions per item), with a bootstrap over
  seeds and users for its 95% interval. A crossover is claimed only where the *significant*
  points change sign; otherwise "no crossover in the swept range".
* `paper_datasets`: the paper's four data sets' sizes (Table I, `paper_numbers.paper_table1`) and density,
  next to their IDSR vs MMSR numbers (Tables IV and VIII), for the computed conclusion.
"""

from __future__ import annotations

import math
import os
import shutil
import uuid
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import FormatStrFormatter, LogLocator, MaxNLocator, NullFormatter

from mmsr_lib.config import PROFILES, DataConfig, RunConfig, profile_config
from mmsr_lib.data.format import load_dataset, write_dataset
from mmsr_lib.data.sampling import sample_users
from mmsr_lib.data.sources import dataset_root
from mmsr_lib.data.stats import dataset_statistics
from mmsr_lib.evaluate import metrics_from_ranks
from mmsr_lib.runs.runner import load_data
from mmsr_lib.runs.store import ResultsStore, RunRecord
from mmsr_lib.util.paths import resolve
from mmsr_lib.workbook.comparisons import describe_setting
from mmsr_lib.workbook.grids import Grid
from mmsr_lib.workbook.paper_numbers import paper_table1, paper_wide
from mmsr_lib.workbook.report import best_marks, relative_improvement, to_markdown
from mmsr_lib.workbook.significance import (
    ALPHA,
    PairedTest,
    adjust,
    converged,
    per_user,
    seeded_test,
)

SWEEP_ENCODERS = ("IDSR", "MMSR-T", "MMSR-V", "MMSR")
TEXT_ONLY_ENCODERS = ("IDSR", "MMSR-T")  # data sets without images (MovieLens-100K)
# the quick start's settings (MMSR fuses by coarse gating: cheap, so a 6-point sweep fits a cpu
# day); the profile chooses the encoders (cpu: pretrained MiniLM-L6 + EfficientNet-Lite1, frozen)
_ENCODER_KIND = {"IDSR": "id", "MMSR-T": "text", "MMSR-V": "vision", "MMSR": "mm"}
SWEEP_KNOBS = ("n_items", "n_users")
# sparsity factors: interactions per item fall ~ by the factor. cpu: 90 -> 4.5 per item, which
# brackets the paper's four data sets (12-74 per item, `paper_datasets`)
DEFAULT_POINTS = {"smoke": (1.0, 4.0), "cpu": (0.5, 1.0, 2.0, 4.0, 8.0, 16.0),
                  "paper": (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)}
DEFAULT_FRACTIONS = (1.0, 0.5, 0.25, 0.125)
SUBSAMPLE_METHODS = {
    "recent": "each user keeps the most recent share of their interactions (at least "
              "min_interactions): contiguous sequences, same users and same valid/test targets",
    "users": "a seeded uniform share of the users with at least min_interactions interactions, "
             "whole sequences (data.sampling.sample_users)",
}
SPLITS = {"overall": "test", "cold": "cold_test", "warm": "warm_test"}
SPLIT_TITLES = {"overall": "all test users", "cold": "test item cold",
                "warm": "test item warm (not cold)"}
METRICS = ("HR@10", "NDCG@10")
N_BOOTSTRAP = 1000
MATCH_FACTOR = 2.0  # a paper data set "sits at" a swept point within this density ratio
COLOURS = {"IDSR": "#555555", "MMSR-T": "#1f77b4", "MMSR-V": "#2ca02c", "MMSR": "#d62728"}
# IDSR's own setting at the sweep points where it was searched again (knob n_items; factor ->
# overrides). The profile's setting was searched at factor 1 (46 interactions per item); on
# sparser catalogs ID SASRec peaks within 12-65 epochs and then overfits its rarely seen
# embeddings, so its advocates would regularise it there. Searched with `mmsr tune --notebook 12
# --only '<point> / IDSR' --space model.dropout=... --space train.weight_decay=...` on validation
# NDCG@10 (seed 42); the content rows keep the profile's setting at every point, so the sweep
# measures content against IDs at their best. ID_SEARCHES says what was searched at each point,
# including points where the profile's setting won (they have no ID_SETTINGS entry).
# docs/results_cpu.md, "Notebook 12", has the trials.
ID_SETTINGS: dict[str, dict[float, tuple[str, ...]]] = {
    "cpu": {2.0: ("model.dropout=0.5", "train.weight_decay=0.5"),
            4.0: ("model.dropout=0.5", "train.weight_decay=0.5"),
            8.0: ("model.dropout=0.7", "train.weight_decay=2.0"),
            16.0: ("model.dropout=0.7", "train.weight_decay=2.0")},
}
ID_SEARCHES: dict[str, dict[float, str]] = {
    "cpu": {2.0: "dropout 0.3, 0.5 x weight decay 0.1, 0.5, 2.0 (all 6), validation NDCG@10 "
                 "14.85 against 14.57 at the profile's setting (dropout 0.3 / weight decay 0.5 "
                 "14.82, a near tie); dropout 0.5 is the largest tried",
            4.0: "dropout 0.3, 0.5, 0.7 x weight decay 0.1, 0.5, 2.0, 4.0 (9 of 12, in two "
                 "rounds), validation NDCG@10 9.70 against 9.18 at the profile's setting "
                 "(dropout 0.3 / weight decay 0.5 9.69, a near tie; dropout 0.7 at most 3.82)",
            8.0: "dropout 0.3..0.7 x weight decay 0.1..2.0 (9 of 12 combinations, "
                 "coordinate-wise), validation NDCG@10 6.69 against 4.94 at the profile's "
                 "setting; both chosen values are the largest of that grid; one step past "
                 "either edge falls: dropout 0.7 / weight decay 4.0 1.85, dropout 0.8 / "
                 "weight decay 2.0 3.30",
            16.0: "3 of dropout 0.3, 0.5, 0.7 x weight decay 0.1, 0.5, 2.0 (the profile's "
                  "setting and the ones chosen at 13.6 and 7.7 per item), validation NDCG@10 "
                  "4.76 against 2.97 at the profile's setting; past either edge it falls: "
                  "dropout 0.8 / weight decay 2.0 1.70, dropout 0.7 / weight decay 4.0 3.02"},
}
NOT_SEARCHED = "the profile's setting (not searched at this point)"
# A longer budget for every row of a point (knob n_items; factor -> overrides) where the
# profile's did not let a row converge, so no difference there could be claimed. cpu: at 24.4
# interactions per item ID SASRec at its searched (regularised) setting still improved at
# epochs 197 and 188 of 200 (two of three seeds); at 90.2 images alone (MMSR-V) at epoch 185
# (one seed). All four rows of such a point get 300 epochs with patience 30 (the same 10% rule),
# so the compared rows keep equal rules. The cost table's ``budget`` shows it.
POINT_BUDGETS: dict[str, dict[float, tuple[str, ...]]] = {
    "cpu": {0.5: ("train.epochs=300", "train.patience=30"),
            2.0: ("train.epochs=300", "train.patience=30")},
}

class SweepGrid(Grid):
    """A `Grid` keyed by (point, encoder) that also knows what each point is (``points``:
    label -> {"factor", "knob", "value", ...}), in sweep order (densest first)."""

    def __init__(self, table: str, levels: tuple[str, str]) -> None:
        super().__init__(table, levels)
        self.points: dict[str, dict] = {}


def _check_profile(profile: str) -> None:
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {PROFILES}")


def _encoder_settings(label: str, fusion: str) -> tuple[str, ...]:
    if label not in _ENCODER_KIND:
        raise ValueError(f"unknown encoder {label!r}; choose from {SWEEP_ENCODERS}")
    settings = (f"model.item_encoder={_ENCODER_KIND[label]}",)
    return settings + ((f"model.fusion={fusion}",) if label == "MMSR" else ())


def _sorted_factors(points: Sequence[float], what: str) -> list[float]:
    factors = [float(p) for p in points]
    if not factors or any(not math.isfinite(f) or f <= 0 for f in factors):
        raise ValueError(f"{what} must be positive numbers, got {list(points)}")
    if len(set(factors)) != len(factors):
        raise ValueError(f"{what} repeat a value: {list(points)}")
    return sorted(factors)


# -- the synthetic sweep ----------------------------------------------------------------------------
def density_sweep_configs(
    profile: str,
    points: Sequence[float] | None = None,
    *overrides: str,
    knob: str = "n_items",
    encoders: Sequence[str] = SWEEP_ENCODERS,
    fusion: str = "gate",
) -> SweepGrid:
    """The density sweep on the synthetic catalog: (point, encoder) -> `RunConfig` (SASRec).

    `points` are sparsity factors (default `DEFAULT_POINTS[profile]`): with ``knob="n_items"``
    the catalog has ``factor x`` the profile's items (users and sequence lengths unchanged),
    with ``knob="n_users"`` it has ``1/factor`` of the users. Interactions per item fall
    roughly by the factor; `point_statistics` measures them. Points come back densest first.
    `overrides` (dotted) apply to every row before the point's own settings: an override of the
    swept knob sets the value that factor 1 stands for (``data.synth.n_users=150``). With
    ``knob="n_items"`` a point may have its own budget for every row (`POINT_BUDGETS`) and the
    ID row its searched setting (`ID_SETTINGS`); the caller's overrides win over both.
    """
    _check_profile(profile)
    if knob not in SWEEP_KNOBS:
        raise ValueError(f"knob={knob!r}; choose one of {SWEEP_KNOBS}")
    factors = _sorted_factors(points if points is not None else DEFAULT_POINTS[profile],
                              "sweep points")
    def base_with(*own: str) -> RunConfig:  # the point's own budget and setting go first
        return profile_config(profile).override("data.source=synthetic", "model.sequence=sasrec",
                                                *own, *overrides)

    base = base_with()
    base_value = getattr(base.data.synth, knob)
    # the point's budget and the ID row's own setting where it was searched (n_items only: the
    # searches ran on that knob); the caller's overrides still win over them
    tuned = ID_SETTINGS.get(profile, {}) if knob == "n_items" else {}
    searched = ID_SEARCHES.get(profile, {}) if knob == "n_items" else {}
    budgets = POINT_BUDGETS.get(profile, {}) if knob == "n_items" else {}
    grid = SweepGrid("density sweep", ("point", "encoder"))
    grid.searches = {}
    for factor in factors:
        value = max(1, round(base_value * factor if knob == "n_items" else base_value / factor))
        label = f"{value:,} {knob[2:]}"
        if label in grid.points:
            raise ValueError(f"sweep points {list(factors)} give the same {knob}={value}")
        grid.points[label] = {"factor": factor, "knob": knob, "value": value,
                              "dataset": "synthetic"}
        for enc in encoders:
            own = budgets.get(factor, ()) + (tuned.get(factor, ()) if enc == "IDSR" else ())
            grid[label, enc] = (base_with(*own) if own else base).override(
                *_encoder_settings(enc, fusion), f"data.synth.{knob}={value}",
                f"name=xo-{knob[2:]}{value}-{enc.lower()}")
            grid.searches[label, enc] = (searched.get(factor, NOT_SEARCHED) if enc == "IDSR"
                                         else NOT_SEARCHED)
    return grid


# -- the sweep on real data -----------------------------------------------------------------------
def subsample_interactions(
    interactions: pd.DataFrame, fraction: float, method: str = "recent", seed: int = 0,
    min_interactions: int = 5,
) -> tuple[pd.DataFrame, dict]:
    """Keep part of a data set's interactions (see `SUBSAMPLE_METHODS`); returns the kept rows
    (input order) and what was done (for ``meta.json``).

    ``recent``: per user the last ``max(min_interactions, ceil(fraction x n))`` interactions by
    timestamp (file order breaks ties, as `build_sequences` does); no randomness, `seed` unused.
    ``users``: ``round(fraction x eligible)`` users drawn with `seed`, all their interactions.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction={fraction!r} must be in (0, 1]")
    if method not in SUBSAMPLE_METHODS:
        raise ValueError(f"method={method!r}; choose one of {sorted(SUBSAMPLE_METHODS)}")
    info = {"fraction": float(fraction), "method": method, "rule": SUBSAMPLE_METHODS[method],
            "min_interactions": int(min_interactions),
            "interactions_before": int(len(interactions))}
    if method == "users":
        counts = interactions["user"].value_counts()
        eligible = int((counts >= min_interactions).sum())
        kept, sampled = sample_users(interactions, max(1, round(fraction * eligible)), seed,
                                     min_interactions=min_interactions)
        info.update(seed=int(seed), sampling=sampled)
    else:
        df = interactions[["user", "timestamp"]].copy()
        df["order"] = np.arange(len(df))
        df = df.sort_values(["user", "timestamp", "order"], kind="stable")
        n = df.groupby("user", sort=False)["order"].transform("size").to_numpy()
        from_end = df.groupby("user", sort=False).cumcount(ascending=False).to_numpy()
        keep_n = np.maximum(min_interactions, np.ceil(fraction * n - 1e-9)).astype(np.int64)
        keep = np.zeros(len(df), dtype=bool)
        keep[df["order"].to_numpy()] = from_end < keep_n
        kept = interactions[keep].reset_index(drop=True)
    info["interactions_after"] = int(len(kept))
    return kept, info


def subsampled_dataset(data: DataConfig, fraction: float, method: str = "recent",
                       seed: int = 0) -> str:
    """The folder (relative to the project home when under it) of `data`'s data set subsampled
    by `subsample_interactions`, written under ``data.cache_dir`` on first use and reused after:
    its name holds the source's fingerprint, the method, the fraction and the seed. The image
    store is shared by a hard link where possible (item rows keep their image rows)."""
    raw = load_dataset(dataset_root(data))
    seed_tag = f"-s{seed}" if method == "users" else ""
    name = (f"subsample-{raw.meta.get('name', raw.root.name)}-{raw.fingerprint()[:8]}-"
            f"{method}-{fraction:g}{seed_tag}")
    rel = os.path.join(data.cache_dir, name)
    root = resolve(rel)
    if not (root / "meta.json").is_file():
        kept, info = subsample_interactions(raw.interactions, fraction, method, seed,
                                            data.min_user_interactions)
        items = raw.items[raw.items["item"].isin(kept["item"].unique())]
        images = None
        if raw.image_path is not None:  # write_dataset moves the file it is given: a link
            images = root.parent / f".{name}.images-{uuid.uuid4().hex[:8]}.npy"
            root.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(raw.image_path, images)
            except OSError:
                shutil.copyfile(raw.image_path, images)
        meta = {"name": f"{raw.meta.get('name', raw.root.name)} ({method} {fraction:g})",
                "source": "subsample", "subsample": {**info, "of": str(raw.root.name),
                                                     "source_fingerprint": raw.fingerprint()}}
        try:
            write_dataset(root, kept, items, images, meta, overwrite=True)
        finally:
            if images is not None and images.exists():
                images.unlink()
    return rel if not os.path.isabs(data.cache_dir) else str(root)


def subsample_sweep_configs(
    profile: str,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    *overrides: str,
    dataset: str = "movielens-100k",
    data_path: str | None = None,
    method: str = "recent",
    seed: int = 0,
    encoders: Sequence[str] | None = None,
    fusion: str = "gate",
) -> SweepGrid:
    """The density sweep on a real data set: (point, encoder) -> `RunConfig` (SASRec), one point
    per kept fraction of its interactions (`subsample_interactions`), densest first.

    `dataset` is a data source (``movielens-100k``, or ``path`` with `data_path`). Fraction 1 is
    the data set itself (the same runs as notebook 03's); other points are written once under
    the data cache and trained with ``data.source=path``. `encoders` default: IDSR and MMSR-T,
    plus MMSR-V and MMSR when the data set has images.
    """
    _check_profile(profile)
    fracs = sorted(_sorted_factors(fractions, "fractions"), reverse=True)
    if fracs[0] > 1.0:
        raise ValueError(f"fractions must be in (0, 1], got {list(fractions)}")
    source = [f"data.source={dataset}"] + ([f"data.path={data_path}"] if data_path else [])
    base = profile_config(profile).override(*source, "model.sequence=sasrec")
    data = base.resolved().data
    if encoders is None:
        has_images = load_dataset(dataset_root(data)).image_path is not None
        encoders = SWEEP_ENCODERS if has_images else TEXT_ONLY_ENCODERS
    grid = SweepGrid("subsample sweep", ("point", "encoder"))
    what = "users" if method == "users" else "interactions"
    for f in fracs:
        label = f"{f:.1%} of {what}".replace(".0%", "%")
        point = base
        if f < 1.0:
            point = base.override("data.source=path",
                                  f"data.path={subsampled_dataset(data, f, method, seed)}")
        grid.points[label] = {"factor": 1.0 / f, "fraction": f, "method": method,
                              "dataset": dataset if not data_path else data_path}
        for enc in encoders:
            grid[label, enc] = point.override(
                *_encoder_settings(enc, fusion),
                f"name=xo-{dataset}-{method}{f:g}-{enc.lower()}", *overrides)
    return grid


# -- what each point is -------------------------------------------------------------------------
def point_statistics(configs: SweepGrid) -> pd.DataFrame:
    """Per point, measured on the data the runs train on: users, items, interactions,
    interactions per item (all and training part only), the median item's interactions, the
    share of cold items and of test users whose test item is cold."""
    rows, seen = [], set()
    for (point, _), cfg in configs.items():
        if point in seen:
            continue
        seen.add(point)
        data = load_data(cfg.resolved().data)
        st = dataset_statistics(data)
        counts = np.bincount(np.concatenate(data.seqs), minlength=data.n_items + 1)[1:]
        targets = data.eval_set("test").targets
        rows.append({
            "point": point, "users": st["users"], "items": st["items"],
            "interactions": st["interactions"], "avg_seq_len": st["avg_seq_len"],
            "interactions_per_item": st["interactions_per_item"],
            "train_per_item": float(data.train_counts[1:].mean()),
            "median_per_item": float(np.median(counts)),
            "cold_items_%": 100.0 * float(data.cold_items[1:].mean()),
            "cold_test_users_%": 100.0 * float(data.cold_items[targets].mean()),
            **{k: v for k, v in configs.points[point].items() if k != "dataset"},
        })
    return pd.DataFrame(rows).set_index("point")


# -- warm / cold from stored ranks ----------------------------------------------------------------
def split_ranks(store: ResultsStore, record: RunRecord) -> dict[str, np.ndarray]:
    """Per-user 0-based test ranks of a stored run split by its data's cold items: ``test``
    (every user), ``cold_test`` (the test item is cold) and ``warm_test`` (it is not), in
    evaluation order. Nothing is retrained: the ranks are the stored ones."""
    ranks = store.ranks(record.config_hash).get("test")
    if ranks is None:
        raise KeyError(f"run {record.name} [{record.config_hash}] has no stored test ranks; "
                       "run it again")
    data = load_data(record.run_config().resolved().data)
    targets = data.eval_set("test").targets
    if len(targets) != len(ranks):
        raise ValueError(f"run {record.name} [{record.config_hash}] stored {len(ranks)} test "
                         f"ranks but its data has {len(targets)} test users: other data")
    cold = data.cold_items[targets]
    return {"test": ranks, "cold_test": ranks[cold], "warm_test": ranks[~cold]}


def split_metrics(store: ResultsStore, record: RunRecord, ks: Sequence[int] = (10,)
                  ) -> dict[str, dict[str, float]]:
    """HR@K / NDCG@K (percent) of every split of `split_ranks`; an empty split gives {}."""
    return {s: metrics_from_ranks(r, ks) if len(r) else {}
            for s, r in split_ranks(store, record).items()}


def per_user_matrix(store: ResultsStore, runs: Sequence[RunRecord], split: str = "test",
                    metric: str = "HR@10") -> np.ndarray:
    """[seeds, users] per-user `metric` of one row on one `split_ranks` split."""
    values = [per_user(split_ranks(store, r)[split], metric) for r in runs]
    if len({len(v) for v in values}) != 1:
        raise ValueError(f"the seeds of {runs[0].name} were evaluated on different users")
    return np.vstack(values) if values else np.zeros((0, 0))


# -- the table ------------------------------------------------------------------------------------
def sweep_table(store: ResultsStore, results: Mapping[Hashable, Sequence[RunRecord]],
                configs: SweepGrid, stats: pd.DataFrame,
                metrics: Sequence[str] = METRICS) -> pd.DataFrame:
    """One row per (point, encoder) that ran: interactions per item, mean and std over seeds of
    each metric on each split (overall / cold / warm) with its user count, the best epochs,
    how many seeds converged, the cost (wall seconds per run, seconds per epoch), and the
    row's setting with where it was chosen (``searched``)."""
    searches = getattr(configs, "searches", None)  # None: a grid that records no searches
    ks = sorted({int(m.split("@")[1]) for m in metrics})
    rows = []
    for key in configs:
        runs = list(results.get(key, []))
        if not runs:
            continue
        point, enc = key
        per_run = [split_metrics(store, r, ks) for r in runs]
        row: dict = {"point": point, "encoder": enc,
                     "interactions_per_item": float(stats.loc[point, "interactions_per_item"])}
        for name, split in SPLITS.items():
            row[f"{name} users"] = len(split_ranks(store, runs[0])[split])
            for m in metrics:
                vals = [pr[split].get(m, math.nan) for pr in per_run]
                row[f"{name} {m}"] = float(np.mean(vals))
                row[f"{name} {m} std"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else math.nan
        best = [int(r.extra.get("best_epoch") or 0) for r in runs]
        per_epoch = [h.get("train_seconds", math.nan) for r in runs for h in r.history]
        row.update({
            "seeds": len(runs),
            "best epochs": "/".join(map(str, best)),
            "best epoch": float(np.mean(best)),
            "best epoch std": float(np.std(best, ddof=1)) if len(best) > 1 else math.nan,
            "epochs run": float(np.mean([r.extra.get("epochs_run") or 0 for r in runs])),
            "budget": int(runs[0].config["train"]["epochs"] or 0),
            "converged": f"{sum(bool(r.extra.get('converged')) for r in runs)}/{len(runs)}",
            "wall s": float(np.mean([r.wall_seconds() for r in runs])),
            "wall s std": float(np.std([r.wall_seconds() for r in runs],
                                       ddof=1)) if len(runs) > 1 else math.nan,
            "s per epoch": float(np.nanmean(per_epoch)) if per_epoch else math.nan,
            "setting": describe_setting(configs[key]),
            "searched": ("the profile's setting" if searches is None
                         else searches.get(key, NOT_SEARCHED)),
        })
        rows.append(row)
    return pd.DataFrame(rows).set_index(["point", "encoder"])


def sweep_wide(table: pd.DataFrame, split: str = "overall", metric: str = "HR@10"
               ) -> pd.DataFrame:
    """Points as rows (with interactions per item), encoders as columns: one metric on one
    split, in the layout of the paper's Table IV."""
    col = f"{split} {metric}"
    wide = table[col].unstack("encoder")
    order = list(dict.fromkeys(table.index.get_level_values(0)))
    encs = [e for e in SWEEP_ENCODERS if e in wide.columns]
    wide = wide.reindex(index=order, columns=encs)
    wide.insert(0, "per item", table["interactions_per_item"].groupby(level=0).first()
                .reindex(order))
    wide.insert(1, "users", table[f"{split} users"].groupby(level=0).first().reindex(order))
    wide.columns.name = None
    return wide


# -- the crossover estimator ----------------------------------------------------------------------
@dataclass
class PointDiff:
    """One density point: per-user metric [seeds, users] of the content row (`a`) and the ID row
    (`b`) on the same users, seed i of one paired with seed i of the other."""

    label: str
    x: float  # interactions per item
    a: np.ndarray
    b: np.ndarray
    converged: bool = True


@dataclass(kw_only=True)
class PointTest(PairedTest):
    """Content vs IDs at one density point: the paired test of the seed-averaged metric over
    users, where the point sits, and the direction a claim may take there."""

    label: str
    x: float  # interactions per item
    converged: bool
    sign: int  # +1 content significantly ahead, -1 IDs significantly ahead, 0 no claim


@dataclass
class Crossing:
    """Where the mean difference crosses 0 between two significant points of opposite sign."""

    x: float  # interactions per item at the crossing (point estimate)
    ci_low: float  # bootstrap 95% interval (over seeds and users)
    ci_high: float
    share: float  # share of bootstrap replicates that cross in the same direction
    bracket: tuple[float, float]  # the significant points on either side (sparser, denser)
    content_ahead_below: bool  # content ahead at the sparser side (the expected direction)


@dataclass
class CrossoverEstimate:
    content: str
    baseline: str
    split: str
    metric: str
    points: list[PointTest]
    crossings: list[Crossing] = field(default_factory=list)
    n_boot: int = N_BOOTSTRAP

    def table(self) -> pd.DataFrame:
        """Per point: means, difference with its 95% CI, p value and the verdict."""
        rows = []
        for p in self.points:
            verdict = ("no claim (not converged)" if not p.converged else
                       f"{self.content} ahead" if p.sign > 0 else
                       f"{self.baseline} ahead" if p.sign < 0 else
                       "n.s. (seeds disagree)" if p.seeds_disagree else
                       "n.s. (Holm)" if p.correction_withholds else "n.s.")
            rows.append({"point": p.label, "per item": p.x, self.content: p.mean_a,
                         self.baseline: p.mean_b, "diff": p.diff, "ci_low": p.ci_low,
                         "ci_high": p.ci_high, "p": p.p_value, "p Holm": p.p_adjusted,
                         "users": p.n_users,
                         "seeds ci_low": p.seed_ci_low, "seeds ci_high": p.seed_ci_high,
                         "verdict": verdict})
        return pd.DataFrame(rows).set_index("point")

    def sentence(self) -> str:
        """The computed sentence about where `content` overtakes `baseline` (or that it does
        not in the swept range), under the significance rule."""
        who = f"[{SPLIT_TITLES.get(self.split, self.split)}, {self.metric}] " \
              f"{self.content} vs {self.baseline}: "
        if not self.points:
            return who + "no point to compare."
        lo, hi = self.points[0].x, self.points[-1].x
        span = f"{lo:.1f} to {hi:.1f} interactions per item"
        groups = {
            f"{self.content} significantly ahead": [p for p in self.points if p.sign > 0],
            f"{self.baseline} significantly ahead": [p for p in self.points if p.sign < 0],
            "no significant difference": [p for p in self.points if p.sign == 0 and p.converged],
            "no claim (not converged)": [p for p in self.points if not p.converged],
        }
        found = "; ".join(f"{label} at {', '.join(f'{p.x:.1f}' for p in pts)}"
                          for label, pts in groups.items() if pts) + " interactions per item."
        if not self.crossings:
            return who + found + f" No crossover in the swept range ({span})."
        texts = []
        for c in self.crossings:
            sparse, dense = (self.content, self.baseline) if c.content_ahead_below else (
                self.baseline, self.content)
            texts.append(
                f"{sparse} overtakes {dense} as items get sparser at {c.x:.1f} interactions per "
                f"item (bootstrap 95% interval {c.ci_low:.1f} to {c.ci_high:.1f}; {c.share:.0%} "
                f"of {self.n_boot} replicates cross), between the significant points "
                f"{c.bracket[0]:.1f} and {c.bracket[1]:.1f}")
        return who + found + " Crossover: " + "; ".join(texts) + "."


def _zeros(logx: np.ndarray, d: np.ndarray, direction: int) -> list[float]:
    """log-x of every zero of the piecewise-linear curve (logx, d) where it goes from the sign
    `direction` to its opposite with increasing x (a zero at a point counts once)."""
    out = []
    for i in range(len(d) - 1):
        d0, d1 = d[i], d[i + 1]
        if d0 * direction > 0 and d1 * direction <= 0:
            t = d0 / (d0 - d1)
            out.append(float(logx[i] + t * (logx[i + 1] - logx[i])))
    return out


def estimate_crossover(
    points: Sequence[PointDiff], content: str = "MMSR", baseline: str = "IDSR",
    split: str = "overall", metric: str = "HR@10", n_boot: int = N_BOOTSTRAP, seed: int = 0,
    alpha: float = ALPHA,
) -> CrossoverEstimate:
    """Per-point paired tests and the crossing of content - IDs in log(interactions per item).

    A point's sign counts only when both rows converged and the Wilcoxon test over users (of
    the seed-averaged metric, `significance.seeded_test`) has p < `alpha` with the mean
    difference's CI excluding zero, and the CI over seeds and users excludes zero too where
    there are two seeds or more (`PairedTest.supports_a_claim`), the p being Holm's over the
    sweep's converged points (one family: a crossing read off many points is a list of claims,
    and with six points a chance sign somewhere is likely). A crossing is
    claimed between consecutive significant points of opposite sign; its location is the zero
    of the mean difference interpolated linearly in log x, and its interval the 2.5-97.5%
    percentiles of that zero over `n_boot` replicates that resample seeds (paired by index) and
    users at every point; a replicate's zero is the one of the same direction nearest the
    estimate, anywhere in the swept range.
    """
    pts = sorted(points, key=lambda p: p.x)
    if any(p.x <= 0 for p in pts):
        raise ValueError("interactions per item must be positive (log axis)")
    if len({p.x for p in pts}) != len(pts):
        raise ValueError("two points have the same density")
    raw = []
    for p in pts:
        a, b = np.atleast_2d(p.a), np.atleast_2d(p.b)
        if a.shape != b.shape or a.size == 0:
            raise ValueError(f"point {p.label}: content {a.shape} and baseline {b.shape} must "
                             "be the same non-empty [seeds, users]")
        raw.append(seeded_test(a, b, metric))  # as `significance.compare`: seeds count
    adjust([t for t, p in zip(raw, pts, strict=True) if p.converged])
    tests = []
    for p, t in zip(pts, raw, strict=True):
        sign = int(np.sign(t.diff)) if (t.supports_a_claim(alpha) and p.converged) else 0
        tests.append(PointTest(**vars(t), label=p.label, x=p.x, converged=p.converged,
                               sign=sign))
    est = CrossoverEstimate(content, baseline, split, metric, tests, n_boot=n_boot)
    sig = [i for i, t in enumerate(tests) if t.sign != 0]
    brackets = [(i, j) for i, j in zip(sig, sig[1:], strict=False)
                if tests[i].sign != tests[j].sign]
    if not brackets:
        return est
    logx = np.log([t.x for t in tests])
    mean = np.array([t.diff for t in tests])
    boot = _bootstrap_curves(pts, n_boot, seed)
    for i, j in brackets:
        direction = tests[i].sign  # the significant sign on the sparser side
        zs = [z for z in _zeros(logx, mean, direction) if logx[i] <= z <= logx[j]]
        z_hat = float(np.mean(zs))
        reps = []
        for curve in boot:
            zr = _zeros(logx, curve, direction)
            if zr:
                reps.append(min(zr, key=lambda z: abs(z - z_hat)))
        lo, hi = (np.percentile(reps, [2.5, 97.5]) if reps else (math.nan, math.nan))
        est.crossings.append(Crossing(
            float(np.exp(z_hat)), float(np.exp(lo)), float(np.exp(hi)), len(reps) / n_boot,
            (float(tests[i].x), float(tests[j].x)), content_ahead_below=direction > 0))
    return est


def _bootstrap_curves(points: Sequence[PointDiff], n_boot: int, seed: int) -> np.ndarray:
    """[n_boot, points] mean content - IDs differences, seeds and users resampled per point."""
    rng = np.random.default_rng(seed)
    out = np.empty((n_boot, len(points)))
    for k, p in enumerate(points):
        d = np.atleast_2d(p.a) - np.atleast_2d(p.b)
        s, u = d.shape
        for r in range(n_boot):
            seeds = rng.integers(0, s, size=s)
            weights = np.bincount(rng.integers(0, u, size=u), minlength=u)
            out[r, k] = float((d[seeds] @ weights).sum()) / (s * u)
    return out


def sweep_crossover(
    store: ResultsStore, results: Mapping[Hashable, Sequence[RunRecord]], configs: SweepGrid,
    stats: pd.DataFrame, content: str = "MMSR", baseline: str = "IDSR", split: str = "overall",
    metric: str = "HR@10", n_boot: int = N_BOOTSTRAP, seed: int = 0,
) -> CrossoverEstimate:
    """`estimate_crossover` on a sweep's stored runs: every point where both rows ran and the
    split has users (a dense catalog can have no cold test item)."""
    pts = []
    for point in configs.points:
        a_runs, b_runs = results.get((point, content)), results.get((point, baseline))
        if not a_runs or not b_runs:
            continue
        a = per_user_matrix(store, a_runs, SPLITS[split], metric)
        b = per_user_matrix(store, b_runs, SPLITS[split], metric)
        if a.shape[1] == 0:
            continue
        if a.shape[0] != b.shape[0]:
            raise ValueError(f"{point}: {content} has {a.shape[0]} seeds, {baseline} "
                             f"{b.shape[0]}; run both with the same seeds")
        pts.append(PointDiff(point, float(stats.loc[point, "interactions_per_item"]), a, b,
                             converged(a_runs) and converged(b_runs)))
    return estimate_crossover(pts, content, baseline, split, metric, n_boot, seed)


# -- the paper's data sets ------------------------------------------------------------------------
def paper_datasets() -> pd.DataFrame:
    """The paper's four data sets: Table I sizes, interactions (= users x avg., derived) and
    interactions per item, with their SASRec HR@10 for IDSR / MMSR-T / MMSR-V / MMSR (Table IV)
    and on cold items (Table VIII), and MMSR's relative gap to IDSR (the paper's numbers,
    single runs, no test)."""
    rows = []
    for name, t in paper_table1().iterrows():
        row = {"dataset": name, "users": int(t["users"]), "items": int(t["items"]),
               "cold": int(t["cold"]), "avg_seq_len": float(t["avg_seq_len"]),
               "types": t["type"], "interactions (derived)": int(t["interactions"]),
               "interactions_per_item": float(t["interactions_per_item"])}
        iv = paper_wide("IV", name)
        iv = iv[iv["group"] == "SASRec"].set_index("row")["HR@10"]
        viii = paper_wide("VIII", name).set_index("row")["HR@10"]
        for enc in SWEEP_ENCODERS:
            row[f"overall {enc}"] = float(iv[enc])
            row[f"cold {enc}"] = float(viii["SASRec" if enc == "IDSR" else enc])
        row["overall MMSR vs IDSR"] = relative_improvement(row["overall MMSR"],
                                                           row["overall IDSR"])
        row["overall MMSR-T vs IDSR"] = relative_improvement(row["overall MMSR-T"],
                                                             row["overall IDSR"])
        rows.append(row)
    return pd.DataFrame(rows).set_index("dataset").sort_values("interactions_per_item",
                                                               ascending=False)


def with_paper_rows(wide: pd.DataFrame, split: str = "overall", metric: str = "HR@10"
                    ) -> pd.DataFrame:
    """`sweep_wide` with the paper's SASRec rows of its four data sets appended (HR@10: Table
    IV overall, Table VIII cold), each at its density; the paper has no warm split and no
    overall NDCG@10 for these rows, so nothing is appended then."""
    if metric != "HR@10" or split not in ("overall", "cold"):
        return wide
    paper = paper_datasets()
    rows = pd.DataFrame({enc: paper[f"{split} {enc}"] for enc in SWEEP_ENCODERS})
    rows.insert(0, "per item", paper["interactions_per_item"])
    rows.index = [f"paper {d}" for d in paper.index]
    ours = wide.copy()
    ours.index = [f"ours {p}" for p in ours.index]
    return pd.concat([ours, rows])


def sweep_report(table: pd.DataFrame, estimate: CrossoverEstimate | None = None,
                 split: str = "overall", metric: str = "HR@10") -> pd.DataFrame:
    """The table a notebook shows for one split and metric: our points (`sweep_wide`), the
    paired verdict of the estimate's content row vs IDs at each point, then the paper's rows
    at their densities (`with_paper_rows`) with their untested relative gap."""
    wide = sweep_wide(table, split, metric)
    col = None
    if estimate is not None:
        col = f"{estimate.content} vs {estimate.baseline}"
        at = {p.label: p for p in estimate.points}
        wide[col] = [verdict_text(at[p]) if p in at else "-" for p in wide.index]
    out = with_paper_rows(wide, split, metric)
    if col is not None and len(out) > len(wide):
        paper = paper_datasets()
        for name in paper.index:
            a, b = paper.loc[name, f"{split} {estimate.content}"], paper.loc[
                name, f"{split} {estimate.baseline}"]
            out.loc[f"paper {name}", col] = f"{relative_improvement(a, b)} (one run, untested)"
    out["per item"] = out["per item"].astype(float).round(1)
    return out.drop(columns=["users"]).rename(columns={"per item": "interactions/item"})


def p_text(p: float) -> str:
    """A p value as the docs write it: one significant digit below 0.001 (``2e-5``), two
    above (``0.0068``, ``0.12``)."""
    if p < 1e-3:
        mantissa, exp = f"{p:.0e}".split("e")
        return f"{mantissa}e{int(exp)}"
    return f"{p:.2g}"


def verdict_text(point: PointTest) -> str:
    """One comparison at one point, content's view: ``ahead +1.28 (p = 2e-5)``, ``behind``,
    ``n.s.`` (``, seeds disagree`` where only the seeds' spread withholds the claim, ``, Holm
    0.09`` where only the correction over the sweep's points does), or ``no claim (not
    converged; ...)`` when a seed of either row did not converge. The p shown is the point's
    own; a claim stands on Holm's (`estimate_crossover`)."""
    diff, p = f"{point.diff:+.2f}", f"p = {p_text(point.p_value)}"
    if not point.converged:
        return f"no claim (not converged; {diff}, {p})"
    word = "ahead" if point.sign > 0 else "behind" if point.sign < 0 else "n.s."
    why = ""
    if point.sign == 0 and point.seeds_disagree:
        why = ", seeds disagree"
    elif point.sign == 0 and point.correction_withholds:
        why = f", Holm {p_text(point.p_adjusted)}"
    return f"{word} {diff} ({p}{why})"


def sweep_markdown(table: pd.DataFrame, estimates: Sequence[CrossoverEstimate],
                   splits: Sequence[str] = ("overall",), metric: str = "NDCG@10",
                   decimals: int = 2) -> str:
    """The sweep as docs/results_cpu.md shows it: one row per (point, split), each encoder's
    mean ± std over seeds (best of the row bold, second underlined, on the means), then the
    verdict of every estimate of that split and metric (`verdict_text`), so the page's tables
    are rendered from the store, not typed."""
    encs = [e for e in SWEEP_ENCODERS if e in table.index.get_level_values(1)]
    points = list(dict.fromkeys(table.index.get_level_values(0)))
    rows, means = [], []
    for split in splits:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose from {list(SPLITS)}")
        ests = [e for e in estimates if e.split == split and e.metric == metric]
        for point in points:
            first = table.loc[point].iloc[0]
            row = {"point": point}
            if len(splits) > 1:
                row["split"] = split
            else:
                row["per item"] = f"{float(first['interactions_per_item']):.1f}"
            row["users"] = int(first[f"{split} users"])
            mean = {}
            for enc in encs:
                if (point, enc) not in table.index:
                    row[enc] = "-"
                    continue
                m = float(table.loc[(point, enc), f"{split} {metric}"])
                sd = float(table.loc[(point, enc), f"{split} {metric} std"])
                mean[enc] = m
                row[enc] = f"{m:.{decimals}f}" + ("" if math.isnan(sd) else
                                                  f" ± {sd:.{decimals}f}")
            for est in ests:
                at = {p.label: p for p in est.points}
                row[f"{est.content} vs {est.baseline}"] = (
                    verdict_text(at[point]) if point in at else "-")
            rows.append(row)
            means.append(mean)
    frame = pd.DataFrame(rows).set_index("point")
    marks = best_marks(pd.DataFrame(means, index=frame.index, columns=encs), encs, "row",
                       decimals=decimals)
    for enc in encs:
        frame[enc] = [f"**{t}**" if m == "best" else f"<u>{t}</u>" if m == "second" else t
                      for t, m in zip(frame[enc], marks[enc], strict=True)]
    return to_markdown(frame, [], best="none", decimals=decimals)


def markdown_report(store: ResultsStore, results: Mapping[Hashable, Sequence[RunRecord]],
                    configs: SweepGrid, stats: pd.DataFrame, table: pd.DataFrame,
                    metrics: Sequence[str] = METRICS, baseline: str = "IDSR") -> str:
    """Every table docs/results_cpu.md gives for a sweep, per metric: overall, cold and warm
    (each content row vs `baseline`, paired per point) and where each content row crosses it."""
    contents = [e for e in SWEEP_ENCODERS if e != baseline
                and e in table.index.get_level_values(1)]
    parts = []
    for metric in metrics:
        ests = [sweep_crossover(store, results, configs, stats, enc, baseline, split, metric)
                for split in SPLITS for enc in contents]
        parts += [f"**Overall, test {metric}** (bold best, underline second):",
                  sweep_markdown(table, ests, ("overall",), metric),
                  f"**Cold and warm test items, {metric}**:",
                  sweep_markdown(table, ests, ("cold", "warm"), metric),
                  f"**Where content crosses {baseline}, {metric}**:",
                  to_markdown(crossover_summary(ests), [], best="none")]
    return "\n\n".join(parts) + "\n"


def crossover_summary(estimates: Sequence[CrossoverEstimate]) -> pd.DataFrame:
    """One row per estimate: where content crosses IDs (with interval and bootstrap share) or
    "none in the swept range", and the points where each side is significantly ahead."""
    rows = []
    for est in estimates:
        cr = est.crossings[0] if est.crossings else None
        rows.append({
            "comparison": f"{est.content} vs {est.baseline}", "split": est.split,
            "metric": est.metric,
            "crossover (per item)": f"{cr.x:.1f}" if cr else "none in the swept range",
            "95% interval": f"{cr.ci_low:.1f} to {cr.ci_high:.1f}" if cr else "-",
            "replicates crossing": f"{cr.share:.0%}" if cr else "-",
            "content ahead at": ", ".join(f"{p.x:.1f}" for p in est.points if p.sign > 0)
            or "-",
            "IDs ahead at": ", ".join(f"{p.x:.1f}" for p in est.points if p.sign < 0) or "-",
            "more crossings": len(est.crossings) - 1 if est.crossings else 0,
        })
    return pd.DataFrame(rows).set_index(["comparison", "split"])


# -- sentences ------------------------------------------------------------------------------------
def epoch_sentence(table: pd.DataFrame, content: str = "MMSR", baseline: str = "IDSR") -> str:
    """Epochs to the best validation per point: content vs IDs, called fewer/more only when
    the seeds' ranges do not overlap (a description of the runs, not a test)."""
    parts = []
    for point in dict.fromkeys(table.index.get_level_values(0)):
        if (point, content) not in table.index or (point, baseline) not in table.index:
            continue
        ea = [int(e) for e in table.loc[(point, content), "best epochs"].split("/")]
        eb = [int(e) for e in table.loc[(point, baseline), "best epochs"].split("/")]
        x = table.loc[(point, content), "interactions_per_item"]
        rel = ("fewer" if max(ea) < min(eb) else "more" if min(ea) > max(eb)
               else "overlapping")
        parts.append(f"{x:.1f}/item: {content} {np.mean(ea):.0f} vs {baseline} {np.mean(eb):.0f}"
                     f" ({rel})")
    return (f"Best epoch, {content} vs {baseline} (mean over seeds; 'fewer'/'more' only when "
            f"no seed overlaps): " + "; ".join(parts) + ".")


def _nearest(est: CrossoverEstimate, x: float) -> PointTest | None:
    if not est.points:
        return None
    best = min(est.points, key=lambda p: abs(math.log(p.x / x)))
    return best if abs(math.log(best.x / x)) <= math.log(MATCH_FACTOR) else None


def _verdict(p: PointTest, est: CrossoverEstimate) -> str:
    if not p.converged:
        return "no claim (not converged)"
    if p.sign == 0:
        why = (" over the users, but the seeds disagree" if p.seeds_disagree else
               f" alone, Holm p={p.p_adjusted:.2g} over the sweep's {p.family} points"
               if p.correction_withholds else "")
        return f"no significant difference (p={p.p_value:.2g}{why})"
    better = est.content if p.sign > 0 else est.baseline
    holm = "" if math.isnan(p.p_adjusted) else f", Holm p={p.p_adjusted:.2g}"
    return f"{better} ahead ({p.diff:+.2f} points, p={p.p_value:.2g}{holm})"


def conclusion(estimate: CrossoverEstimate, paper: pd.DataFrame | None = None) -> list[str]:
    """The notebook's conclusion, every sentence computed: where content overtakes IDs on this
    catalog; where the paper's four data sets sit on the same axis (and what this catalog says
    at their density); what that means for the paper's claim that MMSR beats IDSR."""
    paper = paper_datasets() if paper is None else paper
    out = [estimate.sentence()]
    c, b = estimate.content, estimate.baseline
    at = {}
    for name, row in paper.iterrows():
        x = float(row["interactions_per_item"])
        p = _nearest(estimate, x)
        if p is None:
            at[name] = None
            out.append(f"{name} ({x:.1f} interactions per item) lies outside the swept range: "
                       "no claim at its density.")
            continue
        place = ""
        for cr in estimate.crossings:
            ahead = c if cr.content_ahead_below else b
            other = b if cr.content_ahead_below else c
            if x < cr.ci_low:
                place = f"; it is sparser than the crossover's interval, the side where {ahead} " \
                        "leads"
            elif x > cr.ci_high:
                place = f"; it is denser than the crossover's interval, the side where {other} " \
                        "leads"
            else:
                place = "; it lies inside the crossover's interval"
        at[name] = p
        cols = (f"{estimate.split} {c}", f"{estimate.split} {b}")
        gap = (f"{c} vs {b} {relative_improvement(float(row[cols[0]]), float(row[cols[1]]))}, "
               "one run, untested" if all(k in row.index for k in cols)
               else "no such split in the paper")
        out.append(f"{name} ({x:.1f} interactions per item; the paper: {gap}): this catalog at "
                   f"{p.x:.1f} per item gives {_verdict(p, estimate)}{place}.")
    matched = {k: v for k, v in at.items() if v is not None}
    wins = [k for k, v in matched.items() if v.sign > 0]
    noclaim = [k for k, v in matched.items() if not v.converged]
    others = [k for k in matched if k not in wins and k not in noclaim]
    if matched and len(wins) == len(matched):
        out.append(f"At the densities of all {len(matched)} matched data sets this catalog also "
                   f"finds {c} significantly ahead of {b}: density alone would reproduce the "
                   "paper's main claim here.")
    elif matched:
        parts = []
        if others:
            parts.append(
                f"At the density of {', '.join(others)} this catalog does not find {c} "
                f"significantly ahead of {b}: density alone does not reproduce the paper's main "
                "claim there; its gains on those data sets would need another explanation "
                "(content that carries more of the user's choice, ID baselines trained on fewer "
                "windows, fine-tuned encoders), which this notebook does not test.")
        if wins:
            parts.append(f"At the density of {', '.join(wins)} it does find {c} significantly "
                         "ahead, as the paper reports.")
        if noclaim:
            parts.append(f"At the density of {', '.join(noclaim)} the runs did not converge: no "
                         "claim about the paper's result there.")
        out.append(" ".join(parts))
    return out


# -- figures --------------------------------------------------------------------------------------
def _density_axis(ax: plt.Axes) -> None:
    """Log x axis of interactions per item with plain-number ticks (1, 2, 5, 10, 20, ...)."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("interactions per item (log)")


def _paper_lines(ax: plt.Axes, paper: pd.DataFrame) -> None:
    for name, row in paper.iterrows():
        x = float(row["interactions_per_item"])
        ax.axvline(x, color="#999999", ls=":", lw=1)
        ax.annotate(name, (x, 1.0), xycoords=("data", "axes fraction"), rotation=90,
                    va="top", ha="right", fontsize=7, color="#666666")


def plot_crossover(
    table: pd.DataFrame, estimates: Mapping[str, CrossoverEstimate] | None = None,
    metric: str = "HR@10", reference: pd.DataFrame | None = None,
    paper: pd.DataFrame | None = None, title: str = "", reference_label: str = "MovieLens-100K",
) -> plt.Figure:
    """`metric` vs interactions per item (log x), one line per encoder with a mean +- std band
    over seeds, panels overall / cold / warm; the crossover of each panel's estimate (content -
    IDs = 0) with its bootstrap interval; the paper's data sets' densities as dotted lines;
    `reference` (a `sweep_table` of another data set, e.g. MovieLens-100K) as open markers."""
    paper = paper_datasets() if paper is None else paper
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.0))
    for ax, split in zip(axes, SPLITS, strict=True):
        for enc in SWEEP_ENCODERS:
            rows = table.xs(enc, level="encoder") if enc in table.index.get_level_values(1) \
                else None
            if rows is None or rows.empty:
                continue
            rows = rows.sort_values("interactions_per_item")
            x = rows["interactions_per_item"].to_numpy()
            m = rows[f"{split} {metric}"].to_numpy(dtype=float)
            s = np.nan_to_num(rows[f"{split} {metric} std"].to_numpy(dtype=float))
            ax.plot(x, m, marker="o", ms=4, color=COLOURS[enc], label=enc)
            ax.fill_between(x, m - s, m + s, color=COLOURS[enc], alpha=0.15, lw=0)
        if reference is not None:  # one dashed line of open squares per encoder (one legend entry)
            for enc in reference.index.get_level_values("encoder").unique():
                rows = reference.xs(enc, level="encoder").sort_values("interactions_per_item")
                ax.plot(rows["interactions_per_item"], rows[f"{split} {metric}"], ls="--",
                        lw=0.8, marker="s", ms=6, mfc="none", color=COLOURS.get(enc, "k"),
                        label=f"{enc}, {reference_label}" if split == "overall" else None)
        est = (estimates or {}).get(split)
        for cr in (est.crossings if est else []):
            if math.isfinite(cr.ci_low):
                ax.axvspan(cr.ci_low, cr.ci_high, color="#ffcc00", alpha=0.25, lw=0)
            ax.axvline(cr.x, color="#b8860b", lw=1.5,
                       label=f"{est.content} = {est.baseline}")
        _paper_lines(ax, paper)
        _density_axis(ax)
        ax.set_ylabel(f"test {metric} (%)")
        ax.set_title(SPLIT_TITLES[split])
    axes[0].legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_convergence(table: pd.DataFrame, title: str = "") -> plt.Figure:
    """Epochs to the best validation (left) and wall seconds per run (right, log) vs
    interactions per item, mean +- std over seeds, per encoder."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for enc in SWEEP_ENCODERS:
        if enc not in table.index.get_level_values(1):
            continue
        rows = table.xs(enc, level="encoder").sort_values("interactions_per_item")
        x = rows["interactions_per_item"].to_numpy()
        for ax, col in zip(axes, ("best epoch", "wall s"), strict=True):
            ax.errorbar(x, rows[col].to_numpy(dtype=float),
                        yerr=np.nan_to_num(rows[f"{col} std"].to_numpy(dtype=float)),
                        marker="o", ms=4, capsize=2, color=COLOURS[enc], label=enc)
    for ax, ylabel in zip(axes, ("best epoch (early stopping)", "wall seconds per run"),
                          strict=True):
        _density_axis(ax)
        ax.set_ylabel(ylabel)
    axes[0].yaxis.set_major_locator(MaxNLocator(integer=True))
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
