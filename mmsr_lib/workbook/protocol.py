"""Notebook 11 (beyond the paper): does the *ranking of models* survive protocol choices?

Five questions users of every sequential-recommendation library ask, each answered with stored
runs (reloaded, not retrained, where the question is about evaluation):

1. full ranking (the library's contract) vs 100 sampled negatives, uniform or by popularity;
2. tie rules: pessimistic (the library's), optimistic, random (exact expectation);
3. training windows ``data.train_windows=last`` (the paper's code) vs ``all``: two trainings;
4. cold evaluation ``data.cold_mode=target`` vs the paper's truncated sub-sequences, with the
   measured leak (cold rows whose target was a training pair);
5. model selection on validation vs, wrongly, on test (``train.track_test=true`` histories).

Every ordering is compared with Kendall's tau (`scipy.stats.kendalltau`) over the models, and a
pair of models that swaps places is reported with the paired test under each protocol
(`significance.seeded_test`: over users, and over seeds and users where a row has several): a
swap between two rows that no protocol separates is noise.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from mmsr_lib.config import RunConfig, profile_config
from mmsr_lib.data.preprocess import EvalSet, SequenceData
from mmsr_lib.evaluate import evaluate_model
from mmsr_lib.evaluate_variants import (
    TIE_RULES,
    model_sampled_ranks,
    model_tie_counts,
    sample_negatives,
    tie_metric_per_user,
)
from mmsr_lib.runs import derived
from mmsr_lib.runs.runner import load_data
from mmsr_lib.runs.store import ResultsStore, RunRecord
from mmsr_lib.runs.trained import check_same_data, load_trained
from mmsr_lib.workbook import grids
from mmsr_lib.workbook.cold_start import median_rank_over_seeds
from mmsr_lib.workbook.paper_numbers import paper_wide
from mmsr_lib.workbook.significance import (
    PairedTest,
    compare,
    converged,
    family_tests,
    per_user,
    seeded_test,
    summarize,
    verdict,
)

# label -> (architecture, column) of Table IV's grid; MostPop is its own configuration
MODELS: dict[str, tuple[str, str] | None] = {
    "IDSR SASRec": ("SASRec", "IDSR"),
    "IDSR GRU4Rec": ("GRU4Rec", "IDSR"),
    "IDSR NextItNet": ("NextItNet", "IDSR"),
    "MostPop": None,
    "MMSR-T SASRec": ("SASRec", "MMSR-T"),
}
PAPER_DATASETS = ("HM", "Bili", "Kwai", "Amazon")
# our label -> (group, row) in the paper's Table IV and Table VIII
PAPER_ROWS = {
    "IV": {"IDSR SASRec": ("SASRec", "IDSR"), "IDSR GRU4Rec": ("GRURec", "IDSR"),
           "IDSR NextItNet": ("NextItNet", "IDSR"), "MMSR-T SASRec": ("SASRec", "MMSR-T")},
    "VIII": {"IDSR SASRec": ("IDSR", "SASRec"), "MMSR-T SASRec": ("MMSR", "MMSR-T")},
}
N_NEGATIVES = 100
WINDOWS = ("all", "last")


def sampled_variants(n_negatives: int = N_NEGATIVES) -> tuple[str, str, str]:
    """Names of question 1's protocols: full ranking and the two sampled ones."""
    return ("full", f"uniform-{n_negatives}", f"popularity-{n_negatives}")


# -- configurations -------------------------------------------------------------------------------
def model_configs(
    profile: str, *overrides: str, dataset: str = "synthetic", windows: str = "all",
    track_test: bool = True, include_mostpop: bool = True,
) -> dict[str, RunConfig]:
    """The compared models as Table IV's rows (so their hashes are the notebooks' own) plus
    MostPop, under one training-window mode.

    ``track_test`` also evaluates test after every epoch (question 5); it changes no trained
    weight and no reported number, only the hash. MovieLens has no images: its models are the
    IDSR and MMSR-T rows.
    """
    if windows not in WINDOWS:
        raise ValueError(f"windows={windows!r}; choose one of {WINDOWS}")
    extra = [f"data.train_windows={windows}", *(["train.track_test=true"] if track_test else []),
             *overrides]
    grid = grids.table4_configs(profile, *extra, dataset=dataset)
    data = ["data.source=movielens-100k"] if dataset == "movielens-100k" else []
    out: dict[str, RunConfig] = {}
    for label, key in MODELS.items():
        name = f"name=p11-{dataset}-{windows}-{label.replace(' ', '-')}"  # not hashed
        if key is None:
            if include_mostpop:
                out[label] = profile_config(profile).override(
                    "model.recommender=mostpop", *data, *extra, name)
            continue
        if key in grid:
            out[label] = grid[key].override(name)
    return out


