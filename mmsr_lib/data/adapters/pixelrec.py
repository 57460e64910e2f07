"""Short-video data sets in the PixelRec / MicroLens / Bili / Kwai style: an interaction table,
an item table with titles, and cover images (a folder of ``<item_id>.jpg`` or an LMDB database).

The tables are found by their *headers* (any CSV/TSV in ``src`` or one folder below it):

* interactions: a user, an item and a time column, e.g. PixelRec's ``item_id,user_id,timestamp``
  or MicroLens' ``userID,videoID,timestamp``;
* items: an item column and a title column and no user column, e.g. PixelRec's
  ``item_id,...,title,tag,description`` or MicroLens' ``item,title``.

Column names are matched ignoring case, ``_``, ``-``, spaces and RecBole's ``:type`` suffix,
against `USER_COLUMNS`, `ITEM_COLUMNS`, `TIME_COLUMNS` and `TITLE_COLUMNS` (first match wins).
The item text is the title only: the paper uses "the title and cover of each video" for Bili
and Kwai; the other text columns are ignored. Covers: ``images=`` if given, else a sub-folder
named cover(s)/images/... (or with "cover" in its name), else an LMDB database (a folder holding
``data.mdb`` or a ``*.lmdb`` file, read only when the ``lmdb`` package is installed); without
one the import is text only.
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd

from mmsr_lib.data.adapters._common import default_images, keyed_images, source_dir, start
from mmsr_lib.data.importer import (
    ImportReport,
    InputFormatError,
    detect_delimiter,
    import_frames,
    parse_timestamps,
    read_delimited,
)
from mmsr_lib.util.registry import register

log = logging.getLogger("mmsr.data")

# normalised names (lower case, no "_", "-", " "), in order of preference
USER_COLUMNS = ("userid", "user", "uid", "reviewerid", "customerid", "u")
ITEM_COLUMNS = ("itemid", "item", "iid", "videoid", "video", "photoid", "asin", "pid", "i")
TIME_COLUMNS = ("timestamp", "ts", "time", "unixtime", "datetime", "date", "t")
TITLE_COLUMNS = ("title", "titleen", "itemtitle", "videotitle", "caption", "text", "name")
COVER_FOLDERS = ("covers", "cover", "images", "image", "imgs", "pics", "thumbnails")
_TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".tab", ".inter", ".item", ".dat")
_LAYOUT = ("an interaction table (user, item, timestamp columns), an item table (item, title) "
           "and covers/<item_id>.jpg or an LMDB database")
TEXT_RECIPE = "the title column only (as the paper does for Bili and Kwai)"


def normalise_column(name: str) -> str:
    """``"User_ID:token"`` -> ``"userid"``: the key column names are matched with."""
    base = str(name).split(":", 1)[0]
    return "".join(ch for ch in base.lower() if ch not in "_- \t\ufeff")


def pick_column(header: list[str], choices: tuple[str, ...]) -> str | None:
    """The header name matching the first of `choices` (normalised), or None."""
    by_norm: dict[str, str] = {}
    for h in header:
        by_norm.setdefault(normalise_column(h), h)
    for c in choices:
        if c in by_norm:
            return by_norm[c]
    return None


def _header(path: Path) -> list[str] | None:
    """The header fields of a table file, or None when the first line cannot be read."""
    try:
        sep = detect_delimiter(path)
        with open(path, encoding="utf-8-sig", newline="") as f:
            fields = next(csv.reader(f, delimiter=sep), None)
        return [h.strip() for h in fields] if fields else None
    except (OSError, UnicodeDecodeError, csv.Error):
        return None


def find_tables(src: Path) -> tuple[Path, Path]:
    """(interactions, items) among the table files in `src` and its direct sub-folders,
    recognised by their headers; an error listing the candidates when not exactly one each."""
    files = [p for p in sorted(src.iterdir()) if p.is_file()]
    for sub in sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if normalise_column(sub.name) in COVER_FOLDERS or "cover" in sub.name.lower():
            continue
        files += [p for p in sorted(sub.iterdir()) if p.is_file()]
    inter, items, seen = [], [], []
    for path in files:
        if path.suffix.lower() not in _TABLE_SUFFIXES or path.name.startswith("."):
            continue
        header = _header(path)
        if not header:
            continue
        seen.append(f"{path.relative_to(src)}: {header[:8]}")
        has = {k: pick_column(header, c) is not None for k, c in
               (("user", USER_COLUMNS), ("item", ITEM_COLUMNS), ("time", TIME_COLUMNS),
                ("title", TITLE_COLUMNS))}
        if has["user"] and has["item"] and has["time"]:
            inter.append(path)
        elif has["item"] and has["title"] and not has["user"]:
            items.append(path)
    if len(inter) != 1 or len(items) != 1:
        raise FileNotFoundError(
            f"{src}: expected exactly one interaction table (user, item and time columns) and "
            f"one item table (item and title columns, no user column); found interactions "
            f"{[str(p.relative_to(src)) for p in inter]} and items "
            f"{[str(p.relative_to(src)) for p in items]} among {seen or 'no table files'}. "
            f"Accepted names: user {USER_COLUMNS}, item {ITEM_COLUMNS}, time {TIME_COLUMNS}, "
            f"title {TITLE_COLUMNS}. Point --src at a folder with one of each (symlinks are "
            "fine) or rename the header.")
    return inter[0], items[0]


def find_covers(src: Path) -> Path | None:
    """A cover folder, else an LMDB database, directly in `src` (None: text only)."""
    subs = [p for p in sorted(src.iterdir()) if p.is_dir()]
    for name in COVER_FOLDERS:
        for p in subs:
            if p.name.lower() == name and not (p / "data.mdb").is_file():
                return p
    for p in subs:
        if "cover" in p.name.lower() and not (p / "data.mdb").is_file():
            return p
    for p in subs:
        if (p / "data.mdb").is_file():
            return p
    lmdb_files = [p for p in sorted(src.iterdir()) if p.is_file() and
                  p.suffix.lower() == ".lmdb"]
    return lmdb_files[0] if lmdb_files else None


@register("data_format", "pixelrec", aliases=("bili", "kwai", "microlens"),
          description="PixelRec / MicroLens / Bili / Kwai style: interaction table (user, item, "
                      "timestamp), item table (item, title), covers/<item_id>.jpg or LMDB")
def import_pixelrec(src: str | os.PathLike, out: str | os.PathLike,
                    **options: Any) -> ImportReport:
    """Import a short-video data set laid out as the module docstring says."""
    src = source_dir(src, "pixelrec", _LAYOUT)
    opts = start(out, options)
    inter_path, items_path = find_tables(src)
    header = _header(inter_path) or []
    ucol, icol, tcol = (pick_column(header, c) for c in (USER_COLUMNS, ITEM_COLUMNS,
                                                         TIME_COLUMNS))
    cols = (ucol, icol, tcol)
    raw, lines = read_delimited(inter_path, required=cols, usecols=cols, categorical=(ucol, icol),
                                what="interactions")
    timestamps = parse_timestamps(raw[tcol], inter_path, column=tcol, line_of=lines)
    inter = pd.DataFrame({"user": raw[ucol], "item": raw[icol], "timestamp": timestamps})
    del raw
    item_header = _header(items_path) or []
    item_col, title_col = pick_column(item_header, ITEM_COLUMNS), \
        pick_column(item_header, TITLE_COLUMNS)
    if item_col is None or title_col is None:  # find_tables matched them; the file changed
        raise InputFormatError(f"{items_path}: no item/title column in {item_header}")
    table, _ = read_delimited(items_path, required=(item_col, title_col),
                              usecols=(item_col, title_col), what="items")
    ids = table[item_col].astype(str).str.strip()
    image_path = default_images(src, opts.images, ()) or find_covers(src)
    if image_path is None:
        log.warning("%s has no cover folder or LMDB database and no --images was given: "
                    "importing text only", src)
    source, keys = keyed_images(image_path, ids)
    items = pd.DataFrame({"item": ids.to_numpy(), "text": table[title_col].to_numpy(),
                          "image": keys})
    try:
        return import_frames(
            inter, items, source, out, **opts.frames(), drop_unused_items=True, fmt="pixelrec", source=f"short-video data (PixelRec style) from {src}",
            inputs={"interactions": str(inter_path), "items": str(items_path),
                    "images": str(image_path) if image_path is not None else None,
                    "columns": {"user": ucol, "item": icol, "timestamp": tcol,
                                "item_table_item": item_col, "title": title_col}},
            extra_meta={"text_recipe": TEXT_RECIPE,
                        "timestamp_unit": f"as in column {tcol!r} (integers kept, dates as "
                                          "Unix seconds)"},
            where=(str(inter_path), str(items_path)),
        )
    finally:
        if source is not None:
            source.close()
