"""The explorer cell as notebook 02 should carry it, and a one-cell notebook holding it.

The cell is self-contained (its own imports; the parameters cell's values when that cell ran,
else their defaults), so a user who opens 02 and runs only its last cell gets the explorer, and
papermill's run of the whole notebook gets the same hashes as the tables above it.
"""

from __future__ import annotations

from pathlib import Path

EXPLORER_CELL = '''\
# Runs on its own too (before the cells above): its own imports, and the parameters cell's
# profile, seed and data_path when that cell ran, else their defaults ($MMSR_PROFILE, 42, none).
from mmsr_lib.workbook.explorer import Explorer, notebook_overrides
from mmsr_lib.workbook.notebooks import record

explorer = Explorer(globals().get("profile"),
                    notebook_overrides(globals().get("seed", 42), globals().get("data_path")))
explorer.run()  # the default: RoBERTa + MAE, merge-attention 1, SASRec (Table III's MergeAttn-1)
record("explorer_hr10", explorer.record.metrics["test"]["HR@10"])
explorer  # the widget, showing the run above; choose another configuration and click the button
'''


def write_notebook(path: Path, *sources: str) -> Path:
    """A notebook of code cells with the python3 kernel named (JupyterLab asks no kernel)."""
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, path)
    return path