# -- reloading stored runs -------------------------------------------------------------------------
@dataclass
class Reevaluation:
    """One stored run, reloaded and evaluated under every variant of questions 1, 2 and 4.

    ``ranks`` holds 0-based per-row ranks per variant ("full", "uniform-100", "popularity-100",
    "cold_target", "cold_paper"); ``greater``/``equal`` the tie counts of the full ranking;
    ``matches_store`` says whether the reloaded full ranks equal the stored ones (None when the
    store kept none).
    """

    model: str
    seed: int
    config_hash: str
    converged: bool
    ranks: dict[str, np.ndarray]
    greater: np.ndarray
    equal: np.ndarray
    matches_store: bool | None


def _reevaluation_arrays(rec: RunRecord, label: str, es: EvalSet,
                         negatives: Mapping[str, np.ndarray], cold: Mapping[str, EvalSet],
                         batch_size: int) -> dict[str, np.ndarray]:
    """What `reevaluate` reads off one run's trained model: full ranks, tie counts ("greater",
    "equal"), sampled ranks per negatives set and ranks per cold set."""
    model, _ = load_trained(rec)
    ks = rec.run_config().resolved().eval.ks
    scorer = model.scorer()
    full = evaluate_model(model, es, ks, batch_size, scorer=scorer).ranks
    greater, equal = model_tie_counts(model, es, batch_size, scorer)
    if not np.array_equal(greater + equal, full):
        raise AssertionError(f"{label}: tie counts disagree with the full ranking")
    out = {"full": full, "greater": greater, "equal": equal}
    for name, neg in negatives.items():
        out[name] = model_sampled_ranks(model, es, neg, batch_size, scorer)
    for name, ev in cold.items():
        out[name] = evaluate_model(model, ev, ks, batch_size, scorer=scorer).ranks \
            if len(ev) else np.zeros(0, np.int64)
    return out


def reevaluate(
    results: Mapping[str, Sequence[RunRecord]],
    store: ResultsStore,
    n_negatives: int = N_NEGATIVES,
    sample_seed: int = 0,
    split: str = "test",
    batch_size: int = 256,
) -> dict[str, list[Reevaluation]]:
    """Every run of `results` (label -> seeds, as `run_grid` returns) reloaded and evaluated:
    full ranking, tie counts, sampled ranking and both cold protocols on `split`.

    The sampled negatives are drawn once (seed `sample_seed`) and shared by every model, so the
    sampled protocol compares models on the same candidates, as a paired test needs.
    """
    first = next(iter(results.values()))[0].run_config().resolved()
    data = load_data(first.data)
    es = data.eval_set(split)
    uniform_name, pop_name = sampled_variants(n_negatives)[1:]
    rng = np.random.default_rng(sample_seed)
    negatives = {
        uniform_name: sample_negatives(es.history, es.targets, data.n_items, n_negatives, rng),
        pop_name: sample_negatives(es.history, es.targets, data.n_items, n_negatives, rng,
                                   weights=data.train_counts),
    }
    cold = {"cold_target": data.cold_eval_set(split, "target"),
            "cold_paper": data.cold_eval_set(split, "paper")}
    out: dict[str, list[Reevaluation]] = {}
    done: dict[str, Reevaluation] = {}  # MostPop's seeds are one run (nothing random in it)
    for label, runs in results.items():
        out[label] = []
        for rec in runs:
            if rec.config_hash in done:
                out[label].append(done[rec.config_hash])
                continue
            cfg = rec.run_config().resolved()
            if load_data(cfg.data).fingerprint() != data.fingerprint():
                raise ValueError(f"{label} was trained on other data than {first.name}; "
                                 "question 1-4 compare models on the same users")
            check_same_data(rec, data)
            # kept with the run (`runs.derived`): a machine without its weights reads them back
            arrays = derived.cached(store, rec, f"protocol.reevaluate split={split} "
                                    f"negatives={n_negatives} sample_seed={sample_seed}",
                                    __name__, functools.partial(
                                        _reevaluation_arrays, rec, label, es, negatives, cold,
                                        batch_size))
            greater, equal = arrays.pop("greater"), arrays.pop("equal")
            ranks, full = arrays, arrays["full"]
            stored = store.ranks(rec.config_hash).get(split)
            done[rec.config_hash] = Reevaluation(
                label, int(cfg.train.seed), rec.config_hash, converged([rec]), ranks, greater,
                equal, None if stored is None else bool(np.array_equal(stored, full)))
            out[label].append(done[rec.config_hash])
    return out


