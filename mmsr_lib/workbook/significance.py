"""Claims about differences: per-user metrics from stored ranks, seeds averaged, paired tests.

A table or a sentence may say that one row beats another only when

- both rows converged (best epoch not at the end of the budget) in every seed,
- and a paired test over the *same users* (per-user NDCG@10 averaged over the seeds) rejects
  "no difference" at `ALPHA`: the Wilcoxon signed-rank test, with a paired-bootstrap 95%
  confidence interval of the mean difference to say how large it is, which must exclude zero
  too (the reported gap is a mean; see `PairedTest.significant`),
- and, when both rows have two seeds or more, the 95% interval of a bootstrap that resamples
  the seeds of each row as well as the users excludes zero too (`seed_and_user_ci`). The test
  over users asks whether *these trained models* differ on these users; a finding is about the
  *training recipes*, and a retrained seed can move a row by more than the users' noise: the
  verdicts at p 0.005-0.1 of three-seed rows were seen to flip when the same rows were
  retrained on another machine (docs/results_cpu.md, "Table IV re-trained on another VM"),
- and, when a section tests several pairs at once (`claims`, `family_tests`: a notebook cell's
  list of the paper's claims), the Wilcoxon p survives Holm's correction over the section's
  pairs whose rows converged (`holm`): with nine pairs at 0.05 the chance that one of nine
  no-difference pairs looks like a finding is about a third, not one in twenty.

Otherwise it says "no significant difference" (or that a row did not converge). The per-user
ranks come from the results store (`ResultsStore.ranks`), so nothing is retrained.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mmsr_lib.config import RunConfig
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
    return per_seed(store, runs, split, metric).mean(axis=0)


def per_seed(store: ResultsStore, runs: Sequence[RunRecord], split: str = "test",
             metric: str = "NDCG@10") -> np.ndarray:
    """Per-user `metric` of each seed of one row, [seeds, users] (`seed_and_user_ci` reads
    the seeds apart; `seed_average` is its mean)."""
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
    if len(lengths) != 1 or not all(same_evaluation_cases(runs[0], rec, split)
                                    for rec in runs[1:]):
        raise ValueError(f"the seeds of {runs[0].name} were evaluated on different users "
                         f"({sorted(lengths)} of them); their data differ")
    return np.stack(values)


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
    # the 95% CI over seeds and points (`seed_and_user_ci`), when both sides have two seeds or
    # more; NaN: not computed (one seed a side, or not from trained runs)
    seed_ci_low: float = math.nan
    seed_ci_high: float = math.nan
    # Holm's adjusted p over the `family` pairs a section tests together (`adjust`); NaN: this
    # test stands alone (family 1) and its own p decides
    p_adjusted: float = math.nan
    family: int = 1

    @property
    def significant(self) -> bool:
        """`supports_a_claim` at `ALPHA`."""
        return self.supports_a_claim(ALPHA)

    @property
    def p_claim(self) -> float:
        """The p a claim is judged by: Holm's adjusted p in a family, else the test's own."""
        return self.p_value if math.isnan(self.p_adjusted) else self.p_adjusted

    def supports_a_claim(self, alpha: float = ALPHA) -> bool:
        """`claim_allowed` for this comparison: a rank or permutation test is about where the
        differences sit, the reported gap is a mean; with many zero or few large differences
        (HR@K, cold users) the two can disagree. And the difference holds across seeds, and
        survives the correction for the other pairs of its section."""
        return claim_allowed(self.p_claim, self.ci_low, self.ci_high, alpha) and \
            self.holds_across_seeds

    @property
    def seeds_tested(self) -> bool:
        """Both sides had two seeds or more, so the seeds' spread was part of the test."""
        return not (math.isnan(self.seed_ci_low) or math.isnan(self.seed_ci_high))

    @property
    def holds_across_seeds(self) -> bool:
        """The seeds-and-points CI excludes zero (true when it could not be computed)."""
        return not self.seeds_tested or not self.seed_ci_low <= 0.0 <= self.seed_ci_high

    @property
    def tests_disagree(self) -> bool:
        """The test rejects but the CI of the mean difference includes zero."""
        return self.p_value < ALPHA and not claim_allowed(self.p_value, self.ci_low,
                                                          self.ci_high)

    @property
    def seeds_disagree(self) -> bool:
        """Over these points the difference is clear, but not over the seeds' spread."""
        return claim_allowed(self.p_value, self.ci_low, self.ci_high) and \
            not self.holds_across_seeds

    @property
    def correction_withholds(self) -> bool:
        """Alone this pair would be a claim; counted with its section's other pairs (Holm) it
        is not."""
        return claim_allowed(self.p_value, self.ci_low, self.ci_high) and \
            self.holds_across_seeds and not self.significant


