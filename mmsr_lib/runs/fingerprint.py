"""What a stored result was computed with: a digest of the library's code and key versions.

A stored run is reused only while this fingerprint (and its data's) still matches, so a table
can never silently come from older code. It covers every module that can change a number a run
stores (config, data, models, evaluation, training, the runner) and leaves out those that only
present, store or launch results (`PRESENTATION`): a new table layout must not retrain the
study. Computed once per process: it describes the code this process imported.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
from pathlib import Path

PACKAGES = ("torch", "transformers", "timm", "numpy")
# relative paths under mmsr_lib/ whose code cannot change a stored number
PRESENTATION = ("workbook/", "cli.py", "bench.py", "plan.py", "runs/store.py",
                "runs/fingerprint.py", "runs/tuning.py", "__main__.py")


@functools.cache
def code_fingerprint() -> str:
    """sha256 of every ``mmsr_lib`` source file (path + bytes) and the versions in `PACKAGES`."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith(PRESENTATION):
            continue
        h.update(rel.encode())
        h.update(path.read_bytes())
    for name in PACKAGES:
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            version = "absent"
        h.update(f"{name}=={version}".encode())
    return h.hexdigest()[:16]
