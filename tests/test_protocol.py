"""Protocol variants (notebook 11) against brute-force per-user computations: tie rules, sampled
negatives and sampled ranks on small random problems with planted ties; the cold leak, the
selection bias and the reloading of stored runs on hand-made data."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest
import torch
from conftest import constant_rank_row, write_sequences

from mmsr_lib.config import profile_config
from mmsr_lib.data.format import load_dataset
from mmsr_lib.data.preprocess import build_sequences
from mmsr_lib.evaluate import (
    History,
    evaluate_model,
    mask_scores,
    metrics_from_ranks,
    target_ranks,
)
from mmsr_lib.evaluate_variants import (
    model_sampled_ranks,
    model_tie_counts,
    sample_negatives,
    sampled_ranks,
    tie_count_batches,
    tie_counts,
    tie_metric_per_user,
    tie_metrics,
    tie_ranks,
)
from mmsr_lib.runs.runner import build_model, run_grid
from mmsr_lib.runs.store import ResultsStore, RunRecord
from mmsr_lib.workbook import grids, protocol
from mmsr_lib.workbook.cold_start import exact_training_pairs


def planted_problem(seed: int, n_users: int = 40, n_items: int = 12, levels: int = 4):
    """Integer scores from few levels (many ties), random histories and targets."""
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, levels, size=(n_users, n_items + 1)).astype(np.float64)
    targets = rng.integers(1, n_items + 1, size=n_users)
    hist = [rng.choice(np.arange(1, n_items + 1), size=rng.integers(0, n_items // 2),
                       replace=False) for _ in range(n_users)]
    # plant: some targets are in their own history (repeat consumption), some rows all tied
    hist[0] = np.append(hist[0], targets[0])
    scores[1] = 2.0
    return scores, targets, hist


def brute_counts(s: np.ndarray, t: int, hist) -> tuple[int, int]:
    banned = {0} | {int(h) for h in hist if h != t}
    others = [j for j in range(len(s)) if j != t and j not in banned]
    return sum(s[j] > s[t] for j in others), sum(s[j] == s[t] for j in others)


def brute_metric(rank: int, name: str, k: int) -> float:
    if rank >= k:
        return 0.0
    return 100.0 if name == "HR" else 100.0 / math.log2(rank + 2)


def brute_random(s: np.ndarray, t: int, hist, name: str, k: int) -> float:
    """Average of the metric over every order of the target's tie group (by definition)."""
    g, e = brute_counts(s, t, hist)
    group = list(range(e + 1))  # 0 = the target, 1..e its tied items
    vals = [brute_metric(g + perm.index(0), name, k) for perm in itertools.permutations(group)]
    return float(np.mean(vals))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tie_counts_and_rules_match_brute_force(seed):
    scores, targets, hist = planted_problem(seed, n_items=7, levels=3)
    masked = mask_scores(torch.from_numpy(scores.copy()), History.from_lists(hist), targets)
    greater, equal = tie_counts(masked, targets)
    for u in range(len(targets)):
        assert (int(greater[u]), int(equal[u])) == brute_counts(scores[u], targets[u], hist[u])
    assert torch.equal(greater + equal, target_ranks(masked, torch.from_numpy(targets)))
    assert equal[1] > 0 and equal.sum() > len(targets)  # the planted ties are there
    pess, opt, rnd = (tie_ranks(masked, targets, r) for r in ("pessimistic", "optimistic",
                                                                "random"))
    assert torch.equal(opt, greater.double()) and torch.equal(pess, (greater + equal).double())
    assert torch.all(opt <= rnd) and torch.all(rnd <= pess)
    assert torch.allclose(rnd, greater.double() + equal.double() / 2)
    for metric in ("HR@1", "HR@3", "NDCG@2", "NDCG@5"):
        name, k = metric.split("@")[0], int(metric.split("@")[1])
        for rule, rank in (("pessimistic", pess), ("optimistic", opt)):
            got = tie_metric_per_user(greater.numpy(), equal.numpy(), metric, rule)
            want = [brute_metric(int(r), name, k) for r in rank]
            np.testing.assert_allclose(got, want, atol=1e-12)
        got = tie_metric_per_user(greater.numpy(), equal.numpy(), metric, "random")
        want = [brute_random(scores[u], targets[u], hist[u], name, k)
                for u in range(len(targets))]
        np.testing.assert_allclose(got, want, atol=1e-12)


def test_random_rule_is_the_mean_of_random_tie_breaks():
    scores, targets, hist = planted_problem(5, n_users=30, n_items=10, levels=2)
    masked = mask_scores(torch.from_numpy(scores.copy()), History.from_lists(hist), targets)
    g, e = (x.numpy() for x in tie_counts(masked, targets))
    rng = np.random.default_rng(0)
    draws = []
    for _ in range(4000):  # break every tie by a random jitter, then the pessimistic rank
        jitter = torch.from_numpy(rng.random(masked.shape) * 1e-3)
        draws.append(target_ranks(masked + jitter, torch.from_numpy(targets)).numpy())
    mc = np.mean([tie_metric_per_user(d, np.zeros_like(d), "NDCG@3", "pessimistic")
                  for d in draws], axis=0)
    np.testing.assert_allclose(tie_metric_per_user(g, e, "NDCG@3", "random"), mc, atol=2.5)


def test_tie_metrics_pessimistic_equals_metrics_from_ranks_and_batches_agree():
    from mmsr_lib.evaluate import metrics_from_ranks

    scores, targets, hist = planted_problem(3, n_users=50, n_items=30, levels=5)
    history = History.from_lists(hist)

    def fn(b0, b1):
        return torch.from_numpy(scores[b0:b1].copy())

    g1, e1 = tie_count_batches(fn, targets, history, batch_size=7)
    g2, e2 = tie_count_batches(fn, targets, history, batch_size=50)
    assert np.array_equal(g1, g2) and np.array_equal(e1, e2)
    assert tie_metrics(g1, e1, (1, 5, 10)) == pytest.approx(metrics_from_ranks(g1 + e1,
                                                                               (1, 5, 10)))
    opt = tie_metrics(g1, e1, (5,), "optimistic")
    rnd = tie_metrics(g1, e1, (5,), "random")
    pes = tie_metrics(g1, e1, (5,), "pessimistic")
    assert pes["HR@5"] <= rnd["HR@5"] <= opt["HR@5"]
    with pytest.raises(ValueError, match="tie rule"):
        tie_metrics(g1, e1, (5,), "lucky")
    with pytest.raises(ValueError, match="HR@K or NDCG@K"):
        tie_metric_per_user(g1, e1, "MRR@5")


@pytest.mark.parametrize("weighted", [False, True])
def test_sampled_negatives_exclude_history_and_target(weighted):
    scores, targets, hist = planted_problem(4, n_users=60, n_items=40)
    history = History.from_lists(hist)
    weights = np.arange(41, dtype=float) if weighted else None
    if weighted:
        weights[5] = 0.0  # never drawn
    neg = sample_negatives(history, targets, 40, 10, np.random.default_rng(1), weights)
    assert neg.shape == (60, 10)
    for u in range(60):
        row = neg[u]
        assert len(set(row.tolist())) == 10 and np.all(row > 0)  # distinct, none empty
        assert targets[u] not in row and not set(row) & set(hist[u].tolist())
        assert np.all(np.diff(row) > 0)
        if weighted:
            assert 5 not in row
    # the draws do not depend on the batch size
    again = sample_negatives(history, targets, 40, 10, np.random.default_rng(1), weights,
                             batch_size=7)
    assert np.array_equal(neg, again)


def test_sampling_with_few_candidates_fills_with_empty_slots():
    history = History.from_lists([[1, 2], [3]])
    neg = sample_negatives(history, np.array([3, 1]), 4, 5, np.random.default_rng(0))
    assert neg[0].tolist() == [0, 0, 0, 0, 4]  # only item 4 is left for user 0
    assert neg[1].tolist() == [0, 0, 0, 2, 4]
    with pytest.raises(ValueError, match="n_items"):
        sample_negatives(history, np.array([3, 1]), 4, 2, np.random.default_rng(0),
                         weights=np.ones(3))
    with pytest.raises(ValueError, match=">= 0"):
        sample_negatives(history, np.array([3, 1]), 4, 2, np.random.default_rng(0),
                         weights=-np.ones(5))


def test_sampling_frequencies_follow_the_weights():
    """One negative per row: P(item) = weight / total weight of the row's candidates."""
    n_items, n_rows = 6, 30000
    weights = np.array([0.0, 1, 2, 3, 4, 0, 10])
    history = History.from_lists([[] for _ in range(n_rows)])
    targets = np.full(n_rows, 6)
    for w in (weights, None):
        neg = sample_negatives(history, targets, n_items, 1, np.random.default_rng(3), w)
        freq = np.bincount(neg[:, 0], minlength=n_items + 1) / n_rows
        cand = (np.ones(n_items + 1) if w is None else w.copy())
        cand[[0, 6]] = 0.0  # padding and the target are never candidates
        np.testing.assert_allclose(freq, cand / cand.sum(), atol=0.01)


@pytest.mark.parametrize("seed", [0, 1])
def test_sampled_ranks_match_brute_force_with_ties(seed):
    scores, targets, hist = planted_problem(seed, n_users=40, n_items=25, levels=3)
    history = History.from_lists(hist)
    neg = sample_negatives(history, targets, 25, 8, np.random.default_rng(seed))
    neg[2, :3] = 0  # empty slots never count

    def fn(b0, b1):
        return torch.from_numpy(scores[b0:b1].copy())

    got = sampled_ranks(fn, targets, neg, batch_size=6)
    want = [sum(1 for j in neg[u] if j > 0 and scores[u, j] >= scores[u, targets[u]])
            for u in range(len(targets))]
    assert got.tolist() == want
    assert np.array_equal(got, sampled_ranks(fn, targets, neg, batch_size=40))
    bad = scores.copy()
    bad[0, neg[0, -1]] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        sampled_ranks(lambda b0, b1: torch.from_numpy(bad[b0:b1].copy()), targets, neg)


# -- on hand-made data: a model with ties, reloading, the cold leak, selection --------------------
@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    rng = np.random.default_rng(0)
    seqs = {}
    for u in range(40):
        start, n = rng.integers(30), rng.integers(6, 16)
        seqs[f"u{u:02d}"] = [f"i{(start + k) % 30:02d}" for k in range(n)]
    seqs["u99"] = ["rare", "i00", "i01", "rare2", "i02", "i03"]  # two cold items
    return write_sequences(tmp_path_factory.mktemp("proto") / "d", seqs)


def test_model_level_ties_and_sampled_ranks_on_most_popular(dataset):
    data = build_sequences(load_dataset(dataset), max_len=6)
    cfg = profile_config("smoke").override("model.recommender=mostpop")
    model = build_model(cfg, data)
    es = data.eval_set("test")
    g, e = model_tie_counts(model, es, batch_size=9)
    full = evaluate_model(model, es, batch_size=5).ranks
    assert np.array_equal(g + e, full) and e.max() > 0  # popularity counts tie
    counts = data.train_counts.astype(float)
    for u in range(len(es)):
        assert (g[u], e[u]) == brute_counts(counts, es.targets[u], es.history_of(u))
    neg = sample_negatives(es.history, es.targets, data.n_items, 5, np.random.default_rng(0))
    got = model_sampled_ranks(model, es, neg, batch_size=4)
    want = [sum(counts[j] >= counts[es.targets[u]] for j in neg[u] if j > 0)
            for u in range(len(es))]
    assert got.tolist() == want


def test_cold_leak_counts_training_pairs(dataset):
    for windows in ("all", "last"):
        data = build_sequences(load_dataset(dataset), max_len=3, train_windows=windows)
        leak = protocol.cold_leak(data, "test")
        ev = data.cold_eval_set("test", "paper")
        in_train, trained = [], []
        for u, p in zip(ev.users, np.diff(ev.history.indptr), strict=True):
            t = len(data.seqs[u]) - 2  # training part seq[:-2]
            in_train.append(p < t)
            first = 1 if windows == "all" else max(1, t - data.max_len)
            trained.append(p < t and p >= first)
        assert leak["in_train"].tolist() == in_train
        assert leak["trained"].tolist() == trained
        # notebook 07's definition of the leak (by training contexts) is the same rows
        assert np.array_equal(exact_training_pairs(data, ev), leak["trained"])
        assert leak["n_rows"] == len(ev) > 0
        assert leak["share_in_train"] == pytest.approx(100 * np.mean(in_train))
        assert leak["n_target_rows"] == len(data.cold_eval_set("test", "target"))
    # with `all` windows every position of the training part is a training target
    data = build_sequences(load_dataset(dataset), max_len=3, train_windows="all")
    leak = protocol.cold_leak(data)
    assert leak["n_trained_pairs"] == leak["n_in_train"] > 0


def _record(history, test_ndcg, seed=42):
    return RunRecord(config_hash=f"h{seed}", config={"train": {"seed": seed}}, status="done",
                     metrics={"test": {"NDCG@10": test_ndcg, "HR@10": 0.0}}, history=history,
                     extra={"epochs_run": len(history), "converged": True}, name="r")


def test_selection_rows_and_table():
    hist = [{"epoch": e, "valid": {"NDCG@10": v}, "test": {"NDCG@10": t}}
            for e, v, t in ((1, 1.0, 2.0), (2, 3.0, 2.5), (3, 3.0, 4.0), (4, 2.0, 3.5))]
    rows = protocol.selection_rows([_record(hist, 2.5)])
    # the first best validation (epoch 2) is what the trainer keeps; test peaks at epoch 3
    assert rows[0]["valid epoch"] == 2 and rows[0]["test epoch"] == 3
    assert rows[0]["at valid"] == 2.5 and rows[0]["at test"] == 4.0
    table = protocol.selection_table({"A": [_record(hist, 2.5)],
                                      "B": [_record(hist[:1], 2.0, seed=43)]})
    assert table.loc["A", "bias"] == pytest.approx(1.5)
    assert table.loc["B", "bias"] == 0.0 and table.loc["A", "reported = history"]
    assert table.loc["A", "rank valid-selected"] == 1.0
    no_test = [{k: v for k, v in h.items() if k != "test"} for h in hist]
    with pytest.raises(ValueError, match="track_test"):
        protocol.selection_rows([_record(no_test, 2.5)])


def test_kendall_and_flips():
    import pandas as pd

    a = pd.Series({"x": 3.0, "y": 2.0, "z": 1.0})
    assert protocol.kendall(a, a)[0] == pytest.approx(1.0)
    assert protocol.kendall(a, -a)[0] == pytest.approx(-1.0)
    assert math.isnan(protocol.kendall(a.iloc[:1], a.iloc[:1])[0])


def test_model_configs_share_the_table4_runs():
    """Without track_test the models are Table IV's rows (notebook 03 trains them once)."""
    ours = protocol.model_configs("smoke", track_test=False)
    t4 = grids.table4_configs("smoke")
    for label, key in protocol.MODELS.items():
        if key is not None:
            assert ours[label].hash() == t4[key].hash()
    ml = protocol.model_configs("cpu", dataset="movielens-100k", track_test=False,
                                include_mostpop=False)
    t4ml = grids.table4_configs("cpu", dataset="movielens-100k")
    assert set(ml) == {"IDSR SASRec", "IDSR GRU4Rec", "IDSR NextItNet", "MMSR-T SASRec"}
    assert ml["MMSR-T SASRec"].hash() == t4ml["SASRec", "MMSR-T"].hash()
    last = protocol.model_configs("smoke", windows="last")
    assert all(c.resolved().data.train_windows == "last" for c in last.values())
    assert all(c.resolved().train.track_test for c in last.values())
    with pytest.raises(ValueError, match="windows"):
        protocol.model_configs("smoke", windows="first")


def test_reevaluate_reloads_stored_runs_exactly(dataset, tmp_path):
    """Reloaded best weights reproduce the stored test ranks; every variant is computed."""
    base = profile_config("smoke").override(
        "data.source=path", f"data.path={dataset}", "data.max_len=6", "model.dim=16",
        "train.epochs=2", "train.batch_size=16", "train.track_test=true")
    configs = {"IDSR SASRec": base.override("model.sequence=sasrec"),
               "MostPop": base.override("model.recommender=mostpop")}
    store = ResultsStore()
    runs = run_grid(configs, store=store, progress=False, seeds=[42])
    evals = protocol.reevaluate(runs, store, n_negatives=5)
    for label, evs in evals.items():
        ev = evs[0]
        assert ev.matches_store is True, label
        assert set(ev.ranks) == {"full", "uniform-5", "popularity-5", "cold_target",
                                 "cold_paper"}
        assert ev.ranks["uniform-5"].max() <= 5
    table = protocol.protocol_table(evals, protocol.sampled_variants(5))
    assert table.loc["IDSR SASRec", "HR@10 full"] == pytest.approx(
        runs["IDSR SASRec"][0].metrics["test"]["HR@10"])
    assert table["HR@10 uniform-5"].eq(100.0).all()  # 6 candidates: every rank is a hit
    ties = protocol.tie_table(evals)
    assert ties.loc["MostPop", "rows with a tie (%)"] > 0
    assert ties.loc["IDSR SASRec", "HR@10 moves by"] == 0.0
    sel = protocol.selection_table(runs)
    assert sel["reported = history"].all()


def _reeval(label, full, other, conv=True):
    full, other = np.asarray(full), np.asarray(other)
    return protocol.Reevaluation(label, 42, label, conv, {"full": full, "other": other,
                                                          "empty": np.zeros(0, np.int64)},
                                 full, np.zeros_like(full), True)


def test_ordering_flips_report_each_changed_pair_with_its_tests():
    rng = np.random.default_rng(0)
    good, bad = rng.integers(0, 3, 300), rng.integers(5, 10, 300)
    evals = {"A": [_reeval("A", good, bad)], "B": [_reeval("B", bad, good)],
             "C": [_reeval("C", bad + 100, bad + 100, conv=False)]}
    table = protocol.protocol_table(evals, ("full", "other"))
    assert table["rank full"].to_dict() == {"A": 1.0, "B": 2.0, "C": 3.0}
    assert table["rank other"].to_dict() == {"A": 2.0, "B": 1.0, "C": 3.0}
    flips = protocol.ordering_flips(evals, "full", "other")
    assert flips["pair"].tolist() == ["A vs B"]
    # one seed a row: a difference between two trained models, not yet a finding
    assert flips["verdict full"].iloc[0] == "A ahead of B in one seed"
    assert flips["verdict other"].iloc[0] == "B ahead of A in one seed"
    kt = protocol.kendall_table(table, "full", ("full", "other"))
    assert kt.loc["other", "ordering changed"] and kt.loc["other", "Kendall tau"] < 1
    text = protocol.ordering_sentence(kt, {"other": flips}, "Test:")
    assert "1 pair(s) change order" in text and "A ahead of B in one seed" in text
    assert protocol.ordering_flips(evals, "full", "empty").empty
    # an unconverged row is never claimed to differ
    evals["C"] = [_reeval("C", bad + 100, np.zeros(300, np.int64), conv=False)]
    flips = protocol.ordering_flips(evals, "full", "other")
    row = flips[flips["pair"] == "A vs C"].iloc[0]
    assert row["verdict full"].startswith("no claim")


def test_ordering_flips_apply_the_seeds_rule():
    """A's seeds 42 and 44 beat B on every user under "full", seed 43 loses everywhere: the
    seed average still wins on every user (the users' test alone would claim it), but over
    seeds and users it is not a finding."""
    good, bad = np.zeros(300, np.int64), np.full(300, 5)
    awful = np.full(300, 40)
    evals = {"A": [dataclasses.replace(_reeval("A", r, bad), seed=s)
                   for s, r in zip((42, 43, 44), (good, awful, good), strict=True)],
             "B": [dataclasses.replace(_reeval("B", np.full(300, 3), good), seed=s)
                   for s in (42, 43, 44)]}
    flips = protocol.ordering_flips(evals, "full", "other")
    (row,) = flips.to_dict("records")
    assert row["verdict full"] == "no significant difference (seeds disagree)"
    assert row["verdict other"] == "B beats A"


def _cold_reeval(label, ranks, seed=42):
    ranks = np.asarray(ranks)
    return protocol.Reevaluation(label, seed, f"{label}{seed}", True,
                                 {"cold_target": ranks[:2], "cold_paper": ranks}, ranks,
                                 np.zeros_like(ranks), True)


def test_cold_table_splits_the_paper_rows_by_the_leak_with_their_median_rank():
    """Question 4's table: NDCG@10 on trained pairs vs the rest, and the trained pairs' median
    rank (1-based, per seed, then averaged): a model that memorised them ranks them on top."""
    trained = np.array([True, True, True, False, False])
    leak = {"trained": trained}
    evals = {"memorises": [_cold_reeval("m", [0, 0, 2, 400, 300], 42),
                           _cold_reeval("m", [0, 1, 1, 500, 200], 43)],
             "does not": [_cold_reeval("d", [250, 273, 300, 260, 280])]}
    table = protocol.cold_table(evals, leak)
    assert table.loc["memorises", "median rank, trained pairs"] == pytest.approx((1 + 2) / 2)
    assert table.loc["does not", "median rank, trained pairs"] == 274.0
    # NDCG@10 of ranks 0, 0, 2 (seed 42) and 0, 1, 1 (seed 43) on the trained pairs
    per_row = [100 / math.log2(r + 2) for r in (0, 0, 2, 0, 1, 1)]
    assert table.loc["memorises", "NDCG@10 paper, trained pairs"] == pytest.approx(
        np.mean(per_row))
    assert table.loc["memorises", "NDCG@10 paper, other rows"] == 0.0
    assert table.loc["does not", "NDCG@10 paper, trained pairs"] == 0.0
    assert math.isnan(table.loc["does not", "p (trained vs other)"])  # all zeros: no test


def test_window_table_pairs_last_with_all_and_shows_the_test(dataset, tmp_path):
    """Question 3's table: per model, means over seeds under both window modes, the paired
    test last vs all (difference, its CI, p) and a verdict that claims nothing from two-epoch,
    unconverged runs."""
    base = profile_config("smoke").override(
        "data.source=path", f"data.path={dataset}", "data.max_len=3", "model.dim=16",
        "train.epochs=2", "train.batch_size=16", "model.sequence=sasrec")
    store = ResultsStore()
    runs_all = run_grid({"IDSR SASRec": base}, store=store, progress=False, seeds=[42, 43])
    runs_last = run_grid({"IDSR SASRec": base.override("data.train_windows=last")},
                         store=store, progress=False, seeds=[42, 43])
    table = protocol.window_table(store, runs_all, runs_last)
    row = table.loc["IDSR SASRec"]
    test = protocol.compare(store, runs_last["IDSR SASRec"], runs_all["IDSR SASRec"])
    assert row["NDCG@10 last - all"] == pytest.approx(test.diff)
    assert row["p"] == test.p_value
    assert row["95% CI"] == f"{test.ci_low:+.2f}..{test.ci_high:+.2f}"
    assert row["NDCG@10 all"] == pytest.approx(np.mean(
        [r.metrics["test"]["NDCG@10"] for r in runs_all["IDSR SASRec"]]))
    assert row["converged all"] == "0/2" and "no claim" in row["verdict"]


def test_window_verdicts_say_when_the_seeds_withhold_a_gap(tmp_path):
    """A gap every user shows in the seed average but one seed reverses: the short verdicts of
    question 3 (table and flips) say "no significant difference (seeds disagree)", so a reader
    who sees p < 0.05 beside it knows why it is not a claim."""
    store = ResultsStore(tmp_path / "r.sqlite")

    def row(windows, dim, ranks_per_seed):
        return constant_rank_row(store, ranks_per_seed, f"model.dim={dim}",
                                 f"data.train_windows={windows}")

    runs_all = {"A": row("all", 8, (5, 5, 5)), "B": row("all", 16, (3, 3, 3))}
    runs_last = {"A": row("last", 8, (0, 40, 0)), "B": row("last", 16, (3, 3, 3))}
    table = protocol.window_table(store, runs_all, runs_last)
    test = protocol.compare(store, runs_last["A"], runs_all["A"])
    assert test.p_value < 0.05 and test.seeds_disagree
    assert table.loc["A", "verdict"] == "last vs all: no significant difference (seeds disagree)"
    flips = protocol.window_flips(store, runs_all, runs_last)
    (flip,) = flips.to_dict("records")
    assert flip["pair"] == "A vs B"
    assert flip["verdict last"] == "no significant difference (seeds disagree)"
    assert flip["verdict all"] == "B beats A"


def test_question_3_judges_its_models_as_one_family(tmp_path):
    """Four models' last-vs-all tests are one table's claims: a gap of Wilcoxon p = 0.023 (20
    users gain a hit under `all`, 8 lose one) is a claim alone, but with three models of no
    difference beside it Holm's p is 0.093 and the verdict says why it is withheld."""
    store = ResultsStore(tmp_path / "r.sqlite")

    def row(windows, dim, ranks):
        out = []
        for seed in (42, 43):
            cfg = profile_config("smoke").override(f"model.dim={dim}", f"train.seed={seed}",
                                                   f"data.train_windows={windows}")
            out.append(store.finish(cfg, {"metrics": {"test": metrics_from_ranks(ranks)},
                                          "ranks": {"test": ranks},
                                          "extra": {"epochs_run": 10, "best_epoch": 3,
                                                    "converged": True}}))
        return out

    last = np.full(328, 20)
    last[20:28] = 0
    gain = np.full(328, 20)
    gain[:20] = 0
    runs_all = {"A": row("all", 8, gain)}
    runs_last = {"A": row("last", 8, last)}
    alone = protocol.window_table(store, runs_all, runs_last)
    assert alone.loc["A", "verdict"] == "all beats last" and np.isnan(alone.loc["A", "p Holm"])
    for name, dim in (("N1", 16), ("N2", 24), ("N3", 32)):
        runs_all[name], runs_last[name] = row("all", dim, last), row("last", dim, last)
    table = protocol.window_table(store, runs_all, runs_last)
    assert table.loc["A", "verdict"] == ("last vs all: no significant difference "
                                         "(Holm over 4 pairs)")
    assert table.loc["A", "p Holm"] == pytest.approx(4 * table.loc["A", "p"])
    assert protocol.window_sentence("A", table.loc["A"]).endswith("p=0.023, Holm p=0.093)")
