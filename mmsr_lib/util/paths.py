"""Where relative paths (data cache, checkpoints, results, figures) are anchored.

A notebook runs with its own folder as the working directory and the CLI with the shell's, yet
both must find the same `data/`, `runs/`, `results/` and `figures/`. Relative paths are therefore
resolved against `MMSR_HOME` if set, else the project checkout that holds this package, else the
working directory (an installed, non-editable package).
"""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    env = os.environ.get("MMSR_HOME")
    if env:
        return Path(env).expanduser().resolve()
    root = Path(__file__).resolve().parents[2]  # mmsr_lib/util/paths.py -> the checkout
    if (root / "pyproject.toml").exists() and (root / "mmsr_lib").is_dir():
        return root
    return Path.cwd()


def resolve(path: str | os.PathLike) -> Path:
    """`path` itself when absolute, else anchored at `home()`."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else home() / p
