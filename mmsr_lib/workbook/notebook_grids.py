"""The main table's grid of notebooks 01-06, by number or name: what `mmsr grid NN --list`
prints as train commands. It sits above the modules that define the grids, so none of them has
to import another to be found. Every run of every notebook (all its grids and seeds, what `mmsr
plan --notebook NN` prices and `mmsr grid NN --train` trains) is `plan.notebook_runs`.
"""

from __future__ import annotations

from collections.abc import Callable

from mmsr_lib.workbook import comparisons, grids
from mmsr_lib.workbook.grids import Grid

GRIDS: dict[str, Callable[..., Grid]] = {
    "01": grids.table2_configs,
    "02": grids.table3_configs,
    "03": grids.table4_configs,
    "04": lambda profile, *o: comparisons.notebook_grid("04", profile, *o),
    "05": lambda profile, *o: comparisons.notebook_grid("05", profile, *o),
    "06": lambda profile, *o: comparisons.notebook_grid("06", profile, *o),
}


def notebook_grid(notebook: str, profile: str, *overrides: str) -> Grid:
    """The grid a notebook runs ("02", "02_fusion"); notebooks whose runs depend on other runs
    (transfer) or on a sweep have their own functions (`workbook.transfer`, `crossover`)."""
    key = notebook.split("_")[0].zfill(2)
    if key not in GRIDS:
        raise ValueError(f"no grid for notebook {notebook!r}; choose one of {sorted(GRIDS)}")
    return GRIDS[key](profile, *overrides)
