"""What a stored result was computed with: a digest of the library's code and key versions.

A stored run is reused only while this fingerprint (and its data's) still matches, so a table
can never silently come from older code. Computed once per process: it describes the code this
process imported.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
from pathlib import Path

PACKAGES = ("torch", "transformers", "timm", "numpy")


@functools.cache
def code_fingerprint() -> str:
    """sha256 of every ``mmsr_lib`` source file (path + bytes) and the versions in `PACKAGES`."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    for name in PACKAGES:
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            version = "absent"
        h.update(f"{name}=={version}".encode())
    return h.hexdigest()[:16]