def variant_values(evals: Sequence[Reevaluation], variant: str, metric: str = "NDCG@10",
                   per_seed: bool = False) -> np.ndarray:
    """Per-row `metric` (percent) under `variant`, averaged over the seeds (or, `per_seed`,
    one row per seed: [seeds, rows], what `seeded_test` needs for the seeds rule): a rank
    variant (`Reevaluation.ranks`) or a tie rule (`evaluate.TIE_RULES`)."""
    if not evals:
        raise ValueError("no re-evaluated runs")
    values = []
    for ev in evals:
        if variant in TIE_RULES:
            values.append(tie_metric_per_user(ev.greater, ev.equal, metric, variant))
        elif variant in ev.ranks:
            values.append(per_user(ev.ranks[variant], metric))
        else:
            raise KeyError(f"unknown variant {variant!r}; choose one of {list(ev.ranks)} or "
                           f"{TIE_RULES}")
    return np.stack(values) if per_seed else np.mean(values, axis=0)


# -- orderings ------------------------------------------------------------------------------------
def protocol_table(
    evals: Mapping[str, Sequence[Reevaluation]], variants: Sequence[str],
    metrics: Sequence[str] = ("HR@10", "NDCG@10"), order_by: str = "NDCG@10",
) -> pd.DataFrame:
    """Models x "<metric> <variant>" (mean over seeds, percent) and "rank <variant>" (1 = best
    by `order_by`, ties share the better rank)."""
    rows = {}
    for label, evs in evals.items():
        rows[label] = {f"{m} {v}": float(variant_values(evs, v, m).mean())
                       if _n_rows(evs, v) else math.nan for v in variants for m in metrics}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "model"
    for v in variants:
        table[f"rank {v}"] = table[f"{order_by} {v}"].rank(ascending=False, method="min")
    return table


def _n_rows(evals: Sequence[Reevaluation], variant: str) -> int:
    return len(evals[0].greater) if variant in TIE_RULES else len(evals[0].ranks[variant])


def kendall(a: pd.Series, b: pd.Series) -> tuple[float, float]:
    """Kendall's tau (tau-b) and its p value between two orderings of the same models."""
    from scipy.stats import kendalltau

    both = pd.concat([a, b], axis=1, join="inner").dropna()
    if len(both) < 2:
        return math.nan, math.nan
    res = kendalltau(both.iloc[:, 0], both.iloc[:, 1])
    return float(res.statistic), float(res.pvalue)


def kendall_table(table: pd.DataFrame, reference: str, variants: Sequence[str],
                  metric: str = "NDCG@10") -> pd.DataFrame:
    """Kendall's tau of each variant's model ordering against `reference`'s, and whether the
    ordering (the rank of any model) changed."""
    rows = []
    for v in variants:
        if v == reference:
            continue
        tau, p = kendall(table[f"{metric} {reference}"], table[f"{metric} {v}"])
        changed = bool((table[f"rank {reference}"] != table[f"rank {v}"]).any())
        rows.append({"vs": reference, "variant": v, "Kendall tau": tau, "p": p,
                     "ordering changed": changed})
    return pd.DataFrame(rows).set_index("variant")


def _head(test: PairedTest, x: str, y: str, converged_x: bool = True,
          converged_y: bool = True) -> str:
    """A `verdict` without its " (test details)" tail, but with why a gap the users' test alone
    would claim is not one: "no significant difference (seeds disagree)" next to a p of 0.009
    is readable, a bare "no significant difference" is not."""
    head = verdict(test, x, y, converged_x, converged_y).split(" (")[0]
    if converged_x and converged_y and test.seeds_disagree:  # never a claim: see PairedDifference
        head += " (seeds disagree)"
    elif converged_x and converged_y and test.correction_withholds:
        head += f" (Holm over {test.family} pairs)"
    return head


def _short(test: PairedTest, x: str, y: str, converged_x: bool = True,
           converged_y: bool = True) -> str:
    """`_head` without the "x vs y: " prefix (the pair is named already)."""
    return _head(test, x, y, converged_x, converged_y).removeprefix(f"{x} vs {y}: ")


