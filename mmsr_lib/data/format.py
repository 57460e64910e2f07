"""The one on-disk data set format of the synthetic catalog, imported real data and MovieLens.

A data set is a directory::

    interactions.tsv   user, item, timestamp       (ids are strings, timestamp int64)
    items.tsv          item, text, image           (image = row into images.npy, -1 = none)
    images.npy         uint8 [n_images, S, S, 3]   (optional: absent for text-only data)
    meta.json          name, source, seed, format_version, counts, image_size, created, skipped, ...

Plain TSV + one ``.npy`` keeps the format readable with any tool and lets the image store be
memory-mapped once per process. Writing is atomic (temporary sibling directory, then rename), so a
reader never sees a half-written data set. Loading validates and repairs per-row problems
(counted in ``RawDataset.skipped``) but refuses structural ones with a message that says what to do.
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger("mmsr.data")

FORMAT_VERSION: int = 1

INTERACTIONS_FILE = "interactions.tsv"
ITEMS_FILE = "items.tsv"
IMAGES_FILE = "images.npy"
META_FILE = "meta.json"

INTERACTION_COLUMNS = ("user", "item", "timestamp")
ITEM_COLUMNS = ("item", "text", "image")

# meta keys that change on every write of identical content; left out of the fingerprint
_VOLATILE_META = ("created",)
_HOW_TO_CREATE = (
    "create a data set with `mmsr data synth`, `mmsr data import ...` or `mmsr data movielens` "
    "(see docs/data.md)"
)
_N_EXAMPLES = 5  # example ids shown in log messages about skipped rows


class DatasetFormatError(ValueError):
    """A data set directory that cannot be read as the mmsr format; the message names the file."""


@dataclass
class RawDataset:
    """A validated data set as read from disk (string ids, before k-core and indexing)."""

    root: Path
    interactions: pd.DataFrame  # columns user (str), item (str), timestamp (int64)
    items: pd.DataFrame  # columns item (str), text (str, "" when missing), image (int64, -1 = none)
    meta: dict
    skipped: dict[str, int] = field(default_factory=dict)
    _fingerprint: str | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def image_path(self) -> Path | None:
        """``images.npy`` when the data set has an image store, else None (text-only)."""
        p = self.root / IMAGES_FILE
        return p if p.exists() else None

    def fingerprint(self) -> str:
        """Short stable hash of the files' contents, so results know exactly which data they saw.

        Covers the bytes of both TSV files, the image store's header and size (hashing gigabytes
        of pixels would cost more than it protects) and meta.json without its creation time.
        """
        if self._fingerprint is None:
            self._fingerprint = dataset_fingerprint(self.root)
        return self._fingerprint


def dataset_fingerprint(root: str | os.PathLike) -> str:
    """The fingerprint of the data set at `root` (see ``RawDataset.fingerprint``)."""
    root = Path(root)
    h = hashlib.sha256()
    for name in (INTERACTIONS_FILE, ITEMS_FILE):
        h.update(name.encode())
        with open(root / name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
    img = root / IMAGES_FILE
    if img.exists():
        shape, dtype = _npy_header(img)
        h.update(f"{IMAGES_FILE}:{shape}:{dtype}:{img.stat().st_size}".encode())
    meta = json.loads((root / META_FILE).read_text())
    for key in _VOLATILE_META:
        meta.pop(key, None)
    h.update(json.dumps(meta, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


# -- writing ---------------------------------------------------------------------------------
def write_dataset(
    root: str | os.PathLike,
    interactions: pd.DataFrame,
    items: pd.DataFrame,
    images: np.ndarray | str | os.PathLike | None,
    meta: dict,
    extras: dict[str, pd.DataFrame] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a data set atomically and return its directory.

    `images` is an uint8 [N, S, S, 3] array (a memmap is streamed, not loaded), or the path of an
    ``.npy`` file holding one, which is *moved* into the data set without a copy (the importer and
    the generator build large stores that way), or None for a text-only data set.
    `meta` is completed with format_version, counts, image_size and created. `extras` are
    additional TSV files (e.g. the synthetic catalog's latent attributes) that travel with the
    data set; ``load_dataset`` ignores them.

    The files go into a temporary sibling directory which is renamed into place only when complete;
    an existing data set at `root` is replaced only then, and only with ``overwrite=True``. A folder
    that is not a data set written by this library (no manifest, see `is_dataset_dir`) is never
    replaced or deleted, whatever `overwrite` says: `check_writable_target` refuses it before any
    work is done. On any error nothing is left behind.
    """
    root = Path(root)
    check_writable_target(root, overwrite)
    inter = _prepare_interactions(interactions)
    its = _prepare_items(items)
    root.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    tmp = root.parent / f".{root.name}.tmp-{tag}"
    tmp.mkdir()
    try:
        image_shape = _write_images(tmp / IMAGES_FILE, images)
        inter.to_csv(tmp / INTERACTIONS_FILE, sep="\t", index=False, quoting=csv.QUOTE_NONE)
        its.to_csv(tmp / ITEMS_FILE, sep="\t", index=False, quoting=csv.QUOTE_NONE)
        for name, frame in (extras or {}).items():
            if Path(name).name != name or not name.endswith(".tsv"):
                raise ValueError(f"extra file name {name!r} must be a plain '<name>.tsv'")
            if name in (INTERACTIONS_FILE, ITEMS_FILE):
                raise ValueError(f"extra file {name!r} would overwrite a data set file")
            _sanitize_frame(frame).to_csv(tmp / name, sep="\t", index=False,
                                          quoting=csv.QUOTE_NONE)
        full_meta = _complete_meta(meta, inter, its, image_shape)
        (tmp / META_FILE).write_text(json.dumps(full_meta, indent=2, default=_json_default))
        _swap_into_place(tmp, root, tag)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote data set %s: %d users, %d items, %d interactions", root,
             full_meta["n_users"], full_meta["n_items"], full_meta["n_interactions"])
    return root


class DatasetExistsError(FileExistsError):
    """The output folder already holds something; the message says whether --overwrite helps."""


def is_dataset_dir(path: str | os.PathLike) -> bool:
    """True when `path` is a data set this library wrote: the manifest (meta.json with a
    ``format_version``) and the interaction file are there. Nothing else may ever be replaced."""
    path = Path(path)
    meta = path / META_FILE
    if not path.is_dir() or not meta.is_file() or not (path / INTERACTIONS_FILE).is_file():
        return False
    try:
        return "format_version" in json.loads(meta.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False


def check_writable_target(root: str | os.PathLike, overwrite: bool = False) -> None:
    """Refuse an output folder whose replacement could lose data, before any work is done.

    Allowed: a path that does not exist, an empty folder, or (with `overwrite`) an earlier data
    set of this library. Refused: a file, a non-empty folder that is not such a data set (a
    project home, a results folder, ...), or an earlier data set without `overwrite`.
    """
    root = Path(root)
    if not root.exists() and not root.is_symlink():
        return
    if root.is_symlink() or not root.is_dir():
        raise DatasetExistsError(
            f"{root} exists and is not a folder; choose another output path (nothing was written)"
        )
    if not any(root.iterdir()):
        return
    if not is_dataset_dir(root):
        raise DatasetExistsError(
            f"{root} is a non-empty folder that is not a data set written by mmsr (it has no "
            f"{META_FILE} manifest with a format_version); refusing to replace it. Choose a new "
            "or empty output folder (nothing was written or deleted)"
        )
    if not overwrite:
        raise DatasetExistsError(
            f"{root} already holds a data set; pass --overwrite (overwrite=True) to replace it, "
            "or choose another output folder (nothing was written)"
        )


def _swap_into_place(tmp: Path, root: Path, tag: str) -> None:
    """Rename the complete `tmp` to `root`; an old `root` is moved aside first and removed last.

    Only an empty folder or a data set of this library is ever moved aside and removed
    (`check_writable_target` is asked again here, right before the swap).
    """
    old = None
    if root.exists():
        check_writable_target(root, overwrite=True)
        old = root.parent / f".{root.name}.old-{tag}"
        os.replace(root, old)
    try:
        os.replace(tmp, root)
    except BaseException:
        if old is not None:
            os.replace(old, root)  # put the previous data set back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _prepare_interactions(df: pd.DataFrame) -> pd.DataFrame:
    _require_columns(df, INTERACTION_COLUMNS, "interactions (argument of write_dataset)")
    return pd.DataFrame({
        "user": _clean_ids(df["user"], "interactions.user"),
        "item": _clean_ids(df["item"], "interactions.item"),
        "timestamp": _as_int64(df["timestamp"], "interactions.timestamp", missing=None),
    })


def _prepare_items(df: pd.DataFrame) -> pd.DataFrame:
    _require_columns(df, ITEM_COLUMNS, "items (argument of write_dataset)")
    return pd.DataFrame({
        "item": _clean_ids(df["item"], "items.item"),
        "text": clean_text(df["text"]),
        "image": _as_int64(df["image"], "items.image", missing=-1),
    })


def _as_int64(values: pd.Series, what: str, missing: int | None) -> np.ndarray:
    """Integers as int64; `missing` replaces NaN / "" (None: missing values are an error)."""
    raw = values
    if missing is not None:
        blank = values.isna() | (values.astype(str).str.strip() == "")
        raw = values.where(~blank, missing)
    num = pd.to_numeric(raw, errors="coerce")
    arr = num.to_numpy(dtype=float, na_value=np.nan)
    bad = ~np.isfinite(arr) | (arr != np.round(arr))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{what} must hold integers; row {row} has {values.iloc[row]!r}")
    if num.dtype.kind in "iu":
        return num.to_numpy(dtype=np.int64)
    return arr.astype(np.int64)


def clean_text(text: pd.Series) -> pd.Series:
    """Text as TSV-safe strings: NaN -> "", tabs / newlines / carriage returns -> spaces."""
    s = text.astype(object).where(text.notna(), "").astype(str)
    return s.str.replace(r"[\t\r\n]", " ", regex=True)


def _clean_ids(ids: pd.Series, what: str) -> pd.Series:
    if ids.isna().any():
        row = int(np.flatnonzero(ids.isna().to_numpy())[0])
        raise ValueError(f"{what} has a missing id in row {row}; every row needs an id")
    s = ids.astype(str)
    bad = s.str.contains(r"[\t\r\n]", regex=True)
    if bad.any():
        raise ValueError(f"{what} ids must not contain tabs or newlines; got {s[bad].iloc[0]!r}")
    return s


def _sanitize_frame(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    for col in out.columns:
        if not pd.api.types.is_numeric_dtype(out[col]):
            out[col] = clean_text(out[col])
    return out


def _write_images(dest: Path, images: np.ndarray | str | os.PathLike | None) -> tuple | None:
    """Put the image store at `dest`; returns its shape (None for a text-only data set)."""
    if images is None:
        return None
    if isinstance(images, (str, os.PathLike)):
        src = Path(images)
        shape = image_store_shape(src)
        try:
            os.replace(src, dest)
        except OSError:  # another file system: fall back to a copy
            shutil.move(str(src), dest)
        return shape
    arr = np.asarray(images) if not isinstance(images, np.memmap) else images
    _check_store(arr.shape, arr.dtype, Path("images (argument of write_dataset)"))
    np.save(dest, arr)
    return tuple(arr.shape)


def _complete_meta(meta: dict, inter: pd.DataFrame, items: pd.DataFrame,
                   image_shape: tuple | None) -> dict:
    out = dict(meta)
    out.setdefault("name", "dataset")
    out.setdefault("source", "unknown")
    out.setdefault("seed", None)
    out["format_version"] = FORMAT_VERSION
    out["n_users"] = int(inter["user"].nunique())
    out["n_items"] = int(len(items))
    out["n_interactions"] = int(len(inter))
    out["n_images"] = int(image_shape[0]) if image_shape else 0
    out["image_size"] = int(image_shape[1]) if image_shape else None
    out["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    out["skipped"] = {k: int(v) for k, v in dict(out.get("skipped") or {}).items()}
    return out


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, (np.ndarray, tuple, set)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"meta value of type {type(obj).__name__} is not JSON serialisable: {obj!r}")


# -- reading ---------------------------------------------------------------------------------
def load_dataset(root: str | os.PathLike) -> RawDataset:
    """Read and validate a data set directory.

    Structural problems (missing files or columns, unparsable timestamps, a malformed image
    store) raise ``FileNotFoundError`` / ``DatasetFormatError`` naming the file. Per-row problems
    are repaired, logged with example ids and counted in ``skipped``: interactions of unknown
    items are dropped, duplicate item rows keep the first, missing text becomes "", image rows
    outside the store become -1.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data set directory {root} does not exist; {_HOW_TO_CREATE}")
    for name in (INTERACTIONS_FILE, ITEMS_FILE, META_FILE):
        if not (root / name).is_file():
            raise FileNotFoundError(
                f"{root / name} is missing: {root} is not a complete mmsr data set; "
                f"{_HOW_TO_CREATE}"
            )
    meta = _read_meta(root / META_FILE)
    n_images = _image_count(root / IMAGES_FILE)
    skipped: dict[str, int] = {}

    inter = _read_interactions(root / INTERACTIONS_FILE)
    items = _read_items(root / ITEMS_FILE)
    items, item_counts = clean_items(items, n_images, where=str(root / ITEMS_FILE))
    inter, inter_counts = drop_unknown_items(inter, items, where=str(root / INTERACTIONS_FILE))
    for counts in (item_counts, inter_counts):
        skipped.update({k: v for k, v in counts.items() if v})
    return RawDataset(root=root, interactions=inter, items=items, meta=meta, skipped=skipped)


def _read_meta(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DatasetFormatError(f"{path} is not valid JSON ({e}); rewrite the data set") from e
    if not isinstance(meta, dict):
        raise DatasetFormatError(f"{path} must hold a JSON object, found {type(meta).__name__}")
    version = meta.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise DatasetFormatError(
            f"{path}: format_version {version!r} is newer than this library reads "
            f"({FORMAT_VERSION}); upgrade mmsr-workbook or regenerate the data set"
        )
    return meta


def _read_tsv(path: Path, columns: tuple[str, ...], dtype: dict) -> pd.DataFrame:
    """Read a TSV with exactly `columns` (any order), returned in that order."""
    try:
        header = pd.read_csv(path, sep="\t", nrows=0, quoting=csv.QUOTE_NONE).columns.tolist()
    except pd.errors.EmptyDataError as e:
        raise DatasetFormatError(f"{path} is empty; expected a header line with the columns "
                                 f"{list(columns)}") from e
    if sorted(header) != sorted(columns):
        missing = [c for c in columns if c not in header]
        extra = [c for c in header if c not in columns]
        raise DatasetFormatError(
            f"{path}: expected the tab-separated columns {list(columns)}, found {header}"
            + (f"; missing {missing}" if missing else "")
            + (f"; unexpected {extra}" if extra else "")
        )
    df = pd.read_csv(path, sep="\t", dtype=dtype, quoting=csv.QUOTE_NONE,
                     keep_default_na=False, na_filter=False)
    return df[list(columns)] if header != list(columns) else df


def _read_interactions(path: Path) -> pd.DataFrame:
    try:  # fast path: let the C parser convert timestamps
        return _read_tsv(path, INTERACTION_COLUMNS,
                         {"user": str, "item": str, "timestamp": "int64"})
    except DatasetFormatError:
        raise
    except ValueError as e:
        # slow path only on failure: find the first row whose timestamp is not an integer
        try:
            df = _read_tsv(path, INTERACTION_COLUMNS, {"user": str, "item": str, "timestamp": str})
        except ValueError as e2:
            raise DatasetFormatError(f"{path} is not a valid tab-separated file: {e2}") from e2
        _integer_column(df, "timestamp", path)
        raise DatasetFormatError(f"{path}: {e}") from e


def _integer_column(df: pd.DataFrame, col: str, path: Path, empty_as: int | None = None
                    ) -> np.ndarray:
    """`df[col]` (strings) as int64; raises naming the first bad row (1 = first data row)."""
    raw = df[col]
    if empty_as is not None:
        raw = raw.where(raw.str.strip() != "", str(empty_as))
    num = pd.to_numeric(raw, errors="coerce")
    arr = num.to_numpy(dtype=float, na_value=np.nan)
    bad = ~np.isfinite(arr) | (arr != np.round(arr))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DatasetFormatError(
            f"{path}: column {col!r} must hold integers; row {row + 1} (line {row + 2}) has "
            f"{df[col].iloc[row]!r} ({int(bad.sum())} bad rows in all). Fix or remove those rows."
        )
    return num.to_numpy().astype(np.int64)


def _read_items(path: Path) -> pd.DataFrame:
    df = _read_tsv(path, ITEM_COLUMNS, {"item": str, "text": str, "image": str})
    df["image"] = _integer_column(df, "image", path, empty_as=-1)
    return df


def _image_count(path: Path) -> int:
    """Rows of the image store (0 when absent); a malformed store is an error naming the file."""
    return image_store_shape(path)[0] if path.exists() else 0


def image_store_shape(path: str | os.PathLike) -> tuple[int, int, int, int]:
    """[n_images, S, S, 3] of an image store, read from its header; raises naming a bad file."""
    path = Path(path)
    shape, dtype = _npy_header(path)
    _check_store(shape, dtype, path)
    return tuple(int(x) for x in shape)  # type: ignore[return-value]


def _npy_header(path: Path) -> tuple[tuple, np.dtype]:
    """Shape and dtype of an .npy file from its header alone; checks the file is not truncated."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
            offset = f.tell()
    except (ValueError, OSError, SyntaxError) as e:
        raise DatasetFormatError(
            f"{path} is not a readable .npy image store ({e}); rebuild the data set "
            "(`mmsr data import ...` / `mmsr data synth`)"
        ) from e
    if fortran:
        raise DatasetFormatError(f"{path} is stored in Fortran order; save it C-contiguous")
    need = offset + int(np.prod(shape)) * np.dtype(dtype).itemsize
    size = path.stat().st_size
    if size < need:
        raise DatasetFormatError(
            f"{path} is truncated: its header promises shape {tuple(shape)} ({need} bytes with "
            f"the header) but the file has {size} bytes; rebuild the data set"
        )
    return tuple(shape), dtype


def _check_store(shape: tuple, dtype: np.dtype, path: Path) -> None:
    square_rgb = len(shape) == 4 and shape[3] == 3 and shape[1] == shape[2] and shape[1] >= 1
    if dtype != np.uint8 or not square_rgb:
        raise DatasetFormatError(
            f"{path} must be an uint8 array [n_images, S, S, 3] (square RGB images); found "
            f"dtype {dtype} and shape {tuple(shape)}. Rebuild it with `mmsr data import ...` or "
            "mmsr_lib.data.images.to_rgb_uint8."
        )


# -- per-row repairs (shared with the importer) ----------------------------------------------
def clean_items(items: pd.DataFrame, n_images: int, where: str = "items"
                ) -> tuple[pd.DataFrame, dict[str, int]]:
    """Keep the first row of duplicate items, "" for missing text, -1 for image rows outside
    ``[0, n_images)``. Returns the cleaned table and counts by reason."""
    counts: dict[str, int] = {}
    dup = items["item"].duplicated(keep="first").to_numpy()
    counts["duplicate_item"] = int(dup.sum())
    if dup.any():
        _warn(where, "duplicate_item", counts["duplicate_item"], items["item"][dup],
              "kept the first row of each")
        items = items[~dup]
    text = clean_text(items["text"])
    empty = (text.str.strip() == "").to_numpy()
    counts["empty_text"] = int(empty.sum())
    if empty.any():
        _warn(where, "empty_text", counts["empty_text"], items["item"][empty], "text set to ''",
              level=logging.INFO)
        text = text.where(~empty, "")
    image = items["image"].to_numpy(dtype=np.int64)
    bad = (image < -1) | (image >= n_images)
    counts["bad_image_ref"] = int(bad.sum())
    if bad.any():
        _warn(where, "bad_image_ref", counts["bad_image_ref"], items["item"][bad],
              f"image set to -1 (the image store has {n_images} rows)")
        image = np.where(bad, -1, image)
    out = pd.DataFrame({"item": items["item"].astype(str).to_numpy(), "text": text.to_numpy(),
                        "image": image})
    out["item"] = out["item"].astype(str)
    out["text"] = out["text"].astype(str)
    return out, counts


def drop_unknown_items(inter: pd.DataFrame, items: pd.DataFrame, where: str = "interactions"
                       ) -> tuple[pd.DataFrame, dict[str, int]]:
    """Drop interactions whose item has no row in the item table; returns counts by reason."""
    known = inter["item"].isin(items["item"]).to_numpy()
    n_bad = int((~known).sum())
    if n_bad:
        _warn(where, "unknown_item", n_bad, inter["item"][~known].drop_duplicates(),
              "dropped: the item has no row in the item table")
        inter = inter[known].reset_index(drop=True)
    return inter, {"unknown_item": n_bad}


def _warn(where: str, reason: str, n: int, ids: pd.Series, action: str,
          level: int = logging.WARNING) -> None:
    examples = ", ".join(repr(x) for x in ids.head(_N_EXAMPLES))
    log.log(level, "%s: %d rows with %s (e.g. %s): %s", where, n, reason, examples, action)


def _require_columns(df: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks columns {missing}; expected {list(columns)}, "
                         f"found {list(df.columns)}")
