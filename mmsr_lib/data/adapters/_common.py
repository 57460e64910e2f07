"""Helpers the provider adapters share: text recipes, source folders, image folders."""

from __future__ import annotations

import html
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mmsr_lib.data.format import check_writable_target
from mmsr_lib.data.importer import FolderImages, ImageSource, ImportOptions, image_source

_TAG_RE = re.compile(r"<[^>]*>")
_SPACE_RE = re.compile(r"\s+")


def clean_field(value: Any) -> str:
    """One text field as a plain single-line string: lists joined with spaces, HTML tags
    removed and entities unescaped (Amazon metadata carries both), whitespace collapsed."""
    if value is None:
        return ""
    if isinstance(value, float) and value != value:  # NaN
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(p for p in (clean_field(v) for v in value) if p)
    text = str(value)
    if "<" in text:
        text = _TAG_RE.sub(" ", text)
    if "&" in text:
        text = html.unescape(text)
    return _SPACE_RE.sub(" ", text).strip()


def compose_text(parts: Iterable[Any]) -> str:
    """Join the non-empty parts as sentences: "a. b. c" (no doubled full stops)."""
    out: list[str] = []
    for part in parts:
        p = clean_field(part)
        if not p:
            continue
        if out and not out[-1].endswith((".", "!", "?", ":", ";")):
            out[-1] += "."
        out.append(p)
    return " ".join(out)


def unique_join(values: Iterable[Any], sep: str = ", ") -> str:
    """Non-empty values joined once each, in first-seen order (tags often repeat)."""
    kept: list[str] = []
    seen: set[str] = set()
    for v in values:
        p = clean_field(v)
        if p and p.lower() not in seen:
            seen.add(p.lower())
            kept.append(p)
    return sep.join(kept)


def source_dir(src: str | os.PathLike, fmt: str, layout: str) -> Path:
    """`src` as an existing folder, else an error that shows the expected layout."""
    path = Path(src)
    if not path.is_dir():
        raise FileNotFoundError(f"--src {path} is not a folder; the {fmt} format expects "
                                f"{layout} (docs/adapters.md)")
    return path


def start(out: str | os.PathLike, options: dict[str, Any]) -> ImportOptions:
    """The call's options, checked, and the output folder checked, before reading any (large)
    input."""
    opts = ImportOptions.of(options)
    check_writable_target(Path(out), opts.overwrite)
    return opts


def default_images(src: Path, images: str | os.PathLike | None,
                   names: tuple[str, ...]) -> Path | None:
    """The image folder/database: `images` when given (must exist), else the first of `names`
    under `src` that exists, else None (text only, reported in the coverage)."""
    if images is not None:
        path = Path(images)
        if not path.exists():
            raise FileNotFoundError(f"--images {path} does not exist; pass the folder (or LMDB "
                                    "database) holding the item images")
        return path
    for name in names:
        if (src / name).exists():
            return src / name
    return None


def keyed_images(path: Path | None, ids: pd.Series) -> tuple[ImageSource | None, np.ndarray]:
    """The image source at `path` and each item's key in it: for a folder the file
    ``<item_id>.<jpg|jpeg|png|webp|...>`` found by one directory listing ("" when absent), for
    an LMDB database the item id itself. The caller closes the source."""
    ids = ids.astype(str)
    if path is None:
        return None, np.full(len(ids), "", dtype=object)
    source = image_source(path)
    if isinstance(source, FolderImages):
        index = source.index_by_stem()
        return source, np.asarray([index.get(i, "") for i in ids], dtype=object)
    return source, ids.to_numpy(dtype=object)