def ordering_flips(
    evals: Mapping[str, Sequence[Reevaluation]], variant_a: str, variant_b: str,
    metric: str = "NDCG@10",
) -> pd.DataFrame:
    """Every pair of models whose order differs between two variants (a tie in one and an
    order in the other counts), with the paired test of the pair under each (`seeded_test`:
    over the users of the seed-averaged values, and over seeds and users, so a gap one seed
    reverses is not claimed; no claim for an unconverged run). Empty when a variant has no
    rows."""
    cols = ["pair", *(f"{c} {v}" for v in (variant_a, variant_b)
                      for c in (f"{metric} diff", "verdict"))]
    first = next(iter(evals.values()))
    if not (_n_rows(first, variant_a) and _n_rows(first, variant_b)):
        return pd.DataFrame(columns=cols)
    means = {label: {v: float(variant_values(evs, v, metric).mean()) for v in (variant_a,
                                                                               variant_b)}
             for label, evs in evals.items()}
    rows = []
    for x, y in combinations(evals, 2):
        da = means[x][variant_a] - means[y][variant_a]
        db = means[x][variant_b] - means[y][variant_b]
        if np.sign(da) == np.sign(db):
            continue
        cx = all(e.converged for e in evals[x])
        cy = all(e.converged for e in evals[y])
        row = {"pair": f"{x} vs {y}"}
        for v in (variant_a, variant_b):
            test = seeded_test(variant_values(evals[x], v, metric, per_seed=True),
                               variant_values(evals[y], v, metric, per_seed=True), metric)
            row[f"{metric} diff {v}"] = test.diff
            row[f"verdict {v}"] = _short(test, x, y, cx, cy)
        rows.append(row)
    return pd.DataFrame(rows, columns=cols)


def ordering_sentence(kt: pd.DataFrame, flips: Mapping[str, pd.DataFrame], what: str) -> str:
    """The computed lesson of one question: tau per variant and which pairs swap, with what
    the paired tests say about each swap."""
    parts = []
    for variant, row in kt.iterrows():
        tau = "n/a" if math.isnan(row["Kendall tau"]) else f"{row['Kendall tau']:+.2f}"
        flips_v = flips.get(variant, pd.DataFrame())
        if not row["ordering changed"]:
            parts.append(f"{what} {row['vs']} vs {variant}: same ordering (Kendall tau {tau}).")
            continue
        swaps = []
        for _, f in flips_v.iterrows():
            verdicts = [c for c in f.index if c.startswith("verdict")]
            swaps.append(f"{f['pair']} [{'; '.join(f'{c[8:]}: {f[c]}' for c in verdicts)}]")
        parts.append(f"{what} {row['vs']} vs {variant}: the ordering changes (Kendall tau {tau}); "
                     f"{len(swaps)} pair(s) change order: " + " | ".join(swaps) + ".")
    return "\n".join(parts)


def paper_columns(table: str, metrics: Sequence[str], models: Sequence[str],
                  datasets: Sequence[str] = PAPER_DATASETS) -> pd.DataFrame:
    """The paper's numbers for our models, one column per "paper <metric> <dataset>" (NaN where
    the paper has no such row, e.g. MostPop)."""
    rows = PAPER_ROWS[table]
    out = pd.DataFrame(index=pd.Index(list(models), name="model"))
    for ds in datasets:
        wide = paper_wide(table, ds).set_index(["group", "row"])
        for m in metrics:
            if m not in wide.columns:
                continue
            out[f"paper {m} {ds}"] = [float(wide.loc[rows[x], m]) if x in rows and rows[x] in
                                      wide.index else math.nan for x in models]
    return out


# -- question 2: ties -------------------------------------------------------------------------------
def tie_table(evals: Mapping[str, Sequence[Reevaluation]],
              metrics: Sequence[str] = ("HR@10", "NDCG@10")) -> pd.DataFrame:
    """Question 2: each model under the three tie rules, how many rows have a tie with the
    target and how far the metric moves (optimistic minus pessimistic)."""
    table = protocol_table(evals, TIE_RULES, metrics)
    table.insert(0, "rows with a tie (%)", [
        100.0 * float(np.mean([np.mean(e.equal > 0) for e in evals[x]])) for x in table.index])
    table.insert(1, "tied items (mean)", [
        float(np.mean([e.equal.mean() for e in evals[x]])) for x in table.index])
    for m in metrics:
        table[f"{m} moves by"] = table[f"{m} optimistic"] - table[f"{m} pessimistic"]
    return table


# -- question 3: training windows ------------------------------------------------------------------
def trained_positions(data: SequenceData) -> int:
    """Training targets per epoch under the data's window mode."""
    return int((data.train_windows[1] > 0).sum())


