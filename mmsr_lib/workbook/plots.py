"""Figures: learning curves, item galleries, result bars. Saved atomically into `figures/`."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt  # headless machines fall back to Agg by themselves
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from mmsr_lib.data.images import ImageStore
from mmsr_lib.data.preprocess import SequenceData
from mmsr_lib.util.paths import resolve


def save_figure(fig: plt.Figure, path: str | Path, dpi: int = 130) -> Path:
    """PNG written to a temporary name and renamed, so a figure on disk is never half-written.

    A relative `path` is anchored at the project home (`mmsr_lib.util.paths`), so a notebook, whose
    working directory is `notebooks/`, writes to the top-level `figures/` like the CLI does."""
    path = resolve(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    os.replace(tmp, path)
    return path


def plot_learning_curves(
    histories: dict[str, list[dict]], metric: str = "NDCG@10", ax: plt.Axes | None = None
) -> plt.Figure:
    """Training loss (left) and validation `metric` (right) per epoch for several runs."""
    if ax is None:
        fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(10, 3.6))
    else:
        fig, ax_loss, ax_val = ax.figure, ax, ax.twinx()
    for label, hist in histories.items():
        if not hist:
            continue
        ep = [h["epoch"] for h in hist]  # counted from 1
        ax_loss.plot(ep, [h["loss"] for h in hist], label=label)
        val = [(h["epoch"], h["valid"][metric]) for h in hist if h.get("valid")]
        if val:
            ax_val.plot(*zip(*val, strict=True), marker="o", ms=3, label=label)
    ax_loss.set(xlabel="epoch", ylabel="training loss (BCE)", title="training loss")
    ax_val.set(xlabel="epoch", ylabel=f"valid {metric} (%)", title=f"validation {metric}")
    for a in (ax_loss, ax_val):
        a.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    ax_val.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_items(
    data: SequenceData, items: Sequence[int] | None = None, n: int = 8, width: int = 28
) -> plt.Figure:
    """A gallery of items: image above, text below (what the multi-modal encoders see)."""
    if items is None:
        rng = np.random.default_rng(0)
        items = rng.choice(np.arange(1, data.n_items + 1), size=min(n, data.n_items), replace=False)
    items = list(items)
    store = ImageStore(Path(data.image_path)) if data.image_path else None
    fig, axes = plt.subplots(1, len(items), figsize=(2.3 * len(items), 3.4))
    for ax, item in zip(np.atleast_1d(axes), items, strict=True):
        if store is not None:
            ax.imshow(store.get(np.array([data.item_image[item]]))[0])
        else:
            ax.text(0.5, 0.5, "no image", ha="center", va="center")
        cold = " (cold)" if data.cold_items[item] else ""
        ax.set_title(f"item {data.item_ids[item]}{cold}", fontsize=8)
        ax.set_xlabel(textwrap.fill(data.item_text[item], width), fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def plot_metric_bars(
    table: pd.DataFrame, metrics: Sequence[str] = ("HR@10", "NDCG@10"), label_col: str = "model"
) -> plt.Figure:
    """Grouped bars of test metrics (percent) per model."""
    fig, ax = plt.subplots(figsize=(1.6 + 1.2 * len(table), 3.4))
    x = np.arange(len(table))
    w = 0.8 / len(metrics)
    for i, m in enumerate(metrics):
        ax.bar(x + i * w - 0.4 + w / 2, table[m].to_numpy(dtype=float), w, label=m)
    ax.set_xticks(x, table[label_col].astype(str), rotation=20, ha="right")
    ax.set_ylabel("test metric (%)")
    ax.legend()
    fig.tight_layout()
    return fig
