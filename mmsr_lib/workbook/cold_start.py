"""Notebook 07 (paper Table VIII): IDSR vs MMSR-T / MMSR-V / MMSR on cold items, two protocols.

A cold item has fewer than ``data.cold_threshold`` occurrences in the training part.

* ``target`` (leak-free, the default of every run): the users whose held-out test target is cold.
  The Table IV runs already store these metrics as split ``cold_test`` and their per-user ranks,
  so this protocol needs nothing beyond notebook 03's runs.
* ``paper``: every prefix of a user's sequence that ends right before a cold item
  (`SequenceData.cold_eval_set(split, "paper")`). Most of these (prefix, target) pairs lie in
  the training part, where the model was trained to predict exactly that target after exactly
  that context: `exact_training_pairs` finds them and the tables show their share next to the
  result. These metrics are computed from the stored runs' trained weights (`load_trained`),
  never by training again.

Claims follow `significance`: per architecture, a paired Wilcoxon test over the cold test users
(per-user NDCG@10 averaged over the seeds) and converged runs, else "no significant difference"
or "no claim".
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from mmsr_lib.data.preprocess import EvalSet, SequenceData
from mmsr_lib.evaluate import evaluate_model, metrics_from_ranks
from mmsr_lib.runs import derived
from mmsr_lib.runs.runner import load_data
from mmsr_lib.runs.store import ResultsStore, RunRecord
from mmsr_lib.runs.trained import check_same_data, load_trained
from mmsr_lib.workbook.grids import TABLE4_COLUMNS
from mmsr_lib.workbook.paper_numbers import paper_wide
from mmsr_lib.workbook.significance import PairedTest, adjust, compare, converged, verdict

PROTOCOLS = {"target": "target (leak-free)", "paper": "paper sub-sequences"}
METRICS = ("HR@10", "NDCG@10")
PAPER_DATASETS = ("HM", "Amazon", "Bili", "Kwai")
# Table VIII's columns as paper_numbers stores them: (group, row) -> our Table IV column
PAPER_COLUMNS = {("IDSR", "SASRec"): "IDSR", ("MMSR", "MMSR-T"): "MMSR-T",
                 ("MMSR", "MMSR-V"): "MMSR-V", ("MMSR", "MMSR"): "MMSR"}


# -- the leak of the paper's protocol ------------------------------------------------------------
def _training_contexts(data: SequenceData) -> dict[tuple[int, int], list[tuple[int, ...]]]:
    """(user, target item) -> the contexts the model was trained to predict it from: every
    target slot of `SequenceData.train_windows` with the window's items before it."""
    inputs, targets, users = data.train_windows
    out: dict[tuple[int, int], list[tuple[int, ...]]] = {}
    for row, user in enumerate(users.tolist()):
        real = np.flatnonzero(targets[row] > 0)
        if not len(real):
            continue
        first = int(real[0])
        window = inputs[row].tolist()
        for j in real.tolist():
            key = (user, int(targets[row, j]))
            out.setdefault(key, []).append(tuple(window[first : j + 1]))
    return out


_LEAK_CACHE: dict[tuple[str, int], dict] = {}


def exact_training_pairs(data: SequenceData, eval_set: EvalSet) -> np.ndarray:
    """Boolean per row of `eval_set`: its (prefix, target) pair is an exact training pair.

    A row is one when the same user has a training slot with the same target whose context
    (the training window's items before it) is the end of the row's prefix: the model was
    trained to predict this target right after these items, i.e. the target's position lies
    in the part of the sequence the model was trained on. In the ``target`` protocol no row is
    (targets are held out); in the ``paper`` protocol every prefix inside the training part is.
    """
    key = (data.fingerprint(), id(data))
    if key not in _LEAK_CACHE:
        _LEAK_CACHE.clear()  # one data set at a time: the dict can be large
        _LEAK_CACHE[key] = _training_contexts(data)
    contexts = _LEAK_CACHE[key]
    out = np.zeros(len(eval_set), dtype=bool)
    for row in range(len(eval_set)):
        options = contexts.get((int(eval_set.users[row]), int(eval_set.targets[row])))
        if not options:
            continue
        inputs = eval_set.inputs[row]
        for ctx in options:
            n = len(ctx)
            if n <= len(inputs) and tuple(inputs[len(inputs) - n :].tolist()) == ctx:
                out[row] = True
                break
    return out


def leak_share(data: SequenceData, split: str = "test", mode: str = "paper") -> float:
    """Share (0..1) of the cold evaluation rows of `mode` that are exact training pairs."""
    cold = data.cold_eval_set(split, mode)
    return float(exact_training_pairs(data, cold).mean()) if len(cold) else math.nan


# -- cold metrics of stored runs -------------------------------------------------------------------
@dataclass
class ColdEval:
    """One trained model on one cold evaluation set: metrics (percent), per-row ranks, and
    which rows are exact training pairs (the leak)."""

    config_hash: str
    mode: str
    split: str
    metrics: dict[str, float]
    ranks: np.ndarray
    leaked: np.ndarray
    users: np.ndarray
    ks: tuple[int, ...]

    @property
    def n_rows(self) -> int:
        return len(self.ranks)

    @property
    def leak_share(self) -> float:
        return float(self.leaked.mean()) if self.n_rows else math.nan

    def metrics_on(self, leaked: bool) -> dict[str, float]:
        """Metrics on the leaked rows only (True) or on the others (False); NaN when empty."""
        rows = self.ranks[self.leaked == leaked]
        if not len(rows):
            return {f"{m}@{k}": math.nan for k in self.ks for m in ("HR", "NDCG")}
        return metrics_from_ranks(rows, self.ks)


def evaluate_cold(record: RunRecord, mode: str = "paper", split: str = "test",
                  device: torch.device | str = "cpu", allow_stale: bool = False,
                  store: ResultsStore | None = None) -> ColdEval:
    """A stored run's model (`load_trained`, no training) on the cold rows of `mode`. With the
    run's `store` the ranks are kept there (`runs.derived`) and read back where the weights
    are gone (another machine, `make figures`); the rows and the leak need the data alone."""
    if mode not in PROTOCOLS:
        raise ValueError(f"mode={mode!r}; choose one of {list(PROTOCOLS)}")
    cfg = record.run_config().resolved()
    data = load_data(cfg.data)
    check_same_data(record, data)
    cold = data.cold_eval_set(split, mode)
    if not len(cold):
        raise ValueError(f"run {record.name}: no cold {split} rows in {mode!r} mode (no item "
                         f"has fewer than {data.cold_threshold} training occurrences there)")

    def compute() -> dict[str, np.ndarray]:
        model, _ = load_trained(record, device, allow_stale)
        return {"ranks": evaluate_model(model, cold, cfg.eval.ks, cfg.eval.batch_size).ranks}

    ranks = derived.cached(store, record, f"cold_start.evaluate_cold mode={mode} split={split}",
                           __name__, compute)["ranks"]
    return ColdEval(record.config_hash, mode, split, metrics_from_ranks(ranks, cfg.eval.ks),
                    ranks, exact_training_pairs(data, cold), cold.users.copy(),
                    tuple(cfg.eval.ks))


def paper_mode_results(results: Mapping[Hashable, Sequence[RunRecord]], split: str = "test",
                       device: torch.device | str = "cpu",
                       store: ResultsStore | None = None) -> dict[Hashable, list[ColdEval]]:
    """`evaluate_cold` in the paper's protocol for every seed of every row of a grid (kept in
    and read from the runs' `store` when given)."""
    return {label: [evaluate_cold(r, "paper", split, device, store=store) for r in runs]
            for label, runs in results.items()}


def median_rank_over_seeds(ranks: Sequence[np.ndarray], rows: np.ndarray) -> float:
    """The median 1-based rank of `rows` (a boolean mask) per seed's 0-based `ranks`, averaged
    over seeds; NaN when no row is selected. Says whether a model memorised leaked pairs (a top
    rank) or ranks those targets like any other cold item (far down the catalog)."""
    rows = np.asarray(rows, dtype=bool)
    if not rows.any():
        return math.nan
    return float(np.mean([np.median(np.asarray(r)[rows]) + 1 for r in ranks]))