def window_share(configs_all: Mapping[str, RunConfig], configs_last: Mapping[str, RunConfig]
                 ) -> dict[str, float]:
    """How many training positions each window mode trains per epoch, and the share of `last`."""
    a = load_data(next(iter(configs_all.values())).resolved().data)
    b = load_data(next(iter(configs_last.values())).resolved().data)
    n_all, n_last = trained_positions(a), trained_positions(b)
    return {"positions_all": n_all, "positions_last": n_last,
            "share_last": 100.0 * n_last / n_all if n_all else math.nan}


def window_table(
    store: ResultsStore, runs_all: Mapping[str, Sequence[RunRecord]],
    runs_last: Mapping[str, Sequence[RunRecord]], metrics: Sequence[str] = ("HR@10", "NDCG@10"),
    test_metric: str = "NDCG@10",
) -> pd.DataFrame:
    """Question 3: test metrics (mean, std over seeds) per model trained on `all` and on `last`
    windows, the paired test last vs all (seed-averaged per-user `test_metric`: difference, its
    95% CI, Wilcoxon p, Holm's p over the table's models (one family: `family_tests`),
    verdict; no claim for unconverged rows) and the rank of each model under each mode."""
    labels = [x for x in runs_all if x in runs_last]
    both = {**{("last", x): runs_last[x] for x in labels}, **{("all", x): runs_all[x]
                                                              for x in labels}}
    tests = family_tests(store, both, [(("last", x), ("all", x)) for x in labels], "test",
                         test_metric)
    rows = {}
    for label in labels:
        row: dict = {}
        for mode, runs in (("all", runs_all[label]), ("last", runs_last[label])):
            s = summarize(runs, "test", metrics)
            for m in metrics:
                row[f"{m} {mode}"], row[f"{m} {mode} std"] = s[m], s[f"{m} std"]
            row[f"converged {mode}"] = s["converged"]
        test = tests[("last", label), ("all", label)]
        row[f"{test_metric} last - all"] = test.diff
        row["95% CI"] = f"{test.ci_low:+.2f}..{test.ci_high:+.2f}"
        row["p"] = test.p_value
        row["p Holm"] = test.p_adjusted
        row["verdict"] = _head(test, "last", "all", converged(runs_last[label]),
                               converged(runs_all[label]))
        rows[label] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "model"
    for mode in WINDOWS:
        table[f"rank {mode}"] = table[f"{test_metric} {mode}"].rank(ascending=False,
                                                                     method="min")
    return table


def window_sentence(label: str, row: Mapping) -> str:
    """One printed line of question 3: a model's verdict, last minus all, CI, p and Holm's p."""
    holm = "" if math.isnan(row["p Holm"]) else f", Holm p={row['p Holm']:.2g}"
    return (f"{label}: {row['verdict']} (NDCG@10 {row['NDCG@10 last - all']:+.2f}, 95% CI "
            f"{row['95% CI']}, p={row['p']:.2g}{holm})")


def window_flips(store: ResultsStore, runs_all: Mapping[str, Sequence[RunRecord]],
                 runs_last: Mapping[str, Sequence[RunRecord]], metric: str = "NDCG@10"
                 ) -> pd.DataFrame:
    """Pairs of models whose order differs between `all` and `last` training, with the paired
    test of the pair under each mode (stored per-user ranks)."""
    labels = [x for x in runs_all if x in runs_last]
    means = {mode: {x: summarize(runs[x], "test", (metric,))[metric] for x in labels}
             for mode, runs in (("all", runs_all), ("last", runs_last))}
    rows = []
    for x, y in combinations(labels, 2):
        if np.sign(means["all"][x] - means["all"][y]) == np.sign(means["last"][x] -
                                                                 means["last"][y]):
            continue
        row = {"pair": f"{x} vs {y}"}
        for mode, runs in (("all", runs_all), ("last", runs_last)):
            test = compare(store, runs[x], runs[y], "test", metric)
            row[f"{metric} diff {mode}"] = test.diff
            row[f"verdict {mode}"] = _short(test, x, y, converged(runs[x]), converged(runs[y]))
        rows.append(row)
    cols = ["pair", *(f"{c} {m}" for m in WINDOWS for c in (f"{metric} diff", "verdict"))]
    return pd.DataFrame(rows, columns=cols)


