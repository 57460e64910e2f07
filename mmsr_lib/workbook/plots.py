"""Figures: learning curves, item galleries, result bars. Saved atomically into `figures/`."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt  # headless machines fall back to Agg by themselves
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from mmsr_lib.data.images import ImageStore
from mmsr_lib.data.preprocess import SequenceData
from mmsr_lib.util.atomic import atomic_path
from mmsr_lib.util.paths import resolve


def save_figure(fig: plt.Figure, path: str | Path, dpi: int = 130) -> Path:
    """PNG written to a temporary name and renamed, so a figure on disk is never half-written.

    A relative `path` is anchored at the project home (`mmsr_lib.util.paths`), so a notebook, whose
    working directory is `notebooks/`, writes to the top-level `figures/` like the CLI does."""
    path = resolve(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
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


def plot_ours_vs_paper(
    side: pd.DataFrame, metric: str = "HR@10", title: str = "",
    ours_std: pd.Series | None = None, dataset: str = "HM",
) -> plt.Figure:
    """Our rows beside the paper's, one horizontal bar panel each, in the same row order.

    `side` is `grids.compare_with_paper`'s table (columns "<metric> (ours)" and "(paper)").
    The two panels have their own scales: the data sets differ, so the *orderings* are what
    compare; the best row of each panel is drawn darker. Seed std as error bars when given.
    """
    labels = [" · ".join(map(str, k)) if isinstance(k, tuple) else str(k) for k in side.index]
    y = np.arange(len(labels))
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.34 * len(labels) + 1.4), sharey=True)
    for ax, col, name in ((axes[0], f"{metric} (ours)", "ours"),
                          (axes[1], f"{metric} (paper)", f"paper ({dataset})")):
        values = side[col].to_numpy(dtype=float)
        best = np.nanargmax(values) if np.isfinite(values).any() else -1
        colors = ["#1f4e79" if i == best else "#7fa7d0" for i in range(len(values))]
        err = ours_std.reindex(side.index).to_numpy(dtype=float) if (
            ours_std is not None and name == "ours") else None
        ax.barh(y, np.nan_to_num(values), xerr=err, color=colors, capsize=2)
        # the label starts after the error bar, not on it
        ends = values + (np.nan_to_num(err) if err is not None else 0.0)
        for yi, v, end in zip(y, values, ends, strict=True):
            if np.isfinite(v):
                ax.annotate(f"{v:.2f}", (end, yi), xytext=(3, 0), textcoords="offset points",
                            va="center", fontsize=7)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(f"test {metric} (%)")
        ax.margins(x=0.15)
    axes[0].set_yticks(y, labels, fontsize=8)
    axes[0].invert_yaxis()
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig
