"""Data set statistics in the shape of the paper's Table I, after the same preprocessing.

The numbers are computed on what training sees: `build_sequences` (the 5-interaction user
filter, chronological order) is reused rather than re-implemented, so the table and the models
can never disagree about which users and items exist.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from mmsr_lib.data.format import RawDataset, load_dataset
from mmsr_lib.data.preprocess import SequenceData, build_sequences

TABLE_I_COLUMNS = ("users", "items", "cold", "avg_seq_len", "interactions", "density",
                   "sparsity", "interactions_per_item")


def dataset_statistics(
    data: RawDataset | SequenceData | str | os.PathLike,
    *,
    min_user_interactions: int = 5,
    cold_threshold: int = 10,
) -> dict[str, Any]:
    """Table I columns for a data set (folder, `RawDataset`) or already built `SequenceData`.

    users, items, interactions and avg_seq_len (interactions per user) after the user filter;
    density = interactions / (users x items) and sparsity = 1 - density (repeat interactions
    count, as in the sequences); interactions_per_item; cold = the paper's "#cold", the number
    of truncated sub-sequences that end in a cold item (fewer than `cold_threshold` occurrences
    in the training part), the same set `SequenceData.cold_eval_set("test", "paper")` evaluates.
    A `SequenceData` argument is used as built (its own filter and threshold).
    """
    if isinstance(data, (str, os.PathLike)):
        data = load_dataset(data)
    if isinstance(data, RawDataset):
        seq = build_sequences(data, min_user_interactions=min_user_interactions,
                              cold_threshold=cold_threshold)
        name = str(data.meta.get("name", data.root.name))
    elif isinstance(data, SequenceData):
        seq, name = data, data.name
    else:
        raise TypeError(f"dataset_statistics takes a data set folder, a RawDataset or "
                        f"SequenceData, not {type(data).__name__}")
    lengths = np.fromiter((len(s) for s in seq.seqs), dtype=np.int64, count=seq.n_users)
    n_users, n_items = seq.n_users, seq.n_items
    n_inter = int(lengths.sum())
    if n_users:
        targets = np.concatenate([s[1:] for s in seq.seqs])
        cold = int(seq.cold_items[targets].sum())
    else:
        cold = 0
    density = n_inter / (n_users * n_items) if n_users and n_items else 0.0
    return {
        "name": name,
        "users": n_users,
        "items": n_items,
        "interactions": n_inter,
        "avg_seq_len": float(lengths.mean()) if n_users else 0.0,
        "median_seq_len": float(np.median(lengths)) if n_users else 0.0,
        "density": density,
        "sparsity": 1.0 - density,
        "interactions_per_item": n_inter / n_items if n_items else 0.0,
        "cold": cold,
        "cold_items": int(seq.cold_items.sum()),
        "min_user_interactions": int(min_user_interactions) if not isinstance(
            data, SequenceData) else None,
        "cold_threshold": int(seq.cold_threshold),
    }


def statistics_table(datasets: Mapping[str, RawDataset | SequenceData | str | os.PathLike],
                     **kwargs: Any) -> pd.DataFrame:
    """One row of `dataset_statistics` per named data set, columns in Table I order first."""
    rows = {name: dataset_statistics(d, **kwargs) for name, d in datasets.items()}
    frame = pd.DataFrame.from_dict(rows, orient="index")
    rest = [c for c in frame.columns if c not in TABLE_I_COLUMNS and c != "name"]
    return frame[list(TABLE_I_COLUMNS) + rest]