# -- question 4: the cold protocol -----------------------------------------------------------------
def cold_leak(data: SequenceData, split: str = "test") -> dict:
    """What the paper's cold sub-sequences leak: of the rows of ``cold_eval_set(split,
    "paper")``, those whose target position lies in the training part (the item at that
    position of that user is in training data), and those that were exactly a training pair
    (the position was a target of a training window under the data's window mode).

    Returns counts, shares (percent) and the per-row boolean masks, in the cold set's order.
    ``trained`` is notebook 07's `cold_start.exact_training_pairs` computed from positions
    (tests/test_protocol.py pins the two equal), so both notebooks count the same leak.
    """
    ev = data.cold_eval_set(split, "paper")
    pos = np.diff(ev.history.indptr)  # the prefix length is the target's position
    train_len = np.array([len(s) - 2 for s in data.seqs], dtype=np.int64)[ev.users]
    in_train = pos < train_len
    if data.window_mode == "all":
        trained = in_train & (pos >= 1)
    else:  # `last`: the targets of the one window, positions max(1, len - L) .. len - 1
        trained = in_train & (pos >= np.maximum(1, train_len - data.max_len))
    n = len(ev)

    def share(mask: np.ndarray) -> float:
        return 100.0 * float(mask.mean()) if n else math.nan

    return {"n_rows": n, "n_in_train": int(in_train.sum()), "share_in_train": share(in_train),
            "n_trained_pairs": int(trained.sum()), "share_trained_pairs": share(trained),
            "n_target_rows": len(data.cold_eval_set(split, "target")),
            "in_train": in_train, "trained": trained}


def cold_table(evals: Mapping[str, Sequence[Reevaluation]], leak: Mapping,
               metrics: Sequence[str] = ("HR@10", "NDCG@10"), test_metric: str = "NDCG@10"
               ) -> pd.DataFrame:
    """Question 4: each model on the cold rows of both protocols, and the paper protocol's rows
    split into trained pairs (leaked) and the rest, with a Mann-Whitney test between those
    two (unpaired rows; rows of one user are not independent, so its p is indicative), and the
    median rank of the trained pairs' targets: whether a model memorised them at all (a model
    that did not ranks them like any cold item, far down the catalog)."""
    from scipy.stats import mannwhitneyu

    table = protocol_table(evals, ("cold_target", "cold_paper"), metrics, order_by=test_metric)
    trained = np.asarray(leak["trained"], dtype=bool)
    leaked, clean, pvals, median_rank = [], [], [], []
    for x in table.index:
        v = variant_values(evals[x], "cold_paper", test_metric)
        a, b = v[trained], v[~trained]
        leaked.append(float(a.mean()) if len(a) else math.nan)
        clean.append(float(b.mean()) if len(b) else math.nan)
        pvals.append(float(mannwhitneyu(a, b).pvalue) if len(a) and len(b) and
                     np.ptp(np.concatenate([a, b])) > 0 else math.nan)
        median_rank.append(median_rank_over_seeds([e.ranks["cold_paper"] for e in evals[x]],
                                                  trained))
    table[f"{test_metric} paper, trained pairs"] = leaked
    table[f"{test_metric} paper, other rows"] = clean
    table["p (trained vs other)"] = pvals
    table["median rank, trained pairs"] = median_rank
    return table


def leak_sentence(table: pd.DataFrame, evals: Mapping[str, Sequence[Reevaluation]],
                  metric: str = "NDCG@10") -> str:
    """Per model: do the leaked rows score differently from the others (p < 0.05 and every
    seed converged), else no claim."""
    out = []
    for x, row in table.iterrows():
        a, b = row[f"{metric} paper, trained pairs"], row[f"{metric} paper, other rows"]
        p = row["p (trained vs other)"]
        if math.isnan(p):
            out.append(f"{x}: no test (one group empty or constant).")
        elif not all(e.converged for e in evals[x]):
            out.append(f"{x}: no claim, not converged ({a:.2f} vs {b:.2f}, p={p:.2g}).")
        elif p >= 0.05:
            out.append(f"{x}: no significant difference between trained-pair rows and the "
                       f"rest ({a:.2f} vs {b:.2f}, p={p:.2g}).")
        else:
            word = "higher" if a > b else "lower"
            out.append(f"{x}: rows that were training pairs score {word} ({a:.2f} vs {b:.2f}, "
                       f"Mann-Whitney p={p:.2g}).")
    return "\n".join(out)


