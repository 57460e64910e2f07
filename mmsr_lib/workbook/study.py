"""Tabulate the records of a grid (run with `mmsr_lib.runs.runner.run_grid`).

Every notebook is "a grid of configs -> a table -> a figure"; this module is the table part, so
the notebooks only name their configurations and narrate.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import pandas as pd

from mmsr_lib.runs.store import RunRecord

DEFAULT_METRICS = ("HR@10", "NDCG@10", "HR@20", "NDCG@20", "HR@50", "NDCG@50")


def metrics_frame(
    records: Mapping[Hashable, RunRecord],
    split: str = "test",
    metrics: Sequence[str] = DEFAULT_METRICS,
    label: str = "model",
) -> pd.DataFrame:
    """One row per label with the split's metrics (percent); missing metrics are NaN."""
    rows = []
    for name, rec in records.items():
        m = rec.metrics.get(split) or {}
        rows.append({label: name, **{k: m.get(k, float("nan")) for k in metrics}})
    return pd.DataFrame(rows)


def histories(records: Mapping[str, RunRecord]) -> dict[str, list[dict]]:
    """label -> per-epoch history, for `plots.plot_learning_curves`."""
    return {name: rec.history for name, rec in records.items()}
