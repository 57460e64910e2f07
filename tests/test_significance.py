"""Per-user metrics from ranks, seed averages, paired tests and the sentences they allow."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import constant_rank_row

from mmsr_lib.config import profile_config
from mmsr_lib.evaluate import metrics_from_ranks
from mmsr_lib.runs.store import ResultsStore, RunRecord
from mmsr_lib.workbook import significance as sig


def test_per_user_metrics_average_to_the_evaluators_metrics():
    ranks = np.array([0, 1, 5, 9, 10, 49, 50, 300])
    ref = metrics_from_ranks(ranks)
    for metric in ("HR@10", "NDCG@10", "HR@50", "NDCG@20"):
        assert sig.per_user(ranks, metric).mean() == pytest.approx(ref[metric])
    with pytest.raises(ValueError, match="HR@K or NDCG@K"):
        sig.per_user(ranks, "MRR")


def test_paired_test_detects_a_shift_and_not_noise():
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 30, 2000)
    shifted = base + 2.0 + rng.normal(0, 1, 2000)
    t = sig.paired_test(shifted, base)
    assert t.significant and t.diff == pytest.approx(2.0, abs=0.1) and t.ci_low > 0
    assert t.supports_a_claim(0.05) and not t.supports_a_claim(0.0)  # the crossover's alpha
    assert sig.verdict(t, "MMSR", "IDSR").startswith("MMSR beats IDSR (NDCG@10 ")
    # the winner is the second of the pair: the sentence says whose numbers come first
    swapped = sig.paired_test(base, shifted)
    assert sig.verdict(swapped, "IDSR", "MMSR").startswith("MMSR beats IDSR (IDSR vs MMSR: ")
    noise = base + rng.normal(0, 1, 2000)
    n = sig.paired_test(noise, base)
    assert not n.significant and n.ci_low < 0 < n.ci_high
    assert sig.verdict(n, "MMSR", "IDSR").startswith("MMSR vs IDSR: no significant difference")
    same = sig.paired_test(base, base)
    assert same.p_value == 1.0 and not same.significant
    # a row that did not converge never carries a claim, significant or not
    assert "no claim" in sig.verdict(t, "MMSR", "IDSR", converged_a=False)
    with pytest.raises(ValueError, match="equal-length"):
        sig.paired_test(base, base[:10])


def test_seed_average_and_compare_read_the_stored_ranks(tmp_path):
    store = ResultsStore(tmp_path / "r.sqlite")

    def stored(name, seed, ranks):
        cfg = profile_config("smoke").override(f"name={name}", f"train.seed={seed}",
                                               f"model.dim={16 if name == 'a' else 32}")
        return store.finish(cfg, {"metrics": {"test": metrics_from_ranks(ranks)},
                                  "ranks": {"test": np.asarray(ranks)},
                                  "extra": {"epochs_run": 10, "best_epoch": 3,
                                            "converged": True}})

    a = [stored("a", s, [0, 0, 1, 30] * 50) for s in (1, 2)]
    b = [stored("b", s, [40, 40, 40, 30] * 50) for s in (1, 2)]
    avg = sig.seed_average(store, a)
    assert len(avg) == 200 and avg[0] == pytest.approx(100.0)
    t = sig.compare(store, a, b)
    assert t.significant and t.diff > 0 and sig.converged(a)
    summary = sig.summarize(a, metrics=("HR@10",))
    assert summary["HR@10"] == pytest.approx(75.0) and summary["converged"] == "2/2"
    assert summary["seeds"] == 2 and summary["HR@10 std"] == 0.0
    bare = RunRecord("x" * 16, {}, "done", metrics={"test": {}})
    with pytest.raises(KeyError, match="no stored ranks"):
        sig.seed_average(store, [bare])
    assert sig.mean_std_cell(1.234, math.nan) == "1.23"
    assert sig.mean_std_cell(1.234, 0.5) == "1.23 ± 0.50"


def test_no_claim_when_wilcoxon_and_the_mean_disagree():
    """Many small gains and a few large losses: the signed-rank test rejects (the differences
    sit above zero) while the mean difference is zero, so no direction may be claimed."""
    a = np.concatenate([np.full(100, 1.0), np.full(4, 0.0)])
    b = np.concatenate([np.zeros(100), np.full(4, 25.0)])
    t = sig.paired_test(a, b, "HR@10")
    assert t.p_value < sig.ALPHA and t.diff == pytest.approx(0.0)
    assert t.ci_low <= 0.0 <= t.ci_high
    assert not t.significant and t.tests_disagree
    text = sig.verdict(t, "MMSR", "IDSR")
    assert text.startswith("MMSR vs IDSR: no significant difference")
    assert "CI includes 0" in text


def test_a_gap_that_one_seed_reverses_is_not_claimed(tmp_path):
    """Every user gains in the seed average, so the test over users alone would claim it; but
    one of A's three seeds loses to B on every user: retrained, the row could land there, and
    the interval over seeds and users says so. With agreeing seeds the claim stands."""
    store = ResultsStore(tmp_path / "r.sqlite")

    def row(dim, ranks_per_seed):  # the name is not in the run's hash: the width tells rows apart
        return constant_rank_row(store, ranks_per_seed, f"model.dim={dim}")

    base = row(8, (5, 5))
    split = sig.compare(store, row(16, (0, 40, 0)), base)
    assert split.p_value < sig.ALPHA and split.ci_low > 0  # the users' test alone: a claim
    assert split.seeds == (3, 2) and split.seed_ci_low < 0 < split.seed_ci_high
    assert not split.significant and split.seeds_disagree and not split.tests_disagree
    text = sig.verdict(split, "MMSR", "IDSR")
    assert text.startswith("MMSR vs IDSR: no significant difference")
    assert "depends on the training seeds" in text and "seeds+users CI" in text
    assert split.ns_cell.startswith("n.s. (p=") and split.ns_cell.endswith(", seeds disagree)")
    agree = sig.compare(store, row(32, (0, 1, 0)), base)
    assert agree.significant and agree.seed_ci_low > 0 and not agree.seeds_disagree
    assert sig.verdict(agree, "MMSR", "IDSR").startswith("MMSR beats IDSR")
    # one seed a row: nothing to resample; the users' test decides whether the two trained
    # models differ, and the sentence says that one model a row is not yet a finding
    single = sig.compare(store, row(16, (0, 40, 0))[:1], base[:1])
    assert not single.seeds_tested and single.significant and single.single_seed
    text = sig.verdict(single, "MMSR", "IDSR")
    assert text.startswith("MMSR ahead of IDSR in one seed (NDCG@10 ")
    assert text.endswith("not yet a finding, train more seeds)")
    assert not sig.paired_test(np.ones(5), np.zeros(5)).single_seed  # not from rows: unknown


def test_seed_and_user_interval_does_not_depend_on_which_row_is_named_first():
    rng = np.random.default_rng(5)
    a = rng.uniform(0, 30, (3, 500))
    b = a[::-1] + rng.normal(0.3, 2.0, (3, 500))
    lo, hi = sig.seed_and_user_ci(a, b)
    assert sig.seed_and_user_ci(b, a) == (-hi, -lo)
    assert sig.seed_and_user_ci(a, b) == (lo, hi)  # and the same again


def test_seed_and_user_interval_widens_with_the_seeds_spread():
    rng = np.random.default_rng(0)
    users = rng.uniform(0, 30, 1000)
    b = np.stack([users + rng.normal(0, 1, 1000) for _ in range(3)])
    same = sig.seed_and_user_ci(b + 1.0, b)
    spread = sig.seed_and_user_ci(b + np.array([[4.0], [-2.0], [1.0]]), b)
    assert same[0] > 0.5 and same[1] < 1.5  # seeds agree: about the users' interval
    assert spread[0] < 0 < spread[1]  # same mean gain (+1), but one seed reverses it
    assert sig.seed_and_user_ci(b, b) == sig.seed_and_user_ci(b, b)  # seeded: reproducible
    with pytest.raises(ValueError, match="the same users"):
        sig.seed_and_user_ci(b, b[:, :10])


def test_a_seed_no_better_than_most_popular_is_named_though_it_converged(tmp_path):
    """A run whose validation ranks are most-popular's learned nothing beyond popularity: it is
    named, though the budget rule calls it converged; a run far above it is not."""
    from mmsr_lib.runs.runner import load_data

    store = ResultsStore(tmp_path / "r.sqlite")
    cfg = profile_config("smoke")
    popular = sig.most_popular_ranks(cfg.resolved(), "valid")
    assert len(popular) == len(load_data(cfg.resolved().data).eval_set("valid").targets)
    runs = []
    for seed, ranks in ((42, popular.copy()), (43, np.zeros_like(popular))):
        run_cfg = cfg.override(f"train.seed={seed}")
        runs.append(store.finish(run_cfg, {
            "metrics": {"valid": metrics_from_ranks(ranks)}, "ranks": {"valid": ranks},
            "extra": {"epochs_run": 30, "best_epoch": 10, "converged": True}}))
    assert sig.converged(runs)
    assert [r.config["train"]["seed"] for r in sig.not_above_most_popular(store, runs)] == [42]


def test_audit_names_failed_and_unconverged_runs_of_the_whole_store(tmp_path, capsys):
    """`mmsr results audit`: a run at most-popular's level and a run still improving at the end
    of its budget are named with why; a trained, converged run and other profiles' runs are not."""
    from mmsr_lib.cli import main

    path = tmp_path / "r.sqlite"
    store = ResultsStore(path)
    cfg = profile_config("smoke")
    popular = sig.most_popular_ranks(cfg.resolved(), "valid")
    good = np.zeros_like(popular)
    for seed, ranks, best, done in ((42, popular.copy(), 10, True), (43, good, 10, True),
                                    (44, good, 30, False)):
        store.finish(cfg.override(f"train.seed={seed}"), {
            "metrics": {"valid": metrics_from_ranks(ranks)}, "ranks": {"valid": ranks},
            "extra": {"epochs_run": 30, "best_epoch": best, "converged": done}})
    found = sig.audit(store, "smoke")
    flagged = found.flagged
    assert found.skipped == [] and found.checked == 3
    assert list(flagged["seed"]) == [42, 44]
    assert flagged["why"].iloc[0].startswith("not above most-popular")
    assert flagged["why"].iloc[1].startswith("not converged")
    other = sig.audit(store, "cpu")  # another profile: none of these runs
    assert other.flagged.empty and other.checked == 0
    assert main(["results", "audit", "--results", str(path), "--profile", "smoke"]) == 0
    out = capsys.readouterr().out
    assert "3 finished runs checked: 2 flagged" in out and "not converged" in out


def test_holm_adjusts_like_the_step_down_procedure():
    # worked by hand: sorted 0.005*4, 0.01*3, 0.03*2, 0.04*1 -> 0.02, 0.03, 0.06, max(0.06, 0.04)
    assert sig.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 0.2, 12)
    adj = sig.holm(p)
    order = np.argsort(p)
    assert (adj >= p).all() and (adj <= 1).all() and (np.diff(adj[order]) >= 0).all()
    assert (adj <= np.minimum(p * len(p), 1)).all()  # never stricter than Bonferroni
    perm = rng.permutation(12)
    assert sig.holm(p[perm]) == pytest.approx(adj[perm])  # the order given does not matter
    assert sig.holm([0.03]) == pytest.approx([0.03])
    assert sig.holm([0.6, 0.6]) == pytest.approx([1.0, 1.0])
    with pytest.raises(ValueError, match="p values in"):
        sig.holm([0.1, math.nan])


def _row(store, ranks, dim, converged=True, seeds=(42, 43)):
    """A stored row whose every seed has these per-user test ranks."""
    out = []
    for seed in seeds:
        cfg = profile_config("smoke").override(f"model.dim={dim}", f"train.seed={seed}")
        out.append(store.finish(cfg, {"metrics": {"test": metrics_from_ranks(ranks)},
                                      "ranks": {"test": np.asarray(ranks)},
                                      "extra": {"epochs_run": 10, "best_epoch": 3 if converged
                                                else 10, "converged": converged}}))
    return out


def test_a_section_of_many_pairs_claims_only_what_survives_holm(tmp_path):
    """One row ahead of B at Wilcoxon p = 0.023 (20 users gain a hit, 8 lose one, 300 tie) is
    a claim alone; in a section that also tests four pairs of no difference it is one of five
    tests, Holm's p = 0.12, and the sentence says why it is withheld. A pair whose row did not
    converge cannot carry a claim and is not counted."""
    store = ResultsStore(tmp_path / "r.sqlite")
    b_ranks = np.full(328, 20)  # no hit in the top 10 ...
    b_ranks[20:28] = 0  # ... but for 8 users
    a_ranks = np.full(328, 20)
    a_ranks[:20] = 0  # 20 other users
    rows = {"A": _row(store, a_ranks, 16), "B": _row(store, b_ranks, 8)}
    for i, dim in enumerate((24, 32, 40, 48)):
        rows[f"N{i}"] = _row(store, b_ranks, dim, converged=dim != 48)
    alone = sig.claims(store, rows, [("A", "B")])
    assert alone[0].startswith("A beats B (") and "Holm" not in alone[0]
    section = [("A", "B")] + [(f"N{i}", "B") for i in range(4)]
    lines = sig.claims(store, rows, section)
    assert len(lines) == 5 and lines[0].startswith("A vs B: no significant difference")
    assert "Holm p=0.0934 over 4 pairs" in lines[0]  # N3 did not converge: 4 pairs, 0.023 * 4
    assert "not once the section's 4 pairs are counted (Holm)" in lines[0]
    assert lines[4].startswith("N3 vs B: no claim, N3 did not converge")
    tests = sig.family_tests(store, rows, section)
    t = tests["A", "B"]
    assert t.p_value == pytest.approx(0.02334, abs=1e-4) and t.family == 4
    assert t.correction_withholds and not t.significant and not t.seeds_disagree
    assert t.ns_cell == "n.s. (p=0.023, Holm 0.093)"
    assert math.isnan(tests["N3", "B"].p_adjusted)  # not counted, not adjusted
    # two pairs: 0.023 * 2 < 0.05, the claim stands and says which p carried it
    two = sig.family_tests(store, rows, section[:2])
    assert two["A", "B"].significant and two["A", "B"].p_cell == "Holm p=0.047"
