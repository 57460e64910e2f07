"""Split and cold-set correctness on hand-made sequences (the evaluation contract)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import write_sequences

from mmsr_lib.data.format import load_dataset
from mmsr_lib.data.preprocess import EmptyDatasetError, build_sequences


def names(data, idx):
    return [data.item_ids[i] for i in np.atleast_1d(idx)]


def test_user_filter_and_chronological_order(hand_made):
    raw, seqs = hand_made
    data = build_sequences(raw, max_len=3)
    assert data.n_users == 2  # u3 has 4 < 5 interactions
    assert list(data.user_ids) == ["u1", "u2"]
    assert names(data, data.seqs[0]) == seqs["u1"]
    assert names(data, data.seqs[1]) == seqs["u2"]
    assert data.item_ids[0] == "<pad>" and data.n_items == 6


def test_timestamps_sort_not_file_order(tmp_path):
    import pandas as pd

    from mmsr_lib.data.format import write_dataset

    inter = pd.DataFrame({"user": ["u"] * 5, "item": list("abcde"), "timestamp": [5, 1, 4, 2, 3]})
    items = pd.DataFrame({"item": list("abcde"), "text": list("abcde"), "image": -1})
    raw = load_dataset(write_dataset(tmp_path / "t", inter, items, None, {"name": "t"}))
    data = build_sequences(raw)
    assert names(data, data.seqs[0]) == ["b", "d", "e", "c", "a"]


def test_leave_one_out_split(hand_made):
    raw, seqs = hand_made
    data = build_sequences(raw, max_len=3)
    valid, test = data.eval_set("valid"), data.eval_set("test")
    # u1 = a b c d e f: valid predicts e from (a b c d) truncated to the last 3; test predicts f
    assert names(data, valid.targets[0]) == ["e"] and names(data, test.targets[0]) == ["f"]
    assert names(data, valid.inputs[0]) == ["b", "c", "d"]
    assert names(data, test.inputs[0]) == ["c", "d", "e"]
    # the history to mask is the whole prefix, not only the last max_len items
    assert sorted(names(data, valid.history_of(0))) == ["a", "b", "c", "d"]
    assert sorted(names(data, test.history_of(0))) == ["a", "b", "c", "d", "e"]
    # training never sees the last two items: windows come from a b c d
    inputs, targets, owners = data.train_windows
    assert owners.tolist() == [0, 1]
    assert names(data, inputs[0]) == ["a", "b", "c"] and names(data, targets[0]) == ["b", "c", "d"]
    # u2 = b c a b d: training part b c a -> inputs (pad b c), targets (pad c a)
    assert inputs[1, 0] == 0 and targets[1, 0] == 0
    assert names(data, inputs[1, 1:]) == ["b", "c"] and names(data, targets[1, 1:]) == ["c", "a"]


def test_cold_items_count_training_part_only(hand_made):
    raw, _ = hand_made
    data = build_sequences(raw, cold_threshold=2)
    counts = dict(zip(names(data, np.arange(1, 7)), data.train_counts[1:], strict=True))
    # training parts: u1 a b c d, u2 b c a
    assert counts == {"a": 2, "b": 2, "c": 2, "d": 1, "e": 0, "f": 0}
    assert sorted(names(data, np.flatnonzero(data.cold_items))) == ["d", "e", "f"]
    assert not data.cold_items[0]


def test_cold_eval_target_mode(hand_made):
    raw, _ = hand_made
    data = build_sequences(raw, cold_threshold=2)
    cold_test = data.cold_eval_set("test", "target")  # targets f (u1, cold) and d (u2, cold)
    assert sorted(names(data, cold_test.targets)) == ["d", "f"]
    cold_valid = data.cold_eval_set("valid", "target")  # targets e (u1, cold), b (u2, warm)
    assert names(data, cold_valid.targets) == ["e"] and list(cold_valid.users) == [0]


def test_cold_eval_paper_mode_subsequences(hand_made):
    raw, _ = hand_made
    data = build_sequences(raw, max_len=3, cold_threshold=2)
    es = data.cold_eval_set("test", "paper")
    got = sorted(
        (int(u), "".join(names(data, es.history_of(r))), names(data, es.targets[r])[0])
        for r, u in enumerate(es.users)
    )
    # u1 = a b c d e f: prefixes ending before the cold d, e, f; u2 = b c a b d: before d
    assert [(u, t) for u, _, t in got] == [(0, "d"), (0, "e"), (0, "f"), (1, "d")]
    assert sorted(h for _, h, _ in got) == sorted(["abc", "abcd", "abcde", "bcab"])


def test_empty_after_filtering_is_a_clear_error(tmp_path):
    raw = load_dataset(write_sequences(tmp_path / "e", {"u": ["a", "b", "c"]}))
    with pytest.raises(EmptyDatasetError, match="fewer than 5 interactions"):
        build_sequences(raw)


def test_item_kcore_repeats_until_stable(tmp_path):
    seqs = {f"u{i}": ["a", "b", "c", "d", "e", f"x{i}"] for i in range(3)}
    raw = load_dataset(write_sequences(tmp_path / "k", seqs))
    data = build_sequences(raw, min_item_interactions=2)
    assert data.n_items == 5 and all(len(s) == 5 for s in data.seqs)


@pytest.mark.parametrize("max_len", [1, 2, 3, 5, 20])
def test_all_windows_use_every_training_position_exactly_once(tmp_path, max_len):
    """Under data.train_windows=all every position of seq[:-2] (but the first) is the target of
    exactly one window, after its own history (inputs are the previous items, in order)."""
    seqs = {"u1": [f"i{k}" for k in range(23)], "u2": [f"i{k % 7}" for k in range(9)],
            "u3": ["a", "b", "c", "d", "e"]}
    raw = load_dataset(write_sequences(tmp_path / f"w{max_len}", seqs))
    data = build_sequences(raw, max_len=max_len, train_windows="all")
    inputs, targets, owners = data.train_windows
    for u, s in enumerate(data.seqs):
        train = s[:-2]
        rows = np.flatnonzero(owners == u)
        got = sorted(int(t) for r in rows for t in targets[r][targets[r] > 0])
        assert got == sorted(int(t) for t in train[1:])  # each position once
        assert sum((targets[r] > 0).sum() for r in rows) == len(train) - 1
        for r in rows:  # inputs/targets are the window shifted by one, in time order
            real = targets[r] > 0
            assert np.array_equal(inputs[r][real][1:], targets[r][real][:-1])
    last = build_sequences(raw, max_len=max_len, train_windows="last")
    li, lt, lo = last.train_windows
    assert lo.tolist() == [0, 1, 2]  # one window per user: the last L+1 training items
    assert (lt > 0).sum() == sum(min(len(s) - 3, max_len) for s in data.seqs)
    with pytest.raises(ValueError, match="train_windows"):
        build_sequences(raw, train_windows="some")