# -- question 5: selecting on test -----------------------------------------------------------------
def selection_rows(runs: Sequence[RunRecord], metric: str = "NDCG@10") -> list[dict]:
    """Per seed: the best-validation epoch and its test `metric` (what is reported) vs the
    best-test epoch and its test `metric` (selecting on test), from a ``track_test`` history;
    ``reported`` is the stored test metric, which must equal the history's at the best epoch."""
    out = []
    for rec in runs:
        evals = [h for h in rec.history if h.get("valid")]
        if not evals:  # nothing trained (MostPop): nothing to select
            v = rec.metrics["test"][metric]
            out.append({"seed": rec.config["train"]["seed"], "valid epoch": math.nan,
                        "test epoch": math.nan, "at valid": v, "at test": v, "reported": v})
            continue
        if any("test" not in h for h in evals):
            raise ValueError(f"run {rec.name} [{rec.config_hash}] has no per-epoch test "
                             "metrics; train it with train.track_test=true")
        bv = max(evals, key=lambda h: h["valid"]["NDCG@10"])  # first maximum, as the trainer
        bt = max(evals, key=lambda h: h["test"][metric])
        out.append({"seed": rec.config["train"]["seed"], "valid epoch": bv["epoch"],
                    "test epoch": bt["epoch"], "at valid": bv["test"][metric],
                    "at test": bt["test"][metric], "reported": rec.metrics["test"][metric]})
    return out