@dataclass(kw_only=True)
class PairedTest(PairedDifference):
    """A vs B on the same users (`paired_test`: Wilcoxon signed-rank p, bootstrap CI), and,
    from `compare` on rows of two seeds or more, the CI over seeds and users."""

    metric: str
    n_users: int
    seeds: tuple[int, int] | None = None  # seeds of A and B (None: not from rows of runs)

    @property
    def single_seed(self) -> bool:
        """A row of the comparison has one trained model: a difference may be real for these
        models and still not be a finding about the recipes (the standard: several seeds)."""
        return self.seeds is not None and min(self.seeds) < 2

    @property
    def ns_cell(self) -> str:
        """A table cell for no claim: "n.s. (p=0.003, seeds disagree)" when only the seeds'
        spread withholds it (so a small p does not read as a claim), else "n.s. (p=0.27)"."""
        why = (", seeds disagree" if self.seeds_disagree else
               f", Holm {self.p_adjusted:.2g}" if self.correction_withholds else "")
        return f"n.s. (p={self.p_value:.2g}{why})"

    @property
    def p_cell(self) -> str:
        """The p of a claim's cell: "p=0.001", or "Holm p=0.004" in a family."""
        return (f"p={self.p_value:.2g}" if math.isnan(self.p_adjusted) else
                f"Holm p={self.p_adjusted:.2g}")

    def __str__(self) -> str:
        seeds = (f", seeds+users CI {self.seed_ci_low:+.2f}..{self.seed_ci_high:+.2f} over "
                 f"{self.seeds[0]}+{self.seeds[1]} seeds" if self.seeds_tested else "")
        holm = ("" if math.isnan(self.p_adjusted) else
                f", Holm p={self.p_adjusted:.3g} over {self.family} pairs")
        return (f"{self.metric} {self.mean_a:.2f} vs {self.mean_b:.2f} ({self.diff:+.2f}, 95% CI "
                f"{self.ci_low:+.2f}..{self.ci_high:+.2f}, Wilcoxon p={self.p_value:.3g}{holm}, "
                f"{self.n_users} users{seeds})")


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


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p values (Holm 1979), in the order given: the k-th smallest p
    is multiplied by (m - k + 1), made monotone and capped at 1. It keeps the chance of any
    false claim among the m pairs at alpha whatever their dependence, and is uniformly more
    powerful than Bonferroni; the same numbers as statsmodels' `multipletests(method="holm")`."""
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1 or np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError(f"holm needs p values in [0, 1], got {p_values!r}")
    m = len(p)
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.minimum(stepped, 1.0)
    return out


def adjust(tests: Sequence[PairedTest]) -> None:
    """Mark `tests` as one family (the pairs one section claims on): each gets Holm's adjusted
    p over all of them, which `supports_a_claim` then reads. A family of one is left alone."""
    if len(tests) < 2:
        return
    for test, p in zip(tests, holm([t.p_value for t in tests]), strict=True):
        test.p_adjusted, test.family = float(p), len(tests)


def seed_and_user_ci(a: np.ndarray, b: np.ndarray, n_boot: int = N_BOOTSTRAP, seed: int = 1,
                     chunk: int = 200) -> tuple[float, float]:
    """95% CI of mean(A) - mean(B) from a two-level bootstrap: each replicate draws the seeds of
    A and of B (independently, with replacement: seed 42 of two models shares nothing but a
    number) and then the users (the same draw for both rows, as they are paired). `a`, `b`:
    per-user metrics, [seeds, users]. The spread of retrained models enters the interval,
    which the test over users alone leaves out (the hierarchical bootstrap of nested data)."""
    a, b = np.atleast_2d(np.asarray(a, np.float64)), np.atleast_2d(np.asarray(b, np.float64))
    if a.shape[1] != b.shape[1] or a.shape[1] == 0:
        raise ValueError(f"rows of {a.shape} and {b.shape}: both [seeds, the same users]")
    # the same draws go to the same row whichever is named first, so B vs A is exactly the
    # mirror of A vs B (a verdict near the edge must not depend on the order of the names)
    if (b.shape, b.tobytes()) < (a.shape, a.tobytes()):
        lo, hi = seed_and_user_ci(b, a, n_boot, seed, chunk)
        return -hi, -lo
    rng = np.random.default_rng(seed)
    n_users = a.shape[1]
    reps = []
    for start in range(0, n_boot, chunk):  # [chunk, users] at a time: bounded memory
        k = min(chunk, n_boot - start)
        wa = _seed_weights(rng, a.shape[0], k)
        wb = _seed_weights(rng, b.shape[0], k)
        d = wa @ a - wb @ b  # [k, users]: per-user difference of the drawn seeds' means
        users = rng.integers(0, n_users, size=(k, n_users))
        reps.append(np.take_along_axis(d, users, axis=1).mean(axis=1))
    lo, hi = np.percentile(np.concatenate(reps), [2.5, 97.5])
    return float(lo), float(hi)


def _seed_weights(rng: np.random.Generator, n_seeds: int, k: int) -> np.ndarray:
    """[k, n_seeds] weights of k draws of n_seeds seeds with replacement (counts / n)."""
    draws = rng.integers(0, n_seeds, size=(k, n_seeds))
    counts = (draws[:, :, None] == np.arange(n_seeds)).sum(axis=1)
    return counts / n_seeds


_POPULAR_RANKS: dict[tuple[str, str], np.ndarray] = {}


def most_popular_ranks(cfg: RunConfig, split: str = "valid") -> np.ndarray:
    """Per-user ranks of most-popular on `split` of a (resolved) run configuration's data (the
    same users, in the same order, as that run's stored ranks); memoised per data config."""
    import json

    from mmsr_lib.baselines.most_popular import MostPopular
    from mmsr_lib.evaluate import evaluate_model
    from mmsr_lib.runs.runner import load_data

    key = (json.dumps(cfg.to_dict()["data"], sort_keys=True), split)
    if key not in _POPULAR_RANKS:
        data = load_data(cfg.data)
        _POPULAR_RANKS[key] = evaluate_model(MostPopular(data), data.eval_set(split),
                                             cfg.eval.ks, cfg.eval.batch_size).ranks
    return _POPULAR_RANKS[key]


def versus_most_popular(store: ResultsStore, rec: RunRecord, split: str = "valid",
                        metric: str = "NDCG@10") -> PairedTest | None:
    """A run against most-popular on the same users of `split` (None: the run stored no ranks
    of that split, or is most-popular itself)."""
    ranks = store.ranks(rec.config_hash).get(split)
    cfg = rec.run_config().resolved()
    if ranks is None or cfg.model.recommender == "mostpop":
        return None
    popular = most_popular_ranks(cfg, split)
    if len(popular) != len(ranks):
        raise ValueError(f"run {rec.name} [{rec.config_hash}] has {len(ranks)} {split} "
                         f"users, most-popular on its data {len(popular)}: its data changed")
    return paired_test(per_user(ranks, metric), per_user(popular, metric), metric)


def not_above_most_popular(store: ResultsStore, runs: Sequence[RunRecord],
                           split: str = "valid", metric: str = "NDCG@10") -> list[RunRecord]:
    """The seeds of a row that learned nothing beyond item popularity: the paired test over the
    users of `split` (validation by default: a diagnosis of training, not a result) does not
    put them above most-popular. The budget rule counts such a run as converged, since its
    best epoch comes early and well inside the budget, yet it is a failed training; a row's
    mean over seeds that include one says how often its recipe fails, not how well it does
    when it trains (seen: one of five seeds of Table IV's GRU4Rec MMSR, docs/results_cpu.md)."""
    return [rec for rec in runs
            if below_or_at_popular(versus_most_popular(store, rec, split, metric))]


def below_or_at_popular(test: PairedTest | None) -> bool:
    """The one reading of `versus_most_popular` both the grid summaries and the audit use: a
    run fails unless the paired test puts it significantly above most-popular."""
    return test is not None and not (test.significant and test.diff > 0)


@dataclass
class Audit:
    """What `audit` found: the flagged runs, the runs it could not check (named, with what to
    do) and how many it checked, so a caller reports the count without re-reading the store."""

    flagged: pd.DataFrame
    skipped: list[str]
    checked: int