# -- tables ---------------------------------------------------------------------------------------
def _mean(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def table8(
    results: Mapping[tuple[str, str], Sequence[RunRecord]],
    paper_mode: Mapping[tuple[str, str], Sequence[ColdEval]],
    metrics: Sequence[str] = METRICS,
) -> pd.DataFrame:
    """Table VIII in the paper's layout for every architecture and both protocols.

    Index (setting, metric) with setting "<architecture> · <protocol>"; columns IDSR, MMSR-T,
    MMSR-V, MMSR (means over the seeds, percent), ``cold rows`` and ``exact training pairs
    (%)``. Target-protocol cells are the stored ``cold_test`` metrics.
    """
    archs = list(dict.fromkeys(a for a, _ in results))
    cols = [c for c in TABLE4_COLUMNS if any(k[1] == c for k in results)]
    rows = []
    for arch in archs:
        for mode, label in PROTOCOLS.items():
            n_rows, leak = math.nan, math.nan
            cells: dict[str, dict[str, float]] = {m: {} for m in metrics}
            for col in cols:
                if mode == "target":
                    runs = results.get((arch, col), [])
                    for m in metrics:
                        cells[m][col] = _mean([r.metrics.get("cold_test", {}).get(m, math.nan)
                                               for r in runs])
                    if runs and math.isnan(n_rows):
                        data = load_data(runs[0].run_config().resolved().data)
                        n_rows = runs[0].extra.get("n_cold_test", math.nan)
                        leak = 100.0 * leak_share(data, "test", "target")
                else:
                    evals = paper_mode.get((arch, col), [])
                    for m in metrics:
                        cells[m][col] = _mean([e.metrics[m] for e in evals])
                    if evals:
                        n_rows, leak = evals[0].n_rows, 100.0 * evals[0].leak_share
            for m in metrics:
                rows.append({"setting": f"{arch} · {label}", "metric": m, **cells[m],
                             "cold rows": n_rows, "exact training pairs (%)": leak})
    return pd.DataFrame(rows).set_index(["setting", "metric"])


def paper_table8(datasets: Sequence[str] = PAPER_DATASETS,
                 metrics: Sequence[str] = METRICS) -> pd.DataFrame:
    """The paper's Table VIII (SASRec) in the layout of `table8`: setting "paper · <data set>"."""
    rows = []
    for ds in datasets:
        wide = paper_wide("VIII", ds)
        for m in metrics:
            row: dict = {"setting": f"paper · {ds} (SASRec)", "metric": m}
            for (group, name), col in PAPER_COLUMNS.items():
                hit = wide[(wide["group"] == group) & (wide["row"] == name)]
                row[col] = float(hit[m].iloc[0]) if len(hit) else math.nan
            rows.append(row)
    return pd.DataFrame(rows).set_index(["setting", "metric"])


def with_paper(ours: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """Our Table VIII rows followed by the paper's, same columns (NaN where the paper has none)."""
    return pd.concat([ours, paper.reindex(columns=ours.columns)])


def leak_table(paper_mode: Mapping[tuple[str, str], Sequence[ColdEval]],
               metric: str = "HR@10") -> pd.DataFrame:
    """Paper protocol split by the leak: `metric` on all rows, on the exact training pairs and
    on the remaining rows, and the training pairs' median rank (`median_rank_over_seeds`), per
    architecture and column (means over seeds)."""
    rows = []
    for (arch, col), evals in paper_mode.items():
        if not evals:
            continue
        rows.append({
            "architecture": arch, "column": col, "rows": evals[0].n_rows,
            "exact training pairs": int(evals[0].leaked.sum()),
            f"{metric} all rows": _mean([e.metrics[metric] for e in evals]),
            f"{metric} training pairs": _mean([e.metrics_on(True)[metric] for e in evals]),
            f"{metric} other rows": _mean([e.metrics_on(False)[metric] for e in evals]),
            "median rank, training pairs": median_rank_over_seeds(
                [e.ranks for e in evals], evals[0].leaked),
        })
    return pd.DataFrame(rows).set_index(["architecture", "column"])


def ordering_series(table: pd.DataFrame, setting: str, metric: str = "HR@10") -> pd.Series:
    """One row of a `table8`/`paper_table8` frame as a Series over the four columns (for
    `report.agreement_sentence`)."""
    cols = [c for c in TABLE4_COLUMNS if c in table.columns]
    return table.loc[(setting, metric), cols].astype(float)


# -- sentences ------------------------------------------------------------------------------------
CLAIMS = (("MMSR-T", "IDSR"), ("MMSR-V", "IDSR"), ("MMSR", "IDSR"), ("MMSR-T", "MMSR-V"))


def cold_tests(store: ResultsStore, results: Mapping[tuple[str, str], Sequence[RunRecord]],
               metric: str = "NDCG@10") -> pd.DataFrame:
    """The paper's cold-start claims (each content column vs IDSR, MMSR-T vs MMSR-V) per
    architecture on the cold test users (target protocol): means, paired difference with its
    bootstrap CI, Wilcoxon p over the same users (per-user `metric` averaged over the seeds)
    and Holm's over the table's converged pairs, whether both rows converged, and the verdict
    the significance rule allows."""
    rows: list[dict] = []
    tested: list[tuple[dict, PairedTest, bool, bool]] = []  # (row, test, converged A, B)
    for arch in dict.fromkeys(a for a, _ in results):
        for a, b in CLAIMS:
            ra, rb = results.get((arch, a)), results.get((arch, b))
            if not ra or not rb:
                continue
            n_users = int(ra[0].extra.get("n_cold_test", 0) or 0)
            row = {"architecture": arch, "A": a, "B": b, "cold users": n_users,
                   "converged": bool(converged(ra) and converged(rb))}
            rows.append(row)
            if not n_users:
                row["verdict"] = f"{a} vs {b}: no claim, no cold test users"
                continue
            tested.append((row, compare(store, ra, rb, "cold_test", metric),
                           converged(ra), converged(rb)))
    # every architecture's claims are one family (the section's): Holm over the converged ones
    adjust([test for row, test, _, _ in tested if row["converged"]])
    for row, test, conv_a, conv_b in tested:
        row.update({f"{metric} A": test.mean_a, f"{metric} B": test.mean_b, "diff": test.diff,
                    "ci_low": test.ci_low, "ci_high": test.ci_high, "p": test.p_value,
                    "p Holm": test.p_adjusted,
                    "verdict": verdict(test, row["A"], row["B"], conv_a, conv_b)})
    return pd.DataFrame(rows)


def cold_verdicts(tests: pd.DataFrame, metric: str = "NDCG@10") -> dict[str, str]:
    """One sentence per architecture from `cold_tests`: every claim's verdict."""
    out = {}
    for arch, group in tests.groupby("architecture", sort=False):
        n = int(group["cold users"].iloc[0])
        out[str(arch)] = (f"{arch}, {n} cold test users, {metric} (paired Wilcoxon, seeds "
                          "averaged per user, Holm over the section's pairs): " + "; ".join(group["verdict"]) + ".")
    return out


def leak_sentence(paper_mode: Mapping[tuple[str, str], Sequence[ColdEval]], arch: str,
                  metric: str = "HR@10") -> str:
    """What the paper protocol measures for one architecture: the share of exact training
    pairs and each column's `metric` on them vs on the other rows (numbers, no claim)."""
    evals = {col: e for (a, col), e in paper_mode.items() if a == arch and e}
    if not evals:
        return f"{arch}: no paper-protocol evaluation."
    first = next(iter(evals.values()))[0]
    parts = []
    for col, es in evals.items():
        on = _mean([e.metrics_on(True)[metric] for e in es])
        off = _mean([e.metrics_on(False)[metric] for e in es])
        parts.append(f"{col} {on:.2f} on them vs {off:.2f} on the rest")
    return (f"{arch}, paper protocol: {first.n_rows} cold rows, {100 * first.leak_share:.1f}% "
            f"of them exact training pairs; {metric} (%): " + "; ".join(parts) + ".")


# -- figure ---------------------------------------------------------------------------------------
def plot_cold(table: pd.DataFrame, metric: str = "HR@10") -> plt.Figure:
    """Per architecture, `metric` of each column under both protocols (bars)."""
    settings = [s for s in dict.fromkeys(table.index.get_level_values(0))
                if not s.startswith("paper ·")]
    archs = list(dict.fromkeys(s.split(" · ")[0] for s in settings))
    cols = [c for c in TABLE4_COLUMNS if c in table.columns]
    fig, axes = plt.subplots(1, len(archs), figsize=(4.2 * len(archs), 3.4), squeeze=False)
    x = np.arange(len(cols))
    for ax, arch in zip(axes[0], archs, strict=True):
        for i, (mode, label) in enumerate(PROTOCOLS.items()):
            key = (f"{arch} · {label}", metric)
            vals = table.loc[key, cols].to_numpy(dtype=float) if key in table.index else \
                np.full(len(cols), np.nan)
            leak = table.loc[key, "exact training pairs (%)"] if key in table.index else math.nan
            name = label if mode == "target" else f"{label} ({leak:.0f}% training pairs)"
            ax.bar(x + (i - 0.5) * 0.4, vals, 0.4, label=name)
        ax.set_xticks(x, cols)
        ax.set_title(arch)
        ax.set_ylabel(f"cold {metric} (%)")
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig
