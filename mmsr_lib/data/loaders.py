"""Training batches: a permutation of the training windows per epoch and one random negative per
position (see `SequenceData.train_windows`).

Each batch is a pure function of (seed, epoch, batch index), so a run resumed from a checkpoint
sees exactly the batches and negatives an uninterrupted run would, with or without DataLoader
workers.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from mmsr_lib.data.preprocess import SequenceData


def sample_negatives(
    users: np.ndarray,
    shape: tuple[int, ...],
    n_items: int,
    membership: np.ndarray,
    rng: np.random.Generator,
    max_rounds: int = 100,
) -> np.ndarray:
    """Uniform item indices in 1..n_items, never an item of the user's own training sequence.

    `users` broadcasts against `shape` (e.g. [B, 1] for [B, L]); `membership` holds sorted keys
    user * (n_items + 1) + item (see `SequenceData.train_membership`). Rejected draws are redrawn
    together, a few rounds at most in practice.
    """
    base = n_items + 1
    users = np.broadcast_to(users, shape)
    neg = rng.integers(1, n_items + 1, size=shape)
    for _ in range(max_rounds):
        keys = users * base + neg
        pos = np.searchsorted(membership, keys)
        pos = np.minimum(pos, len(membership) - 1) if len(membership) else pos
        bad = membership[pos] == keys if len(membership) else np.zeros(shape, bool)
        if not bad.any():
            return neg
        neg[bad] = rng.integers(1, n_items + 1, size=int(bad.sum()))
    raise RuntimeError(
        "negative sampling failed: some users have interacted with (almost) every item, so no "
        "negative can be drawn. Remove such users or use a larger catalog."
    )


class TrainBatches(Dataset):
    """Dataset whose items are whole batches: `batches[i]` -> dict of [B, L] tensors.

    Use with `DataLoader(batch_size=None)`; `set_epoch` reshuffles deterministically.
    """

    def __init__(self, data: SequenceData, batch_size: int, seed: int) -> None:
        self.inputs, self.targets, self.window_users = data.train_windows
        self.windows = np.arange(len(self.targets))  # every window holds at least one pair
        self.n_items = data.n_items
        self.membership = data.train_membership
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0
        self.order = self.windows

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        rng = np.random.default_rng([self.seed, epoch, 0])
        self.order = rng.permutation(self.windows)

    def __len__(self) -> int:
        return (len(self.windows) + self.batch_size - 1) // self.batch_size

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        windows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        users = self.window_users[windows]
        inputs = self.inputs[windows]
        targets = self.targets[windows]
        rng = np.random.default_rng([self.seed, self.epoch, 1, index])
        neg = sample_negatives(users[:, None], targets.shape, self.n_items, self.membership, rng)
        neg = np.where(targets > 0, neg, 0)
        return {
            "users": torch.from_numpy(users),
            "inputs": torch.from_numpy(inputs),
            "targets": torch.from_numpy(targets),
            "negatives": torch.from_numpy(neg),
        }


def train_loader(batches: TrainBatches, num_workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """Batches in order (the shuffle is inside `TrainBatches`), optionally prefetched by workers."""
    return DataLoader(
        batches,
        batch_size=None,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=False,
    )
