"""Amazon reviews, 2018 (McAuley lab, "Amazon Review Data (2018)") and 2023 ("Amazon Reviews'23")
releases, read as published: one JSON object per line, plain or gzip-compressed.

* 2018: reviews ``<Category>.json[.gz]`` with reviewerID, asin, unixReviewTime (seconds), ...;
  metadata ``meta_<Category>.json[.gz]`` with asin, title, brand, category (list), feature
  (list), description (list or string), imageURL / imageURLHighRes (lists).
* 2023: reviews ``<Category>.jsonl[.gz]`` with user_id, parent_asin (the item: all variants of
  a product are one item), timestamp (milliseconds), ...; metadata ``meta_<Category>.jsonl[.gz]``
  with parent_asin, title, store, categories, features, description (lists), images (list of
  dicts).

Images are never downloaded: they come from a local folder keyed by item id
(``images/<asin>.jpg``, any common extension) or an LMDB database. Items whose metadata lists
image URLs but that have no local file are counted (``image_url_without_file``), so a user
sees how many covers are still to be fetched by other means.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import zlib
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from mmsr_lib.data.adapters._common import (
    compose_text,
    default_images,
    keyed_images,
    start,
    unique_join,
)
from mmsr_lib.data.importer import (
    ImportReport,
    InputFormatError,
    check_input_file,
    import_frames,
    timestamp_value,
)
from mmsr_lib.util.registry import register

log = logging.getLogger("mmsr.data")

_JSON_SUFFIXES = (".json", ".jsonl", ".json.gz", ".jsonl.gz")
_LAYOUT = ("a reviews file <Category>.json[l][.gz] and its meta_<Category>.json[l][.gz] "
           "(in --src, or --src is the reviews file) and images/<item id>.jpg")

AMAZON2018_TEXT_RECIPE = (
    "'{title}. {brand}. {categories}. {features}. {description}': categories = the category "
    "list joined with ', ' (repeats left out), features and description lists joined with "
    "spaces; HTML tags removed, entities unescaped, empty parts skipped"
)
AMAZON2023_TEXT_RECIPE = (
    "'{title}. {store}. {categories}. {features}. {description}': categories = the categories "
    "list joined with ', ' (main_category when it is empty), features and description lists "
    "joined with spaces; HTML tags removed, entities unescaped, empty parts skipped"
)


@dataclass(frozen=True)
class _Schema:
    fmt: str
    user: str
    item: str
    time: str
    meta_item: str
    text: Callable[[dict], str]
    has_image_url: Callable[[dict], bool]
    recipe: str
    unit: str
    other: str  # the other release, named in hints


def _text_2018(rec: dict) -> str:
    return compose_text([rec.get("title"), rec.get("brand"), unique_join(rec.get("category") or
                         []), rec.get("feature"), rec.get("description")])


def _text_2023(rec: dict) -> str:
    cats = rec.get("categories") or [rec.get("main_category")]
    return compose_text([rec.get("title"), rec.get("store"), unique_join(cats),
                         rec.get("features"), rec.get("description")])


def _urls_2018(rec: dict) -> bool:
    return bool(rec.get("imageURLHighRes") or rec.get("imageURL"))


def _urls_2023(rec: dict) -> bool:
    imgs = rec.get("images") or []
    return any(isinstance(i, dict) and any(i.get(k) for k in ("hi_res", "large", "thumb"))
               for i in imgs)


SCHEMA_2018 = _Schema("amazon2018", "reviewerID", "asin", "unixReviewTime", "asin", _text_2018,
                      _urls_2018, AMAZON2018_TEXT_RECIPE, "s (unixReviewTime)", "amazon2023")
SCHEMA_2023 = _Schema("amazon2023", "user_id", "parent_asin", "timestamp", "parent_asin",
                      _text_2023, _urls_2023, AMAZON2023_TEXT_RECIPE, "ms (timestamp)",
                      "amazon2018")
_SCHEMAS = {"amazon2018": SCHEMA_2018, "amazon2023": SCHEMA_2023}


# -- JSON lines ------------------------------------------------------------------------------
def _open_binary(path: Path) -> IO[bytes]:
    """The file's bytes, gunzipped when it starts with the gzip magic (whatever its name)."""
    with open(path, "rb") as f:
        magic = f.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def iter_json_lines(path: str | os.PathLike, what: str = "JSON lines"
                    ) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line of a JSON-lines file (.gz or not).

    A line that is not a JSON object, undecodable bytes or a truncated gzip stream is an
    `InputFormatError` naming the file and the line. Python-literal lines (the 2014 release)
    are refused, never evaluated.
    """
    path = Path(path)
    check_input_file(path, what)
    number = 0
    try:
        with _open_binary(path) as f:
            for number, raw in enumerate(f, 1):  # noqa: B007 - number is used after the loop
                stripped = raw.strip()
                if not stripped:
                    continue
                try:
                    rec = json.loads(raw)
                except UnicodeDecodeError as e:
                    raise InputFormatError(f"{path}: line {number} is not valid UTF-8 ({e}); "
                                           "re-export the file as UTF-8") from None
                except json.JSONDecodeError as e:
                    raise InputFormatError(_json_hint(path, number, stripped, e)) from None
                if not isinstance(rec, dict):
                    raise InputFormatError(
                        f"{path}: line {number} holds a JSON {type(rec).__name__}, not an object;"
                        " the file must have one JSON object per line (JSON Lines)")
                yield number, rec
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise InputFormatError(f"{path}: the gzip stream is corrupt or truncated after line "
                               f"{number} ({e}); download or copy the file again") from e
    if number == 0:
        raise InputFormatError(f"{path} is empty; expected one JSON object per line")


def _json_hint(path: Path, number: int, line: bytes, err: json.JSONDecodeError) -> str:
    if number == 1 and line[:1] == b"[":
        return (f"{path}: line 1 starts a JSON array; the adapter reads JSON Lines (one object "
                "per line), the form the provider publishes")
    if line[:2] in (b"{'", b'{u'):
        return (f"{path}: line {number} is a Python literal (the 2014 release's format), which "
                "is never evaluated; use the 2018 or 2023 release (strict JSON lines)")
    return (f"{path}: line {number} is not valid JSON ({err.msg} at column {err.colno}); fix or "
            "remove that line (a truncated copy ends in such a line)")


# -- files -----------------------------------------------------------------------------------
def _is_json(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(_JSON_SUFFIXES)


def amazon_files(src: str | os.PathLike) -> tuple[Path, Path]:
    """(reviews, metadata) for `src`: a folder holding exactly one reviews file and one
    ``meta_`` file, or the reviews file itself (its ``meta_<name>`` beside it)."""
    src = Path(src)
    if src.is_file():
        folder = src.parent
        sibling = folder / f"meta_{src.name}"
        metas = [sibling] if sibling.is_file() else \
            [p for p in sorted(folder.iterdir()) if _is_json(p) and p.name.startswith("meta_")]
        if len(metas) != 1:
            raise FileNotFoundError(
                f"no single metadata file for {src}: expected {sibling.name} beside it (found "
                f"{[p.name for p in metas]}); {_LAYOUT}")
        return src, metas[0]
    if not src.is_dir():
        raise FileNotFoundError(f"--src {src} does not exist; expected {_LAYOUT}")
    files = [p for p in sorted(src.iterdir()) if _is_json(p)]
    metas = [p for p in files if p.name.startswith("meta_")]
    reviews = [p for p in files if not p.name.startswith("meta_")]
    if len(metas) != 1 or len(reviews) != 1:
        raise FileNotFoundError(
            f"{src} must hold one reviews file and one meta_ file; found reviews "
            f"{[p.name for p in reviews]} and metadata {[p.name for p in metas]}. Pass the "
            "reviews file itself as --src when the folder holds several categories")
    return reviews[0], metas[0]


def _read_reviews(path: Path, schema: _Schema) -> pd.DataFrame:
    """Interactions as categorical ids + int64 times; built from integer codes so a 30M-line
    category never holds 30M Python strings."""
    user_code: dict[str, int] = {}
    item_code: dict[str, int] = {}
    users, items, times = array("q"), array("q"), array("q")
    keys = (schema.user, schema.item, schema.time)
    for line, rec in iter_json_lines(path, f"{schema.fmt} reviews"):
        try:
            u, i, t = rec[schema.user], rec[schema.item], rec[schema.time]
        except KeyError as e:
            raise InputFormatError(_missing_key(path, line, e.args[0], rec, keys, schema)) from None
        u, i = "" if u is None else str(u), "" if i is None else str(i)
        users.append(user_code.setdefault(u, len(user_code)))
        items.append(item_code.setdefault(i, len(item_code)))
        times.append(timestamp_value(t, path, line, schema.time))
    return pd.DataFrame({
        "user": pd.Categorical.from_codes(np.frombuffer(users, dtype=np.int64),
                                          categories=pd.Index(list(user_code), dtype=object)),
        "item": pd.Categorical.from_codes(np.frombuffer(items, dtype=np.int64),
                                          categories=pd.Index(list(item_code), dtype=object)),
        "timestamp": np.frombuffer(times, dtype=np.int64).copy(),
    })


def _missing_key(path: Path, line: int, key: str, rec: dict, keys: tuple[str, ...],
                 schema: _Schema) -> str:
    other = _SCHEMAS[schema.other]
    hint = ""
    if all(k in rec for k in (other.user, other.item, other.time)):
        hint = f" This looks like the {other.fmt} release: use --format {other.fmt}."
    return (f"{path}: line {line} has no {key!r} field (it has {sorted(rec)[:15]}); the "
            f"{schema.fmt} reviews need {list(keys)}.{hint}")


def _read_meta(path: Path, schema: _Schema) -> tuple[pd.DataFrame, int]:
    """Items (item, text, has_url); metadata lines without the id field are counted, skipped."""
    ids: list[str] = []
    texts: list[str] = []
    urls: list[bool] = []
    no_id = 0
    for line, rec in iter_json_lines(path, f"{schema.fmt} metadata"):
        item = rec.get(schema.meta_item)
        if item is None or str(item).strip() == "":
            if not ids and schema.meta_item not in rec:
                other = _SCHEMAS[schema.other].meta_item
                hint = f" This looks like the {schema.other} release." if other in rec else ""
                raise InputFormatError(
                    f"{path}: line {line} has no {schema.meta_item!r} field (it has "
                    f"{sorted(rec)[:15]}); {schema.fmt} metadata needs it.{hint}")
            no_id += 1
            continue
        ids.append(str(item).strip())
        texts.append(schema.text(rec))
        urls.append(schema.has_image_url(rec))
    if no_id:
        log.warning("%s: %d metadata lines without %r skipped", path, no_id, schema.meta_item)
    return pd.DataFrame({"item": ids, "text": texts, "has_url": urls}), no_id


def _import_amazon(schema: _Schema, src: str | os.PathLike, out: str | os.PathLike,
                   options: dict[str, Any]) -> ImportReport:
    opts = start(out, options)
    reviews_path, meta_path = amazon_files(src)
    inter = _read_reviews(reviews_path, schema)
    meta, no_id = _read_meta(meta_path, schema)
    image_path = default_images(reviews_path.parent, opts.images, ("images",))
    if image_path is None:
        log.warning("no images/ folder beside %s and no --images given: importing text only",
                    reviews_path)
    source, keys = keyed_images(image_path, meta["item"])
    items = pd.DataFrame({"item": meta["item"], "text": meta["text"], "image": keys,
                          "image_url": meta["has_url"]})
    try:
        report = import_frames(
            inter, items, source, out, **opts.frames(), drop_unused_items=True, fmt=schema.fmt, source=f"Amazon reviews ({schema.fmt}) {reviews_path.name}",
            inputs={"reviews": str(reviews_path), "metadata": str(meta_path),
                    "images": str(image_path) if image_path is not None else None},
            extra_meta={"text_recipe": schema.recipe, "timestamp_unit": schema.unit,
                        "metadata_lines_without_id": no_id},
            where=(str(reviews_path), str(meta_path)),
        )
    finally:
        if source is not None:
            source.close()
    n_url = report.coverage.get("image_url_without_file", 0)
    if n_url:
        log.info("%d items list image URLs in %s but have no local image (images are never "
                 "downloaded; put them in %s as <item id>.jpg)", n_url, meta_path,
                 image_path or "an images/ folder")
    return report


@register("data_format", "amazon2018",
          description="Amazon Review Data 2018: <Category>.json[.gz] (reviewerID, asin, "
                      "unixReviewTime) + meta_<Category>.json[.gz]; images/<asin>.jpg")
def import_amazon2018(src: str | os.PathLike, out: str | os.PathLike, **options: Any) -> ImportReport:
    """Import an Amazon 2018 category (layout in the module docstring); items = asin."""
    return _import_amazon(SCHEMA_2018, src, out, options)


@register("data_format", "amazon2023",
          description="Amazon Reviews'23: <Category>.jsonl[.gz] (user_id, parent_asin, "
                      "timestamp ms) + meta_<Category>.jsonl[.gz]; images/<parent_asin>.jpg")
def import_amazon2023(src: str | os.PathLike, out: str | os.PathLike, **options: Any) -> ImportReport:
    """Import an Amazon 2023 category (layout in the module docstring); items = parent_asin."""
    return _import_amazon(SCHEMA_2023, src, out, options)
