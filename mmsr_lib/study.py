"""Run a named grid of configurations through the results store and tabulate it.

Every notebook is "a grid of configs -> a table -> a figure"; this module is that shape, so the
notebooks only name their configurations and narrate.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence

import pandas as pd

from mmsr_lib.config import RunConfig
from mmsr_lib.results import ResultsStore, RunRecord, run_or_load

log = logging.getLogger("mmsr.study")

DEFAULT_METRICS = ("HR@10", "NDCG@10", "HR@20", "NDCG@20", "HR@50", "NDCG@50")


def run_grid(
    configs: Mapping[Hashable, RunConfig],
    store: ResultsStore | None = None,
    force: bool = False,
    progress: bool = True,
) -> dict[Hashable, RunRecord]:
    """Run (or load, when already done) every configuration, in order; label -> record."""
    from mmsr_lib.experiment import run_experiment

    store = store or ResultsStore()
    out = {}
    for label, cfg in configs.items():
        log.info("%s: %s", label, cfg.hash())
        out[label] = run_or_load(
            cfg, runner=lambda c: run_experiment(c, progress=progress), store=store, force=force
        )
    return out


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