def selection_table(results: Mapping[str, Sequence[RunRecord]], metric: str = "NDCG@10"
                    ) -> pd.DataFrame:
    """Question 5: test `metric` at the best-validation epoch (correct) and at the best-test
    epoch (selection on test), mean over seeds, the optimistic bias, both rank orders, and
    whether the reported number equals the history's at the best-validation epoch."""
    rows = {}
    for label, runs in results.items():
        sel = pd.DataFrame(selection_rows(runs, metric))
        bias = sel["at test"] - sel["at valid"]
        rows[label] = {
            "best-valid epoch": _epochs(sel["valid epoch"]),
            "best-test epoch": _epochs(sel["test epoch"]),
            f"{metric} valid-selected": float(sel["at valid"].mean()),
            f"{metric} test-selected": float(sel["at test"].mean()),
            "bias": float(bias.mean()),
            "bias (%)": float(100.0 * bias.mean() / sel["at valid"].mean())
            if sel["at valid"].mean() > 0 else math.nan,
            "converged": summarize(runs)["converged"],
            "reported = history": bool(np.allclose(sel["reported"], sel["at valid"], rtol=0,
                                                   atol=1e-9)),
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "model"
    for v in ("valid-selected", "test-selected"):
        table[f"rank {v}"] = table[f"{metric} {v}"].rank(ascending=False, method="min")
    return table


def _epochs(values: pd.Series) -> str:
    vals = [str(int(v)) for v in values if not math.isnan(v)]
    return "/".join(vals) if vals else "-"


def selection_sentence(store: ResultsStore, results: Mapping[str, Sequence[RunRecord]],
                       table: pd.DataFrame, metric: str = "NDCG@10") -> str:
    """The lesson of question 5: the bias per model, and for every pair whose order differs
    under test selection, what the correct (validation-selected, stored per-user) paired test
    says about that pair; selection on test keeps no per-user ranks, so no claim there."""
    lines = [f"{x} (best-valid epoch {r['best-valid epoch']}, best-test epoch "
             f"{r['best-test epoch']}): selecting on test adds {r['bias']:+.2f} {metric} points "
             f"({r['bias (%)']:+.1f}%)" for x, r in table.iterrows()
             if r["best-valid epoch"] != "-"]  # MostPop trains nothing: nothing to select
    a, b = f"{metric} valid-selected", f"{metric} test-selected"
    tau, _ = kendall(table[a], table[b])
    swaps = []
    for x, y in combinations(table.index, 2):
        if np.sign(table.loc[x, a] - table.loc[y, a]) != np.sign(table.loc[x, b] -
                                                                 table.loc[y, b]):
            test = compare(store, results[x], results[y], "test", metric)
            swaps.append(f"{x} vs {y} [validation-selected: " + _short(
                test, x, y, converged(results[x]), converged(results[y])) + "]")
    tau_s = "n/a" if math.isnan(tau) else f"{tau:+.2f}"
    if swaps:
        lines.append(f"Ordering: Kendall tau {tau_s}; {len(swaps)} pair(s) change order: "
                     + " | ".join(swaps) + ".")
    else:
        lines.append(f"Ordering: unchanged (Kendall tau {tau_s}).")
    return "\n".join(lines)


# -- figures ---------------------------------------------------------------------------------------
def plot_orderings(table: pd.DataFrame, variants: Sequence[str], metric: str = "NDCG@10",
                   title: str = "") -> plt.Figure:
    """Left: `metric` per model under each variant (log scale: sampled values are an order of
    magnitude larger); right: the rank of each model under each variant (a bump chart)."""
    fig, (ax, ax_rank) = plt.subplots(1, 2, figsize=(11, 3.8))
    x = np.arange(len(table))
    w = 0.8 / len(variants)
    for i, v in enumerate(variants):
        vals = table[f"{metric} {v}"].to_numpy(dtype=float)
        ax.bar(x + i * w - 0.4 + w / 2, np.where(vals > 0, vals, np.nan), w, label=v)
    ax.set_xticks(x, table.index, rotation=20, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel(f"test {metric} (%)")
    ax.legend(fontsize=8)
    for label, row in table.iterrows():
        ranks = [row[f"rank {v}"] for v in variants]
        ax_rank.plot(range(len(variants)), ranks, marker="o", label=label)
    ax_rank.set_xticks(range(len(variants)), variants)
    ax_rank.set_yticks(range(1, len(table) + 1))
    ax_rank.invert_yaxis()
    ax_rank.set_ylabel(f"rank by {metric} (1 = best)")
    ax_rank.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_windows(tables: Mapping[str, pd.DataFrame], shares: Mapping[str, Mapping],
                 metric: str = "NDCG@10") -> plt.Figure:
    """One panel per data set: test `metric` per model trained on `all` vs `last` windows
    (mean, std over seeds as error bars), the share of positions `last` trains in the title."""
    fig, axes = plt.subplots(1, len(tables), figsize=(5.5 * len(tables), 3.6), squeeze=False)
    for ax, (name, table) in zip(axes[0], tables.items(), strict=True):
        x = np.arange(len(table))
        for i, mode in enumerate(WINDOWS):
            std = table[f"{metric} {mode} std"].fillna(0.0).to_numpy(dtype=float)
            ax.bar(x + (i - 0.5) * 0.38, table[f"{metric} {mode}"], 0.38, yerr=std,
                   capsize=3, label=f"train_windows={mode}")
        ax.set_xticks(x, table.index, rotation=20, ha="right")
        ax.set_ylabel(f"test {metric} (%)")
        share = shares[name]["share_last"]
        ax.set_title(f"{name}: `last` trains {share:.0f}% of the positions", fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_cold(table: pd.DataFrame, leak: Mapping, metric: str = "NDCG@10") -> plt.Figure:
    """Cold-item `metric` per model: target protocol, paper protocol, and the paper protocol's
    rows split into trained pairs (leaked) and the rest."""
    cols = [(f"{metric} cold_target", "target (no leak)"),
            (f"{metric} cold_paper", "paper sub-sequences"),
            (f"{metric} paper, trained pairs", "paper: trained pairs"),
            (f"{metric} paper, other rows", "paper: other rows")]
    fig, ax = plt.subplots(figsize=(9, 3.8))
    x = np.arange(len(table))
    w = 0.8 / len(cols)
    for i, (c, name) in enumerate(cols):
        ax.bar(x + i * w - 0.4 + w / 2, table[c], w, label=name)
    ax.set_xticks(x, table.index, rotation=20, ha="right")
    ax.set_ylabel(f"cold {metric} (%)")
    ax.set_title(f"cold rows: {leak['n_target_rows']} (target) vs {leak['n_rows']} (paper, "
                 f"{leak['share_trained_pairs']:.0f}% of them training pairs)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_selection(results: Mapping[str, Sequence[RunRecord]], metric: str = "NDCG@10"
                   ) -> plt.Figure:
    """Validation and test `metric` per epoch of each trained model (first seed), with the
    best-validation epoch (what is reported) and the best-test epoch marked."""
    trained = {x: runs[0] for x, runs in results.items()
               if any(h.get("test") for h in runs[0].history)}
    fig, axes = plt.subplots(1, max(len(trained), 1), figsize=(3.6 * max(len(trained), 1), 3.2),
                             squeeze=False)
    for ax, (label, rec) in zip(axes[0], trained.items(), strict=False):
        hist = [h for h in rec.history if h.get("valid")]
        ep = [h["epoch"] for h in hist]
        ax.plot(ep, [h["valid"][metric] for h in hist], label="valid")
        ax.plot(ep, [h["test"][metric] for h in hist], label="test")
        sel = selection_rows([rec], metric)[0]
        ax.axvline(sel["valid epoch"], color="tab:blue", ls="--", lw=1, label="best valid")
        ax.axvline(sel["test epoch"], color="tab:orange", ls=":", lw=1, label="best test")
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0][0].set_ylabel(f"{metric} (%)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig
