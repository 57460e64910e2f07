"""Shared fixtures: tiny hand-made data sets and isolated output folders for every test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mmsr_lib.data.format import load_dataset, write_dataset


@pytest.fixture(autouse=True)
def _isolated_outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Results, checkpoints, data caches and figures of a test never touch the checkout."""
    monkeypatch.setenv("MMSR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MMSR_RESULTS", str(tmp_path / "home" / "results" / "mmsr.sqlite"))
    torch.set_num_threads(1)


def write_sequences(root: Path, seqs: dict[str, list[str]], with_images: bool = False) -> Path:
    """A data set whose user u interacted with seqs[u] in that order (timestamps 0, 1, ...)."""
    rows = [(u, i, t) for u, items in seqs.items() for t, i in enumerate(items)]
    inter = pd.DataFrame(rows, columns=["user", "item", "timestamp"])
    names = sorted({i for items in seqs.values() for i in items})
    items = pd.DataFrame(
        {"item": names, "text": [f"item {n}" for n in names],
         "image": np.arange(len(names)) if with_images else -1}
    )
    images = np.zeros((len(names), 8, 8, 3), np.uint8) if with_images else None
    return write_dataset(root, inter, items, images, {"name": root.name, "source": "test"})


@pytest.fixture
def hand_made(tmp_path: Path):
    """Three users with known sequences (one too short to survive the 5-core)."""
    seqs = {
        "u1": ["a", "b", "c", "d", "e", "f"],
        "u2": ["b", "c", "a", "b", "d"],
        "u3": ["a", "b", "c", "d"],  # 4 interactions: removed by the default filter
    }
    return load_dataset(write_sequences(tmp_path / "hand", seqs)), seqs


def constant_rank_row(store, ranks_per_seed, *overrides: str, n_users: int = 400) -> list:
    """One stored, converged run per seed (42, 43, ...) in which every user's target has the
    given rank: hand-made rows for the seeds rule, without training. `overrides` tell rows
    apart (the run name is not in the hash; e.g. "model.dim=16")."""
    from mmsr_lib.config import profile_config
    from mmsr_lib.evaluate import metrics_from_ranks

    out = []
    for seed, rank in zip((42, 43, 44, 45, 46), ranks_per_seed, strict=False):
        cfg = profile_config("smoke").override(*overrides, f"train.seed={seed}")
        ranks = np.full(n_users, rank)
        out.append(store.finish(cfg, {"metrics": {"test": metrics_from_ranks(ranks)},
                                      "ranks": {"test": ranks},
                                      "extra": {"epochs_run": 10, "best_epoch": 3,
                                                "converged": True}}))
    return out
