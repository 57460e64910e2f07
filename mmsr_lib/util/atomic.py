"""Write a file so that no reader ever sees half of it: a temporary sibling, then a rename.

`os.replace` within one folder is atomic on POSIX file systems, so a kill mid-write leaves
either the previous file or the new one, never a truncated mix; a failed write removes its
temporary file. Data set folders (`data.format`) and the shared frozen cache (first finished
writer wins) follow the same idea with their own swap; every single file goes through here.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside `path` (same suffix, so writers that infer the format from the
    name still work); renamed to `path` when the block succeeds, removed when it fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """`path.write_text(text)`, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)
