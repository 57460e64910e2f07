"""A small validation-only search, so a baseline is as strong as its advocates would make it.

`tune(base, space)` trains every combination of `space` (a grid: each key a dotted config
field, each value the candidates) as a one-seed grid through `run_grid` (stored, resumable,
reused; the trials not yet stored train first in `$MMSR_WORKERS` processes) and picks the
combination with the best *validation* NDCG@10 among converged runs. The test split is
never looked at. The chosen settings are what the profile table then fixes for that model
(`config.PROFILE_TABLE`; for GRU4Rec and NextItNet, per data set,
`workbook.grids.SEQUENCE_SETTINGS`), with the search recorded in docs/results_cpu.md. A
numeric setting chosen at the end of its range (`Search.at_edge`) says the range was too narrow:
the optimum may lie beyond it.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from mmsr_lib.config import RunConfig
from mmsr_lib.runs.runner import run_grid
from mmsr_lib.runs.store import ResultsStore, RunRecord

log = logging.getLogger("mmsr.tuning")

SELECTION = ("valid", "NDCG@10")
# what an advocate of an ID model would search first (RecBole's and SASRec's usual ranges)
ID_SPACE: dict[str, tuple] = {
    "train.lr": (1e-3, 3e-3),
    "model.dropout": (0.1, 0.3),
    "train.loss": ("bce", "ce"),
}


@dataclass
class Search:
    """Every trial with its settings and validation score, and the chosen settings."""

    trials: pd.DataFrame
    best: dict[str, object]
    best_record: RunRecord
    at_edge: dict[str, str]  # numeric field -> "smallest" | "largest" candidate chosen

    def overrides(self) -> list[str]:
        return [f"{k}={v}" for k, v in self.best.items()]

    def edge_warnings(self) -> list[str]:
        """One sentence per setting chosen at the end of its range: widen the space there."""
        return [f"{key}={self.best[key]} is the {side} value tried: extend the range beyond it "
                "before calling it the best" for key, side in self.at_edge.items()]


def at_edge(space: Mapping[str, Sequence], best: Mapping[str, object]) -> dict[str, str]:
    """The numeric fields of `space` whose chosen value is the smallest or largest of its
    candidates (fields with one candidate or non-numeric candidates are skipped)."""
    out = {}
    for key, candidates in space.items():
        try:
            values = sorted({float(v) for v in candidates})
            chosen = float(best[key])
        except (TypeError, ValueError):
            continue  # a categorical field (train.loss): it has no range
        if len(values) < 2:
            continue
        if chosen == values[0]:
            out[key] = "smallest"
        elif chosen == values[-1]:
            out[key] = "largest"
    return out


def grid(space: Mapping[str, Sequence]) -> list[dict[str, object]]:
    """Every combination of `space`, in a stable order."""
    keys = list(space)
    return [dict(zip(keys, values, strict=True))
            for values in itertools.product(*(space[k] for k in keys))]


def trial_configs(base: RunConfig, space: Mapping[str, Sequence]
                  ) -> list[tuple[dict[str, object], RunConfig]]:
    """Each combination of `space` and its run: `base` with those settings, named
    ``<name>-tune<i>`` (so trial 0 of a space that starts at the row's own setting is the
    row's stored run)."""
    if not space:
        raise ValueError("an empty search space: give at least one field and its candidates")
    return [(settings, base.override(*(f"{k}={v}" for k, v in settings.items()),
                                     f"name={base.name}-tune{i}"))
            for i, settings in enumerate(grid(space))]


SCORE_COLUMNS = ("valid NDCG@10", "test NDCG@10 (not used)", "best epoch", "epochs run",
                 "converged")


def trial_scores(rec: RunRecord) -> dict[str, object]:
    """A stored trial's row of the search table (`SCORE_COLUMNS`)."""
    split, metric = SELECTION
    return dict(zip(SCORE_COLUMNS, (
        rec.metrics[split][metric], rec.metrics["test"][metric], rec.extra.get("best_epoch"),
        rec.extra.get("epochs_run"), bool(rec.extra.get("converged"))), strict=True))


def tune(base: RunConfig, space: Mapping[str, Sequence] = ID_SPACE,
         store: ResultsStore | None = None, progress: bool = False,
         allow_stale: bool = False, workers: int | None = None) -> Search:
    """Train every combination (one seed: `base`'s) and choose on validation NDCG@10.

    The trials not yet stored train side by side in `workers` processes (default
    `parallel.grid_workers`: `$MMSR_WORKERS`, else one per core on the cpu profile), so one
    command keeps every core busy; the trials are then read back in grid order, so the choice
    does not depend on who trained what. Converged runs are preferred: a combination whose
    best epoch hit the budget only wins if no combination converged (and is flagged in
    `trials`).
    """
    configs = trial_configs(base, space)
    # the trials are a one-seed grid: `run_grid` trains the pending ones in processes, then loads
    stored = run_grid(dict(enumerate(cfg for _, cfg in configs)), store=store,
                      progress=progress, allow_stale=allow_stale, seeds=(base.train.seed,),
                      workers=workers)
    records = [stored[i][0] for i in range(len(configs))]
    trials = pd.DataFrame([{**settings, **trial_scores(rec), "hash": rec.config_hash}
                           for (settings, _), rec in zip(configs, records, strict=True)])
    pool = trials[trials["converged"]] if trials["converged"].any() else trials
    idx = int(pool["valid NDCG@10"].idxmax())
    best = {k: trials.loc[idx, k] for k in space}
    log.info("tuned %s: %s (valid NDCG@10 %.3f)", base.name, best,
             trials.loc[idx, "valid NDCG@10"])
    search = Search(trials, best, records[idx], at_edge(space, best))
    for warning in search.edge_warnings():
        log.warning("tuned %s: %s", base.name, warning)
    return search
