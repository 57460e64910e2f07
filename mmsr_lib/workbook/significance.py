"""Claims about differences: per-user metrics from stored ranks, seeds averaged, paired tests.

A table or a sentence may say that one row beats another only when

- both rows converged (best epoch not at the end of the budget) in every seed,
- and a paired test over the *same users* (per-user NDCG@10 averaged over the seeds) rejects
  "no difference" at `ALPHA`: the Wilcoxon signed-rank test, with a paired-bootstrap 95%
  confidence interval of the mean difference to say how large it is, which must exclude zero
  too (the reported gap is a mean; see `PairedTest.significant`).

Otherwise it says "no significant difference" (or that a row did not converge). The per-user
ranks come from the results store (`ResultsStore.ranks`), so nothing is retrained.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mmsr_lib.runs.store import ResultsStore, RunRecord

ALPHA = 0.05
N_BOOTSTRAP = 2000


def per_user(ranks: np.ndarray, metric: str = "NDCG@10") -> np.ndarray:
    """Per-user HR@K or NDCG@K in percent from 0-based ranks (one target per row)."""
    name, _, k = metric.partition("@")
    if name not in ("HR", "NDCG") or not k.isdigit():
        raise ValueError(f"metric {metric!r}: use HR@K or NDCG@K")
    r = np.asarray(ranks, dtype=np.float64)
    hit = r < int(k)
    if name == "HR":
        return hit * 100.0
    return np.where(hit, 1.0 / np.log2(r + 2.0), 0.0) * 100.0


def seed_average(store: ResultsStore, runs: Sequence[RunRecord], split: str = "test",
                 metric: str = "NDCG@10") -> np.ndarray:
    """Per-user `metric` averaged over the seeds of one row (the unit of a paired test)."""
    if not runs:
        raise ValueError("no runs to average")
    values = []
    for rec in runs:
        ranks = store.ranks(rec.config_hash).get(split)
        if ranks is None:
            raise KeyError(f"run {rec.name} [{rec.config_hash}] has no stored ranks for {split!r}"
                           "; it was stored before per-user ranks were kept: run it again")
        values.append(per_user(ranks, metric))
    lengths = {len(v) for v in values}
    if len(lengths) != 1:
        raise ValueError(f"the seeds of {runs[0].name} were evaluated on different users "
                         f"({sorted(lengths)}); their data differ")
    return np.mean(values, axis=0)


def claim_allowed(p_value: float, ci_low: float, ci_high: float, alpha: float = ALPHA) -> bool:
    """A difference may be claimed only when the test rejects at `alpha` *and* the CI of the
    mean difference excludes zero, so both support its direction (every paired comparison of
    the workbook: users here, items and users in `embeddings`, via `PairedDifference`)."""
    return p_value < alpha and not ci_low <= 0.0 <= ci_high


@dataclass
class PairedDifference:
    """A vs B on the same points (users, items or a density point's users): their means, the
    mean difference, its bootstrap 95% CI and the p value of a test of "no difference"; what
    every paired comparison of the workbook reports and `claim_allowed` reads."""

    mean_a: float
    mean_b: float
    diff: float
    ci_low: float
    ci_high: float
    p_value: float

    @property
    def significant(self) -> bool:
        """`supports_a_claim` at `ALPHA`."""
        return self.supports_a_claim(ALPHA)

    def supports_a_claim(self, alpha: float = ALPHA) -> bool:
        """`claim_allowed` for this comparison: a rank or permutation test is about where the
        differences sit, the reported gap is a mean; with many zero or few large differences
        (HR@K, cold users) the two can disagree."""
        return claim_allowed(self.p_value, self.ci_low, self.ci_high, alpha)


@dataclass(kw_only=True)
class PairedTest(PairedDifference):
    """A vs B on the same users (`paired_test`: Wilcoxon signed-rank p, bootstrap CI)."""

    metric: str
    n_users: int

    @property
    def tests_disagree(self) -> bool:
        """Wilcoxon rejects but the CI of the mean difference includes zero."""
        return self.p_value < ALPHA and not self.significant

    def __str__(self) -> str:
        return (f"{self.metric} {self.mean_a:.2f} vs {self.mean_b:.2f} ({self.diff:+.2f}, 95% CI "
                f"{self.ci_low:+.2f}..{self.ci_high:+.2f}, Wilcoxon p={self.p_value:.3g}, "
                f"{self.n_users} users)")


def paired_test(a: np.ndarray, b: np.ndarray, metric: str = "NDCG@10", seed: int = 0
                ) -> PairedTest:
    """Wilcoxon signed-rank test on per-user differences plus a paired-bootstrap CI."""
    from scipy.stats import wilcoxon

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"a paired test needs two equal-length 1-D arrays, got {a.shape} and "
                         f"{b.shape}")
    d = a - b
    p = 1.0 if not np.any(d) else float(wilcoxon(a, b, zero_method="wilcox").pvalue)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(d), size=(N_BOOTSTRAP, len(d)))
    boot = d[idx].mean(axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return PairedTest(float(a.mean()), float(b.mean()), float(d.mean()), float(lo), float(hi), p,
                      metric=metric, n_users=len(d))


def converged(runs: Sequence[RunRecord]) -> bool:
    """Every seed of the row stopped before the end of its budget (see FitResult.converged)."""
    return all(r.extra.get("converged", False) for r in runs if r.extra.get("epochs_run"))


def compare(store: ResultsStore, a: Sequence[RunRecord], b: Sequence[RunRecord],
            split: str = "test", metric: str = "NDCG@10") -> PairedTest:
    """The paired test of two rows of a grid (each a list of seed runs)."""
    return paired_test(seed_average(store, a, split, metric),
                       seed_average(store, b, split, metric), metric)


def verdict(test: PairedTest, name_a: str, name_b: str, converged_a: bool = True,
            converged_b: bool = True) -> str:
    """The one sentence a table may say about A vs B."""
    if not (converged_a and converged_b):
        which = " and ".join(n for n, c in ((name_a, converged_a), (name_b, converged_b))
                             if not c)
        return f"{name_a} vs {name_b}: no claim, {which} did not converge ({test})"
    if not test.significant:
        why = "; the mean difference's CI includes 0" if test.tests_disagree else ""
        return f"{name_a} vs {name_b}: no significant difference ({test}{why})"
    better, worse = (name_a, name_b) if test.diff > 0 else (name_b, name_a)
    order = "" if better == name_a else f"{name_a} vs {name_b}: "  # the numbers are A's, then B's
    return f"{better} beats {worse} ({order}{test})"


def summarize(runs: Sequence[RunRecord], split: str = "test",
              metrics: Sequence[str] = ("HR@10", "NDCG@10")) -> dict[str, float | str]:
    """Mean and std over seeds of each metric, the seeds count and how many converged."""
    out: dict[str, float | str] = {}
    for m in metrics:
        vals = [r.metrics.get(split, {}).get(m, math.nan) for r in runs]
        out[m] = float(np.mean(vals)) if vals else math.nan
        out[f"{m} std"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else math.nan
    trained = [r for r in runs if r.extra.get("epochs_run")]
    out["seeds"] = len(runs)
    out["converged"] = f"{sum(bool(r.extra.get('converged')) for r in trained)}/{len(trained)}" \
        if trained else "-"
    return out


def mean_std_cell(mean: float, std: float, decimals: int = 2) -> str:
    """'12.34 ± 0.56' (or just the mean for one seed)."""
    if math.isnan(mean):
        return "n/a"
    if math.isnan(std):
        return f"{mean:.{decimals}f}"
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def pairwise_table(store: ResultsStore, rows: dict, baseline: str, split: str = "test",
                   metric: str = "NDCG@10") -> pd.DataFrame:
    """Every row against `baseline`: difference, CI, p and the verdict sentence."""
    base = rows[baseline]
    out = []
    for label, runs in rows.items():
        if label == baseline:
            continue
        t = compare(store, runs, base, split, metric)
        out.append({"row": label, "vs": baseline, "diff": t.diff, "ci_low": t.ci_low,
                    "ci_high": t.ci_high, "p": t.p_value,
                    "verdict": verdict(t, str(label), str(baseline), converged(runs),
                                       converged(base))})
    return pd.DataFrame(out)


def claims(store: ResultsStore, results: dict, pairs: Sequence[tuple], split: str = "test",
           metric: str = "NDCG@10", names: dict | None = None) -> list[str]:
    """The verdict sentence of each (row A, row B) pair of a grid's results (label -> runs);
    pairs whose rows did not run (e.g. an optional encoder not installed) are left out."""
    def name(label: object) -> str:
        if names and label in names:
            return names[label]
        return " ".join(map(str, label)) if isinstance(label, tuple) else str(label)

    out = []
    for a, b in pairs:
        if a not in results or b not in results:
            continue
        t = compare(store, results[a], results[b], split, metric)
        out.append(verdict(t, name(a), name(b), converged(results[a]), converged(results[b])))
    return out
