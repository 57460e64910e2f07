"""Negative sampling and training batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import write_sequences

from mmsr_lib.data.format import load_dataset
from mmsr_lib.data.loaders import TrainBatches, sample_negatives
from mmsr_lib.data.preprocess import build_sequences


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(0)
    seqs = {f"u{u}": [f"i{j}" for j in rng.choice(30, size=rng.integers(5, 25))] for u in range(40)}
    return build_sequences(load_dataset(write_sequences(tmp_path / "d", seqs)), max_len=8)


def test_negatives_never_in_user_training_sequence(data):
    rng = np.random.default_rng(1)
    users = np.repeat(np.arange(data.n_users), 50)
    neg = sample_negatives(users, users.shape, data.n_items, data.train_membership, rng)
    for u, n in zip(users, neg, strict=True):
        assert n not in set(data.seqs[u][:-2].tolist())
    assert neg.min() >= 1 and neg.max() <= data.n_items


def test_negatives_impossible_user_is_a_clear_error():
    membership = np.array([0 * 4 + 1, 0 * 4 + 2, 0 * 4 + 3])  # user 0 has every item of 3
    with pytest.raises(RuntimeError, match="every item"):
        sample_negatives(np.zeros(5, np.int64), (5,), 3, membership, np.random.default_rng(0))


def test_batches_deterministic_per_epoch_and_index(data):
    a, b = TrainBatches(data, 8, seed=3), TrainBatches(data, 8, seed=3)
    a.set_epoch(2)
    b.set_epoch(2)
    for i in range(len(a)):
        for k in ("users", "inputs", "targets", "negatives"):
            assert torch.equal(a[i][k], b[i][k])
    b.set_epoch(3)
    assert not torch.equal(a[0]["users"], b[0]["users"])


def test_batches_cover_windows_once_and_mask_padding(data):
    tb = TrainBatches(data, 7, seed=0)
    tb.set_epoch(0)
    users = torch.cat([tb[i]["users"] for i in range(len(tb))]).numpy()
    assert sorted(users.tolist()) == sorted(tb.window_users.tolist())  # every window once
    for i in range(len(tb)):
        b = tb[i]
        assert torch.equal(b["negatives"] == 0, b["targets"] == 0)
        # each target is the input of the next position (shifted sequence)
        both = (b["inputs"][:, 1:] > 0) & (b["targets"][:, :-1] > 0)
        assert both.any()
        assert torch.equal(b["inputs"][:, 1:][both], b["targets"][:, :-1][both])