def audit(store: ResultsStore, profile: str | None = None, split: str = "valid",
          metric: str = "NDCG@10") -> Audit:
    """`mmsr results audit`: every finished run (of `profile`, or all) that the protocol cannot
    count as a trained model: not above most-popular (`not_above_most_popular`) or not
    converged (best epoch in the last tenth of its budget). The grid summaries check a
    notebook's table rows; this checks the whole store, search trials and one-off runs too.
    The runs that could not be checked (e.g. their data set is not on this machine) are named
    with what to do."""
    rows, skipped, checked = [], [], 0
    for rec in store.records():
        if profile is not None and rec.profile != profile:
            continue
        why = []
        try:
            test = versus_most_popular(store, rec, split, metric)
        except (OSError, ValueError, KeyError) as err:
            skipped.append(f"{rec.name} [{rec.config_hash}]: {type(err).__name__}: {err} "
                           f"(make its data set available, or `mmsr results list` to inspect it)")
            continue
        checked += 1
        if below_or_at_popular(test):
            why.append(f"not above most-popular ({test.mean_a:.2f} vs {test.mean_b:.2f}, "
                       f"p={test.p_value:.2g})")
        if not converged([rec]):
            why.append("not converged (best epoch in the last tenth of the budget)")
        if why:
            rows.append({"name": rec.name, "seed": rec.config["train"]["seed"],
                         "hash": rec.config_hash,
                         "best epoch": f"{rec.extra.get('best_epoch', '-')} of "
                                       f"{rec.extra.get('epochs_run', '-')}",
                         f"{split} {metric}": rec.metrics.get(split, {}).get(metric),
                         "why": "; ".join(why)})
    flagged = pd.DataFrame(rows, columns=["name", "seed", "hash", "best epoch",
                                          f"{split} {metric}", "why"])
    return Audit(flagged, skipped, checked)


def evaluation_cases(cfg: RunConfig, split: str = "test") -> str:
    """Who a run of `cfg` is evaluated on for `split`: a digest of each case's user, full
    history and target, by their original ids. Two rows may be compared user by user (a paired
    test) only when theirs are equal: the same catalog under other training settings (windows,
    `max_len`, seeds) gives the same digest; another catalog (a density point, a transfer
    target, a subsample) gives another, however many users it has. Splits: ``valid``,
    ``test``, and ``cold_valid`` / ``cold_test`` in the run's `data.cold_mode`."""
    import hashlib
    import json

    from mmsr_lib.runs.runner import load_data

    data_cfg = cfg.resolved().data
    key = (json.dumps(dataclasses.asdict(data_cfg), sort_keys=True), split)
    if key not in _EVALUATION_CASES:
        data = load_data(data_cfg)
        cases = (data.cold_eval_set(split.removeprefix("cold_"), data_cfg.cold_mode)
                 if split.startswith("cold_") else data.eval_set(split))
        h = hashlib.sha256()
        for part in (data.user_ids[cases.users], data.item_ids[cases.targets],
                     cases.history.indptr, data.item_ids[cases.history.indices]):
            h.update("\x1f".join(map(str, np.asarray(part).tolist())).encode())
            h.update(b"\x1e")
        _EVALUATION_CASES[key] = h.hexdigest()[:16]
    return _EVALUATION_CASES[key]


_EVALUATION_CASES: dict[tuple[str, str], str] = {}

# data settings that do not change whom a run is evaluated on: where the data are written, the
# training windows and their length (histories are scored in full); the cold split's own
# settings matter only to the cold splits
_NOT_CASES = ("cache_dir", "max_len", "train_windows")
_COLD_CASES = ("cold_threshold", "cold_mode")


def same_evaluation_cases(a: RunRecord, b: RunRecord, split: str = "test") -> bool:
    """Whether two stored runs were evaluated on the same cases of `split`, so that their
    per-user metrics may be paired: at once when their data settings agree (up to the settings
    that do not touch the evaluation cases), else by `evaluation_cases` (loads both data sets)."""
    def data_key(rec: RunRecord) -> dict:
        data = dataclasses.asdict(rec.run_config().resolved().data)
        for name in _NOT_CASES + (() if split.startswith("cold_") else _COLD_CASES):
            data.pop(name)
        return data

    if data_key(a) == data_key(b):
        return True
    return evaluation_cases(a.run_config(), split) == evaluation_cases(b.run_config(), split)


def converged(runs: Sequence[RunRecord]) -> bool:
    """Every seed of the row stopped before the end of its budget (see FitResult.converged)."""
    return all(r.extra.get("converged", False) for r in runs if r.extra.get("epochs_run"))


def compare(store: ResultsStore, a: Sequence[RunRecord], b: Sequence[RunRecord],
            split: str = "test", metric: str = "NDCG@10") -> PairedTest:
    """The paired test of two rows of a grid (each a list of seed runs): over the users of the
    seed-averaged metric, and, when both rows have two seeds or more, over seeds and users.
    Raises when the rows were evaluated on different cases (another catalog, a transfer target,
    a density point): user i of one is not user i of the other, whatever their counts."""
    if a and b and not same_evaluation_cases(a[0], b[0], split):
        raise ValueError(
            f"{a[0].name} [{a[0].config_hash}] and {b[0].name} [{b[0].config_hash}] were "
            f"evaluated on different {split!r} cases (their data settings give other users or "
            "targets): a paired test over users needs the same ones; compare their means, or "
            "train both on one catalog")
    return seeded_test(per_seed(store, a, split, metric), per_seed(store, b, split, metric),
                       metric)


def seeded_test(a: np.ndarray, b: np.ndarray, metric: str = "NDCG@10") -> PairedTest:
    """`paired_test` of the seed-averaged per-user metrics of two rows ([seeds, users] each),
    with the seeds-and-users CI when both rows have two seeds or more."""
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    test = paired_test(a.mean(axis=0), b.mean(axis=0), metric)
    test.seeds = (len(a), len(b))
    if len(a) > 1 and len(b) > 1:
        test.seed_ci_low, test.seed_ci_high = seed_and_user_ci(a, b)
    return test


def verdict(test: PairedTest, name_a: str, name_b: str, converged_a: bool = True,
            converged_b: bool = True) -> str:
    """The one sentence a table may say about A vs B."""
    if not (converged_a and converged_b):
        which = " and ".join(n for n, c in ((name_a, converged_a), (name_b, converged_b))
                             if not c)
        return f"{name_a} vs {name_b}: no claim, {which} did not converge ({test})"
    if not test.significant:
        why = ("; the mean difference's CI includes 0" if test.tests_disagree else
               "; over seeds and users the CI includes 0: the gap depends on the training "
               "seeds" if test.seeds_disagree else
               f"; alone p < {ALPHA}, but not once the section's {test.family} pairs are counted"
               " (Holm)" if test.correction_withholds else "")
        return f"{name_a} vs {name_b}: no significant difference ({test}{why})"
    better, worse = (name_a, name_b) if test.diff > 0 else (name_b, name_a)
    order = "" if better == name_a else f"{name_a} vs {name_b}: "  # the numbers are A's, then B's
    if test.single_seed:
        return (f"{better} ahead of {worse} in one seed ({order}{test}; one trained model per "
                "row: not yet a finding, train more seeds)")
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


def family_tests(store: ResultsStore, results: Mapping[Hashable, Sequence[RunRecord]],
                 pairs: Sequence[tuple[Hashable, Hashable]], split: str = "test",
                 metric: str = "NDCG@10") -> dict[tuple[Hashable, Hashable], PairedTest]:
    """The paired test of each (row A, row B) pair whose rows both ran, as one family: Holm's
    correction over the pairs whose rows converged (the pairs that could carry a claim; a row
    that did not converge gets "no claim" whatever its p)."""
    tests = {(a, b): compare(store, results[a], results[b], split, metric)
             for a, b in pairs if results.get(a) and results.get(b)}
    adjust([t for (a, b), t in tests.items() if converged(results[a]) and converged(results[b])])
    return tests


def claims(store: ResultsStore, results: dict, pairs: Sequence[tuple], split: str = "test",
           metric: str = "NDCG@10", names: dict | None = None) -> list[str]:
    """The verdict sentence of each (row A, row B) pair of a grid's results (label -> runs),
    the pairs judged as one family (`family_tests`); pairs whose rows did not run (e.g. an
    optional encoder not installed) are left out."""
    def name(label: object) -> str:
        if names and label in names:
            return names[label]
        return " ".join(map(str, label)) if isinstance(label, tuple) else str(label)

    return [verdict(t, name(a), name(b), converged(results[a]), converged(results[b]))
            for (a, b), t in family_tests(store, results, pairs, split, metric).items()]
