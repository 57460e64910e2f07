"""Notebook 07's library: trained models of stored runs, the paper protocol's leak, Table VIII."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from mmsr_lib.config import profile_config
from mmsr_lib.data.preprocess import SequenceData
from mmsr_lib.runs.runner import evaluate_splits, run_or_load
from mmsr_lib.runs.store import ResultsStore
from mmsr_lib.runs.trained import checkpoint_path, load_trained
from mmsr_lib.train import CheckpointError
from mmsr_lib.workbook import cold_start as cs


def hand_made(window_mode: str = "all") -> SequenceData:
    """Items 1..6; training parts u0 [1 2 3 4 5 6], u1 [1 2 1 2], u2 [2 1 2]; with threshold 2
    the cold items are 3, 4, 5, 6 (one training occurrence each)."""
    seqs = [np.array(s, dtype=np.int64) for s in
            ([1, 2, 3, 4, 5, 6, 1, 2], [1, 2, 1, 2, 6, 3], [2, 1, 2, 4, 1])]
    n_items = 6
    return SequenceData(
        seqs=seqs, user_ids=np.array(["u0", "u1", "u2"], dtype=object),
        item_ids=np.array(["<pad>", *map(str, range(1, n_items + 1))], dtype=object),
        item_text=[""] * (n_items + 1), item_image=np.full(n_items + 1, -1),
        max_len=3, cold_threshold=2, window_mode=window_mode, name="hand")


def test_cold_items_of_the_hand_made_set():
    data = hand_made()
    assert np.flatnonzero(data.cold_items).tolist() == [3, 4, 5, 6]


def test_leak_marks_exactly_the_training_pairs_of_the_paper_protocol():
    data = hand_made("all")
    cold = data.cold_eval_set("test", "paper")
    # rows: u0 targets 3, 4, 5, 6 at positions 2..5 (inside its training part, all trained in
    # "all" windows); u1 targets 6 (its valid position) and 3 (its test position); u2 target 4
    # (its valid position): none of the last three was a training target
    assert cold.users.tolist() == [0, 0, 0, 0, 1, 1, 2]
    assert cold.targets.tolist() == [3, 4, 5, 6, 6, 3, 4]
    leaked = cs.exact_training_pairs(data, cold)
    assert leaked.tolist() == [True, True, True, True, False, False, False]
    assert cs.leak_share(data, "test", "paper") == pytest.approx(4 / 7)
    # the held-out protocol has no training pair: u1's cold test target 3
    target = data.cold_eval_set("test", "target")
    assert target.targets.tolist() == [3]
    assert cs.leak_share(data, "test", "target") == 0.0


def test_leak_follows_the_training_windows():
    # "last" trains one window of L+1 = 4 items per user: u0's [3 4 5 6], so the pair
    # (prefix [1 2], target 3) was never a training example
    data = hand_made("last")
    leaked = cs.exact_training_pairs(data, data.cold_eval_set("test", "paper"))
    assert leaked.tolist() == [False, True, True, True, False, False, False]


def test_leak_needs_the_same_context_not_only_the_same_target():
    # u1 trains 1 -> 3 at the start; its test row predicts 3 after [.., 2, 1, 2]: same user and
    # target, but the model never saw that context before 3
    seqs = [np.array(s, dtype=np.int64) for s in ([1, 3, 2, 1, 2, 3], [2, 1, 2, 1, 2])]
    data = SequenceData(
        seqs=seqs, user_ids=np.array(["a", "b"], dtype=object),
        item_ids=np.array(["<pad>", "1", "2", "3"], dtype=object), item_text=[""] * 4,
        item_image=np.full(4, -1), max_len=3, cold_threshold=2)
    cold = data.cold_eval_set("test", "paper")
    assert cold.targets.tolist() == [3, 3]
    assert cs.exact_training_pairs(data, cold).tolist() == [True, False]


@pytest.fixture
def tiny_runs():
    """Two short runs of the smoke profile on a smaller catalog: IDSR and MMSR (SASRec)."""
    base = profile_config("smoke").override(
        "data.synth.n_users=90", "data.synth.n_items=70", "train.epochs=2", "model.dim=16")
    store = ResultsStore()
    runs = {kind: run_or_load(base.override(f"model.item_encoder={kind}", f"name=t-{kind}"),
                              store=store, progress=False) for kind in ("id", "mm")}
    return store, runs


def test_load_trained_reproduces_the_stored_metrics_exactly(tiny_runs):
    store, runs = tiny_runs
    for rec in runs.values():
        model, data = load_trained(rec)
        assert not model.training
        metrics, extra, ranks = evaluate_splits(model, data, rec.run_config().resolved())
        for split in ("valid", "test", "cold_valid", "cold_test"):
            assert metrics[split] == rec.metrics[split], (rec.name, split)
        stored = store.ranks(rec.config_hash)
        assert stored.keys() == ranks.keys()
        for split, r in stored.items():
            assert np.array_equal(r, ranks[split]), (rec.name, split)
        target = cs.evaluate_cold(rec, "target")
        assert target.metrics == rec.metrics["cold_test"] and not target.leaked.any()
        paper = cs.evaluate_cold(rec, "paper")
        assert paper.n_rows == len(data.cold_eval_set("test", "paper"))
        assert paper.leak_share == pytest.approx(cs.leak_share(data, "test", "paper"))
        assert 0.5 < paper.leak_share < 1.0  # most sub-sequences lie in the training part


def test_load_trained_refuses_a_checkpoint_of_another_training(tiny_runs):
    """Same config hash, other outcome (e.g. an imported record over a local re-training)."""
    _, runs = tiny_runs
    rec = runs["mm"]
    valid = {**rec.metrics["valid"], "NDCG@10": rec.metrics["valid"]["NDCG@10"] + 1e-4}
    other = dataclasses.replace(rec, metrics={**rec.metrics, "valid": valid})
    with pytest.raises(CheckpointError, match="another training.*NDCG@10"):
        load_trained(other)
    later = dataclasses.replace(rec, extra={**rec.extra, "best_epoch": rec.extra["best_epoch"] + 1})
    with pytest.raises(CheckpointError, match="best epoch"):
        load_trained(later)
    load_trained(rec)  # the record stored with this checkpoint still loads
    # a record from another CPU (an imported archive) says so: rounding differs there
    elsewhere = dataclasses.replace(other, extra={**rec.extra, "machine": {
        **rec.extra["machine"], "cpu": "Some Other CPU"}})
    with pytest.raises(CheckpointError, match="trained on 'Some Other CPU' and this machine"):
        load_trained(elsewhere)


def test_load_trained_refuses_what_it_cannot_reproduce(tiny_runs):
    _, runs = tiny_runs
    rec = runs["id"]
    checkpoint_path(rec).unlink()
    with pytest.raises(FileNotFoundError, match="force=True"):
        load_trained(rec)
    rec.status = "failed"
    with pytest.raises(ValueError, match="not done"):
        load_trained(rec)


def test_tables_and_sentences_from_stored_runs(tiny_runs):
    store, runs = tiny_runs
    results = {("SASRec", "IDSR"): [runs["id"]], ("SASRec", "MMSR"): [runs["mm"]]}
    paper = cs.paper_mode_results(results)
    table = cs.table8(results, paper)
    assert list(table.columns[:2]) == ["IDSR", "MMSR"]
    target = table.loc[("SASRec · target (leak-free)", "HR@10")]
    assert target["IDSR"] == runs["id"].metrics["cold_test"]["HR@10"]
    assert target["exact training pairs (%)"] == 0.0
    row = table.loc[("SASRec · paper sub-sequences", "NDCG@10")]
    assert row["MMSR"] == paper["SASRec", "MMSR"][0].metrics["NDCG@10"]
    assert row["exact training pairs (%)"] == pytest.approx(100 * paper["SASRec", "MMSR"][0]
                                                             .leak_share)
    # the paper's numbers in the same layout, four data sets, two metrics each
    ref = cs.paper_table8()
    assert len(ref) == 8 and ref.loc[("paper · HM (SASRec)", "HR@10"), "MMSR-T"] == 2.9385
    both = cs.with_paper(table, ref)
    assert len(both) == len(table) + 8 and math.isnan(both.iloc[-1]["cold rows"])
    leaks = cs.leak_table(paper)
    assert leaks.loc[("SASRec", "IDSR"), "rows"] == paper["SASRec", "IDSR"][0].n_rows
    ev = paper["SASRec", "IDSR"][0]
    assert ev.leaked.any()
    assert leaks.loc[("SASRec", "IDSR"), "median rank, training pairs"] == \
        np.median(ev.ranks[ev.leaked]) + 1
    tests = cs.cold_tests(store, results)
    assert tests[["A", "B"]].values.tolist() == [["MMSR", "IDSR"]]
    sentence = cs.cold_verdicts(tests)["SASRec"]
    # two-epoch runs: whatever the p value, only a converged pair may carry a claim
    if not tests["converged"].iloc[0]:
        assert "no claim" in sentence
    assert sentence.startswith(f"SASRec, {runs['id'].extra['n_cold_test']} cold test users")
    assert "exact training pairs" in cs.leak_sentence(paper, "SASRec")


@pytest.mark.parametrize("windows", ["all", "last"])
def test_leak_equals_the_trained_positions_on_the_synthetic_catalog(windows):
    """On a real catalog the exact training pairs are the rows whose target position was a
    training target: inside the training part and, with "last" windows, in the last L."""
    from mmsr_lib.runs.runner import load_data

    data = load_data(profile_config("smoke").override(
        f"data.train_windows={windows}").resolved().data)
    cold = data.cold_eval_set("test", "paper")
    position = np.diff(cold.history.indptr)  # the prefix length is the target's position
    train_len = np.array([len(s) - 2 for s in data.seqs])[cold.users]
    first = 1 if windows == "all" else np.maximum(1, train_len - data.max_len)
    trained = (position < train_len) & (position >= first)
    assert trained.any() and not trained.all()
    assert np.array_equal(cs.exact_training_pairs(data, cold), trained)


def test_median_rank_over_seeds_is_one_based_and_averaged():
    rows = np.array([True, False, True, True])
    assert cs.median_rank_over_seeds([np.array([0, 9, 4, 2]), np.array([1, 0, 1, 1])],
                                     rows) == pytest.approx((3 + 2) / 2)
    assert math.isnan(cs.median_rank_over_seeds([np.array([0, 1, 2, 3])], np.zeros(4, bool)))


def test_rebuilding_a_model_leaves_no_weight_loading_bars_and_restores_the_setting():
    from transformers.utils import logging as hf_logging

    from mmsr_lib.runs.trained import _no_weight_loading_bars

    assert hf_logging.is_progress_bar_enabled()
    with _no_weight_loading_bars():
        assert not hf_logging.is_progress_bar_enabled()
    assert hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a user's own choice is kept
    try:
        with _no_weight_loading_bars():
            pass
        assert not hf_logging.is_progress_bar_enabled()
    finally:
        hf_logging.enable_progress_bar()
