"""Import real data (interaction + item tables and their images) into the mmsr on-disk format.

One core, `import_frames`, turns an interaction frame, an item frame and an image source into a
data set; the generic CSV/TSV importer (`import_tables`, `import_dataset`, registry name ``csv``)
and every provider adapter (``mmsr_lib.data.adapters``: H&M, Amazon 2018/2023, PixelRec-style)
call it, so duplicates, sampling, image decoding, coverage and skip counting behave the same for
all of them.

Images are decoded once, converted to RGB, resized and centre-cropped, and streamed into a
memory-mapped ``images.npy``, so a catalog of a hundred thousand images never sits in RAM. An
image source hands out *regular files inside its folder only*: a name that resolves outside the
folder (``../x``, an absolute path, a symlink leading out) or a FIFO / device / directory is a
counted skip, never a hang or a read outside the data. Broken rows are repaired or dropped,
counted in the returned `ImportReport` and in ``meta["skipped"]``, logged, never fatal; input
files that cannot be parsed are errors naming the file, the line and what to do.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
import stat
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
from pandas.api.types import union_categoricals
from PIL import Image
from tqdm.auto import tqdm

from mmsr_lib.data.format import (
    INTERACTION_COLUMNS,
    check_writable_target,
    clean_items,
    clean_text,
    write_dataset,
)
from mmsr_lib.data.images import PLACEHOLDER_VALUE, to_rgb_uint8
from mmsr_lib.data.sampling import sample_users
from mmsr_lib.util.registry import register

log = logging.getLogger("mmsr.data")

DUPLICATE_POLICIES = ("keep", "drop")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
INT64_MAX = np.iinfo(np.int64).max
# reasons an image file is not used; the last three are "broken" in the coverage report
MISSING_IMAGE = "missing_image"
CORRUPT_IMAGE = "corrupt_image"
IMAGE_NOT_A_FILE = "image_not_a_file"
IMAGE_OUTSIDE_FOLDER = "image_outside_folder"
BROKEN_IMAGE_REASONS = (CORRUPT_IMAGE, IMAGE_NOT_A_FILE, IMAGE_OUTSIDE_FOLDER)

_DELIMITERS = ",\t;|"
_CHUNK_ROWS = 2_000_000  # rows per chunk when reading categorical id columns
_N_LOGGED = 20  # failing image files logged one by one and kept as examples; the rest counted
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # opening a FIFO must not wait for a writer
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class InputFormatError(ValueError):
    """A provider's input file that cannot be read; the message names file, line and the fix."""


# -- the report ------------------------------------------------------------------------------
@dataclass
class ImportReport:
    """What an import wrote and what it left out: returned by every importer and adapter, and
    the same numbers are in the data set's ``meta.json`` (``coverage``, ``skipped``, ...)."""

    path: Path
    format: str
    counts: dict[str, int]  # users, items, interactions, images (as written)
    coverage: dict[str, Any]  # items without text / without an image, broken image files, ...
    skipped: dict[str, int]  # rows or files dropped or repaired, by reason
    duplicates: dict[str, Any] = field(default_factory=dict)  # policy, found, dropped
    sampling: dict[str, Any] | None = None
    examples: dict[str, list[str]] = field(default_factory=dict)  # first names per reason

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the CLI prints it)."""
        out = asdict(self)
        out["path"] = str(self.path)
        return out


# -- image sources ---------------------------------------------------------------------------
class ImageSkip(Exception):
    """An image that is not used; `reason` is one of the skip reasons counted in the report."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class ImageSource(ABC):
    """Where encoded images come from: `open(key)` returns a binary file object or raises
    `ImageSkip`. Keys are what the item frame's ``image`` column holds ("" = no image)."""

    @abstractmethod
    def open(self, key: str) -> IO[bytes]:
        """The encoded image stored under `key`; `ImageSkip` says why there is none."""

    @abstractmethod
    def describe(self) -> str:
        """Where the images come from, for log messages."""

    @abstractmethod
    def close(self) -> None:
        """Release handles (an LMDB environment)."""


class FolderImages(ImageSource):
    """Image files in one folder; a key is a file name relative to it (sub-folders allowed).

    Only regular files whose real path lies inside the folder are opened, and they are opened
    non-blocking: ``../x.png``, absolute names, symlinks leading out of the folder, FIFOs,
    devices and directories are refused as counted skips instead of reading outside the data
    or hanging on a pipe.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"image folder {self.root} does not exist (argument images / --images); pass "
                "the folder the items' image files are in, or none for a text-only data set"
            )
        self._real = os.path.realpath(self.root)

    def describe(self) -> str:
        return f"folder {self.root}"

    def close(self) -> None:
        """Nothing to release: every file is closed right after it is read."""

    def resolve(self, key: str) -> str:
        """The real path of `key` inside the folder; `ImageSkip` when it points elsewhere."""
        if not key or "\x00" in key:
            raise ImageSkip(IMAGE_OUTSIDE_FOLDER, f"invalid image name {key!r}")
        if os.path.isabs(key) or Path(key).is_absolute():
            raise ImageSkip(IMAGE_OUTSIDE_FOLDER,
                            f"absolute path {key!r}; image names must be relative to {self.root}")
        real = os.path.realpath(os.path.join(self._real, key))
        if os.path.commonpath([self._real, real]) != self._real or real == self._real:
            raise ImageSkip(IMAGE_OUTSIDE_FOLDER,
                            f"{key!r} resolves to {real}, outside the image folder {self.root}")
        return real

    def open(self, key: str) -> IO[bytes]:
        real = self.resolve(key)
        try:
            fd = os.open(real, os.O_RDONLY | _O_NONBLOCK | _O_NOFOLLOW | _O_CLOEXEC)
        except FileNotFoundError as e:
            raise ImageSkip(MISSING_IMAGE, "file not found") from e
        except IsADirectoryError as e:
            raise ImageSkip(IMAGE_NOT_A_FILE, "a directory, not an image file") from e
        except OSError as e:  # permission, a symlink swapped in after the check, ...
            raise ImageSkip(CORRUPT_IMAGE, f"cannot open: {e.strerror or e}") from e
        try:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                raise ImageSkip(IMAGE_NOT_A_FILE, f"not a regular file ({_file_kind(mode)})")
            if _O_NONBLOCK:
                os.set_blocking(fd, True)
            return os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise

    def index_by_stem(self, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> dict[str, str]:
        """{file name without extension: file name} for image files directly in the folder, so
        adapters can find ``<item_id>.<any extension>``; with several extensions for one id the
        first in `extensions` wins (deterministic)."""
        rank = {ext: i for i, ext in enumerate(extensions)}
        best: dict[str, tuple[int, str]] = {}
        with os.scandir(self.root) as entries:
            for entry in entries:
                stem, ext = os.path.splitext(entry.name)
                r = rank.get(ext.lower())
                if r is None or not stem:
                    continue
                old = best.get(stem)
                if old is None or (r, entry.name) < old:
                    best[stem] = (r, entry.name)
        return {stem: name for stem, (_, name) in best.items()}


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISDIR, "a directory")):
        if test(mode):
            return kind
    return "not a regular file"


class LmdbImages(ImageSource):
    """Encoded image bytes in an LMDB database keyed by item id (UTF-8), opened read-only.

    Values must be the image file's bytes (JPEG, PNG, ...). Pickled values, as some research
    code stores them, are refused as corrupt and never unpickled.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        try:
            import lmdb  # optional dependency
        except ModuleNotFoundError as e:
            raise ModuleNotFoundError(
                f"{self.path} is an LMDB image database, which needs the `lmdb` package: run "
                "`pip install lmdb`, or export the covers into a folder of <item_id>.jpg files"
            ) from e
        if not self.path.exists():
            raise FileNotFoundError(f"LMDB image database {self.path} does not exist")
        self._env = lmdb.open(str(self.path), readonly=True, lock=False, readahead=False,
                              subdir=self.path.is_dir(), max_readers=1)
        self._txn = self._env.begin(buffers=False)

    def describe(self) -> str:
        return f"LMDB {self.path}"

    def open(self, key: str) -> IO[bytes]:
        value = self._txn.get(key.encode("utf-8"))
        if value is None:
            raise ImageSkip(MISSING_IMAGE, "no such key in the LMDB database")
        if value[:1] == b"\x80" and value[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
            raise ImageSkip(CORRUPT_IMAGE, "the value is a Python pickle, which is never loaded; "
                                           "store the encoded image bytes instead")
        return io.BytesIO(value)

    def close(self) -> None:
        self._txn.abort()
        self._env.close()


def image_source(images: ImageSource | str | os.PathLike | None) -> ImageSource | None:
    """An `ImageSource` for a folder path or an LMDB database (a folder holding ``data.mdb``,
    or a ``*.lmdb`` / ``*.mdb`` file); None stays None (text only)."""
    if images is None or isinstance(images, ImageSource):
        return images
    path = Path(images)
    if (path.is_dir() and (path / "data.mdb").is_file()) or (
            path.is_file() and path.suffix.lower() in (".lmdb", ".mdb")):
        return LmdbImages(path)
    return FolderImages(path)


# -- the core --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImportOptions:
    """The options every data format takes (`mmsr data import --format NAME`), in one place:
    each adapter is ``(src, out, **options)`` and reads them through `ImportOptions.of`."""

    users: int | None = None  # sample this many users (among those with enough interactions)
    seed: int = 0  # seed of the user sample
    image_size: int = 224
    overwrite: bool = False  # replace an earlier data set at `out`
    duplicates: str = "keep"  # repeated (user, item, timestamp) rows: keep | drop
    name: str | None = None
    images: str | os.PathLike | None = None  # the image folder / LMDB, else the format's default
    min_user_interactions: int = 5

    @classmethod
    def of(cls, options: dict[str, Any]) -> ImportOptions:
        """The options of a call, checked: an unknown name is an error that lists the known."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"unknown import options {unknown}; the options are {sorted(known)}")
        opts = cls(**options)
        check_import_options(opts.image_size, opts.duplicates, opts.users,
                             opts.min_user_interactions)
        return opts

    def frames(self) -> dict[str, Any]:
        """The keyword arguments of `import_frames` these options set."""
        return {"image_size": self.image_size, "name": self.name, "overwrite": self.overwrite,
                "duplicates": self.duplicates, "users": self.users, "seed": self.seed,
                "min_user_interactions": self.min_user_interactions}


def check_import_options(image_size: int, duplicates: str, users: int | None,
                         min_user_interactions: int = 5) -> None:
    """Fail before any file is read when an option is out of range."""
    if int(image_size) < 8:
        raise ValueError(f"image_size must be at least 8 pixels, got {image_size}")
    if duplicates not in DUPLICATE_POLICIES:
        raise ValueError(f"duplicates must be one of {DUPLICATE_POLICIES}, got {duplicates!r}")
    if users is not None and int(users) < 1:
        raise ValueError(f"users must be a positive number of users to sample, got {users}")
    if int(min_user_interactions) < 0:
        raise ValueError(f"min_user_interactions must be >= 0, got {min_user_interactions}")


def import_frames(
    interactions: pd.DataFrame,
    items: pd.DataFrame,
    images: ImageSource | str | os.PathLike | None,
    out: str | os.PathLike,
    *,
    image_size: int = 224,
    name: str | None = None,
    overwrite: bool = False,
    duplicates: str = "keep",
    users: int | None = None,
    seed: int = 0,
    min_user_interactions: int = 5,
    drop_unused_items: bool = False,
    fmt: str = "frames",
    source: str = "",
    inputs: dict[str, Any] | None = None,
    extra_meta: dict[str, Any] | None = None,
    where: tuple[str, str] = ("interactions", "items"),
) -> ImportReport:
    """Write a data set from an interaction frame and an item frame; returns its report.

    `interactions`: columns user, item, timestamp (int64 or anything `parse_timestamps` reads;
    ids may be categorical, which keeps paper-size frames small). `items`: columns item, text
    and optionally image, the key of the item's picture in `images` ("" = none), and
    image_url (bool: the provider lists an image online; counted when none is local). `images`
    is an `ImageSource`, a folder, an LMDB database, or None (text only).

    In order: blank ids dropped; duplicate (user, item, timestamp) rows counted and, with
    ``duplicates="drop"``, dropped; duplicate item rows keep the first; interactions of items
    without an item row dropped; `users` users sampled (`sample_users`, among users with at
    least `min_user_interactions` interactions); with `drop_unused_items` items without any
    interaction left out (their images are never decoded); images decoded; interactions
    written per user in time order, ties in their input order.
    """
    check_import_options(image_size, duplicates, users, min_user_interactions)
    out = Path(out)
    check_writable_target(out, overwrite)  # before any image is decoded
    where_inter, where_items = where
    _require(interactions, INTERACTION_COLUMNS, where_inter)
    _require(items, ("item", "text"), where_items)
    skipped: dict[str, int] = {}
    examples: dict[str, list[str]] = {}

    inter = interactions[list(INTERACTION_COLUMNS)].reset_index(drop=True)
    if not pd.api.types.is_integer_dtype(inter["timestamp"]):
        inter["timestamp"] = parse_timestamps(inter["timestamp"], where_inter)
    else:
        inter["timestamp"] = _check_integer_timestamps(inter["timestamp"], where_inter)
    inter = _drop_blank_ids(inter, ("user", "item"), where_inter, skipped)

    dup = inter.duplicated(list(INTERACTION_COLUMNS), keep="first").to_numpy()
    n_dup = int(dup.sum())
    if n_dup:
        action = "dropped (duplicates='drop')" if duplicates == "drop" else \
            "kept (duplicates='keep'; pass duplicates='drop' / --duplicates drop to drop them)"
        log.info("%s: %d duplicate interactions (same user, item and timestamp): %s",
                 where_inter, n_dup, action)
        if duplicates == "drop":
            inter = inter[~dup].reset_index(drop=True)
            skipped["duplicate_interaction"] = n_dup
    dup_info = {"policy": duplicates, "found": n_dup,
                "dropped": n_dup if duplicates == "drop" else 0}

    inter["user"] = normalise_ids(inter["user"], str.strip)
    inter["item"] = normalise_ids(inter["item"], str.strip)
    its = pd.DataFrame({
        "item": normalise_ids(items["item"], str.strip).to_numpy(),
        "text": clean_text(items["text"]).to_numpy() if len(items) else np.array([], object),
        "image_url": (items["image_url"].fillna(False).to_numpy(dtype=bool)
                      if "image_url" in items.columns else np.zeros(len(items), dtype=bool)),
        "image": (items["image"].astype(object).where(items["image"].notna(), "").astype(str)
                  .str.strip().to_numpy() if "image" in items.columns and len(items)
                  else np.full(len(items), "", dtype=object)),
    })
    its = _drop_blank_ids(its, ("item",), where_items, skipped)
    dup_items = its["item"].duplicated(keep="first").to_numpy()
    if dup_items.any():
        skipped["duplicate_item"] = int(dup_items.sum())
        _log_examples(where_items, "duplicate_item", its["item"][dup_items],
                      "kept the first row of each")
        its = its[~dup_items].reset_index(drop=True)

    known = inter["item"].isin(its["item"]).to_numpy()
    if not known.all():
        skipped["unknown_item"] = int((~known).sum())
        _log_examples(where_inter, "unknown_item",
                      pd.Series(inter["item"][~known].astype(str).unique()),
                      "dropped: the item has no row in the item table")
        inter = inter[known].reset_index(drop=True)

    inter, sampling = sample_users(inter, users, seed, min_interactions=min_user_interactions)
    if drop_unused_items:
        used = its["item"].isin(inter["item"]).to_numpy()
        unused = int((~used).sum())
        if unused:
            log.info("%s: %d items without interactions left out", where_items, unused)
            its = its[used].reset_index(drop=True)
    else:
        unused = 0

    source_obj = image_source(images)
    owned = source_obj is not None and source_obj is not images  # opened here: closed here
    tmp: Path | None = None
    try:
        rows, n_images, tmp, failures = _images_for(source_obj, its["image"].to_numpy(), out,
                                                    image_size, where_items, skipped)
        for reason, names in failures.items():
            skipped[reason] = len(names)
            examples[reason] = names[:_N_LOGGED]
        final_items = pd.DataFrame({"item": its["item"], "text": its["text"], "image": rows})
        final_items, item_counts = clean_items(final_items, n_images, where=where_items)
        skipped.update({k: v for k, v in item_counts.items() if v})

        inter = pd.DataFrame({"user": inter["user"].astype(str).to_numpy(),
                              "item": inter["item"].astype(str).to_numpy(),
                              "timestamp": inter["timestamp"].to_numpy(dtype=np.int64)})
        inter = inter.sort_values(["user", "timestamp"], kind="stable").reset_index(drop=True)
        coverage = _coverage(final_items, failures, unused)
        if "image_url" in items.columns:  # the provider lists an image we do not have locally
            lost = its["image_url"].to_numpy()[
                pd.Index(its["item"]).get_indexer(final_items["item"])]
            coverage["image_url_without_file"] = int((lost & (final_items["image"] < 0)).sum())
        meta: dict[str, Any] = {
            "name": name or out.name,
            "source": source or fmt,
            "synthetic": False,
            "format": fmt,
            "seed": seed if users is not None else None,
            "inputs": {**(inputs or {}), "image_size": int(image_size)},
            "duplicates": dup_info,
            "sampling": sampling,
            "coverage": coverage,
            "skipped": skipped,
            "skipped_examples": examples,
            **(extra_meta or {}),
        }
        path = write_dataset(out, inter, final_items, tmp if n_images else None, meta,
                             overwrite=overwrite)
    finally:
        if owned:
            source_obj.close()
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    counts = {"users": int(inter["user"].nunique()), "items": int(len(final_items)),
              "interactions": int(len(inter)), "images": int(n_images)}
    report = ImportReport(path=path, format=fmt, counts=counts, coverage=coverage,
                          skipped=dict(skipped), duplicates=dup_info, sampling=sampling,
                          examples=examples)
    log.info("imported %s (%s): %s; coverage %s; skipped %s", path, fmt, counts, coverage,
             skipped or "nothing")
    return report


def _images_for(source: ImageSource | None, keys: np.ndarray, out: Path, size: int,
                where: str, skipped: dict[str, int]
                ) -> tuple[np.ndarray, int, Path | None, dict[str, list[str]]]:
    """Decode the distinct keys into a temporary store; returns each item's row (-1 = none),
    the store's row count, its path and the failed keys by reason."""
    keys = np.asarray(keys, dtype=object)
    has_key = np.array([bool(k) for k in keys], dtype=bool)
    rows = np.full(len(keys), -1, dtype=np.int64)
    if source is None:
        if has_key.any():
            log.warning("%s names %d image files but no image folder was given: importing text "
                        "only", where, int(has_key.sum()))
            skipped["no_image_dir"] = int(has_key.sum())
        return rows, 0, None, {}
    unique = pd.unique(keys[has_key]) if has_key.any() else np.array([], dtype=object)
    if not len(unique):
        return rows, 0, None, {}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.images-{uuid.uuid4().hex[:8]}.npy"
    try:
        row_of_key, failures = _decode_images(source, unique, size, tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    rows[has_key] = [row_of_key.get(k, -1) for k in keys[has_key]]
    return rows, len(unique), tmp, failures


def _decode_images(source: ImageSource, keys: np.ndarray, size: int, dest: Path
                   ) -> tuple[dict[str, int], dict[str, list[str]]]:
    """Decode every key into row i of a memory-mapped store; returns {key: row} for the ones that
    worked and the failing keys by reason. Failed rows stay mid-grey and unreferenced."""
    store = np.lib.format.open_memmap(dest, mode="w+", dtype=np.uint8,
                                      shape=(len(keys), size, size, 3))
    row_of_key: dict[str, int] = {}
    failures: dict[str, list[str]] = {MISSING_IMAGE: [], CORRUPT_IMAGE: [], IMAGE_NOT_A_FILE: [],
                                      IMAGE_OUTSIDE_FOLDER: []}
    for row, key in enumerate(tqdm(keys, desc="images", unit="img", mininterval=1.0)):
        try:
            with source.open(key) as f, Image.open(f) as img:
                store[row] = to_rgb_uint8(img, size)
        except ImageSkip as e:
            _image_failed(failures, e.reason, key, e.detail)
            store[row] = PLACEHOLDER_VALUE
            continue
        except Exception as e:  # noqa: BLE001 - a broken image is never fatal, whatever PIL says
            _image_failed(failures, CORRUPT_IMAGE, key, f"{type(e).__name__}: {e}")
            store[row] = PLACEHOLDER_VALUE
            continue
        row_of_key[key] = row
    store.flush()
    del store
    total = sum(len(v) for v in failures.values())
    if total:
        log.warning("%d of %d images from %s could not be used (%s); those items have no image",
                    total, len(keys), source.describe(),
                    ", ".join(f"{k}: {len(v)}" for k, v in failures.items() if v))
    return row_of_key, {k: v for k, v in failures.items() if v}


def _image_failed(failures: dict[str, list[str]], reason: str, name: str, why: str) -> None:
    failures[reason].append(name)
    if sum(len(v) for v in failures.values()) <= _N_LOGGED:
        log.warning("image %s: %s (%s); the item gets no image", name, reason, why)
    else:
        log.debug("image %s: %s (%s)", name, reason, why)


def _coverage(items: pd.DataFrame, failures: dict[str, list[str]], unused: int
              ) -> dict[str, Any]:
    n = len(items)
    no_text = int((items["text"].str.strip() == "").sum())
    no_image = int((items["image"] < 0).sum())
    return {
        "items": n,
        "items_without_text": no_text,
        "items_without_image": no_image,
        "text_coverage": round(1 - no_text / n, 4) if n else 0.0,
        "image_coverage": round(1 - no_image / n, 4) if n else 0.0,
        "missing_image_files": len(failures.get(MISSING_IMAGE, ())),
        "broken_image_files": sum(len(failures.get(r, ())) for r in BROKEN_IMAGE_REASONS),
        "items_without_interactions_dropped": int(unused),
    }


def normalise_ids(ids: pd.Series, fn: Callable[[str], str]) -> pd.Series:
    """`fn` applied to every id as a string (missing -> ""); on a categorical column per category,
    merging categories that become equal, so paper-size id columns stay cheap."""
    if isinstance(ids.dtype, pd.CategoricalDtype):
        cats = [fn(str(c)) for c in ids.cat.categories]
        codes_of, uniq = pd.factorize(pd.Series(cats, dtype=object))
        codes = ids.cat.codes.to_numpy()
        new = np.where(codes >= 0, codes_of[np.maximum(codes, 0)], -1)
        cat = pd.Categorical.from_codes(new, categories=pd.Index(uniq, dtype=object))
        return pd.Series(cat, index=ids.index, name=ids.name)
    values = ids.astype(object).where(ids.notna(), "")
    return pd.Series([fn(str(v)) for v in values], index=ids.index, name=ids.name,
                     dtype=object)


def _drop_blank_ids(df: pd.DataFrame, cols: tuple[str, ...], where: str,
                    skipped: dict[str, int]) -> pd.DataFrame:
    blank = np.zeros(len(df), dtype=bool)
    for col in cols:
        values = df[col]
        if isinstance(values.dtype, pd.CategoricalDtype):
            cats = values.cat.categories.astype(str).str.strip() == ""
            codes = values.cat.codes.to_numpy()
            blank |= (codes < 0) | np.asarray(cats, dtype=bool)[np.maximum(codes, 0)]
        else:
            blank |= (values.isna() | (values.astype(str).str.strip() == "")).to_numpy()
    if blank.any():
        skipped["blank_id"] = skipped.get("blank_id", 0) + int(blank.sum())
        first = int(np.flatnonzero(blank)[0])
        log.warning("%s: %d rows without a %s id dropped (first: data row %d)", where,
                    int(blank.sum()), "/".join(cols), first + 1)
        df = df[~blank].reset_index(drop=True)
    return df


def _log_examples(where: str, reason: str, ids: pd.Series, action: str) -> None:
    shown = ", ".join(repr(x) for x in ids.head(5))
    log.warning("%s: %d rows with %s (e.g. %s): %s", where, len(ids), reason, shown, action)


def _require(df: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks columns {missing}; expected {list(columns)}, found "
                         f"{list(df.columns)}")


# -- timestamps ------------------------------------------------------------------------------
_INT_RE = r"[+-]?\d+"


def parse_timestamps(values: pd.Series, path: str | os.PathLike, *, column: str = "timestamp",
                     line_of: Callable[[int], int] | None = None) -> np.ndarray:
    """Timestamps as int64: integers as they are (Unix seconds, milliseconds, ...), decimal
    numbers rounded, date/time strings as Unix seconds (UTC).

    A value that is none of these, negative, or too large for int64 (a 23-digit number used to
    wrap silently) is an error naming the file, the row, its line (`line_of(row)`, default
    row + 2 below a header line) and the value. Categorical input is parsed per category.
    """
    if isinstance(values.dtype, pd.CategoricalDtype):
        cats = pd.Series(values.cat.categories.astype(str))
        codes = values.cat.codes.to_numpy()
        if (codes < 0).any():
            _timestamp_error(values, int(np.flatnonzero(codes < 0)[0]), int((codes < 0).sum()),
                             "is empty", path, column, line_of)
        try:
            parsed = parse_timestamps(cats, path, column=column, line_of=lambda r: -1)
        except InputFormatError:
            bad_cats = _bad_timestamp_mask(cats)
            bad_rows = bad_cats[codes]
            row = int(np.flatnonzero(bad_rows)[0])
            _timestamp_error(values, row, int(bad_rows.sum()), _why_bad(str(values.iloc[row])),
                             path, column, line_of)
        return parsed[codes]
    if pd.api.types.is_integer_dtype(values):
        return _check_integer_timestamps(values, path, column=column, line_of=line_of)
    fast = _plain_int64(values)
    if fast is not None:
        return fast
    s = values.astype(object).where(values.notna(), "").astype(str).str.strip()
    bad = _bad_timestamp_mask(s)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        _timestamp_error(values, row, int(bad.sum()), _why_bad(s.iloc[row]), path, column,
                         line_of)
    is_int = s.str.fullmatch(_INT_RE).to_numpy(dtype=bool)
    out = np.zeros(len(s), dtype=np.int64)
    if is_int.any():
        out[is_int] = s[is_int].map(int).to_numpy(dtype=np.int64)
    rest = ~is_int
    if rest.any():
        num = pd.to_numeric(s[rest], errors="coerce").to_numpy(dtype=float)
        is_num = np.isfinite(num)
        idx = np.flatnonzero(rest)
        out[idx[is_num]] = np.round(num[is_num]).astype(np.int64)
        if (~is_num).any():
            dates = pd.to_datetime(s.iloc[idx[~is_num]], errors="coerce", utc=True,
                                   format="mixed")
            epoch = pd.Timestamp("1970-01-01", tz="UTC")
            out[idx[~is_num]] = ((dates - epoch) // pd.Timedelta(seconds=1)).to_numpy()
    return out


def _plain_int64(values: pd.Series) -> np.ndarray | None:
    """The common case at C speed: every value a non-negative integer that fits int64."""
    try:
        num = pd.to_numeric(values, errors="raise")
    except (ValueError, TypeError, OverflowError):
        return None
    if num.dtype != np.int64 or (len(num) and num.min() < 0):
        return None
    return num.to_numpy(dtype=np.int64)


def _bad_timestamp_mask(s: pd.Series) -> np.ndarray:
    """True where `s` (stripped strings) is not a valid non-negative int64 time."""
    s = s.astype(str).str.strip()
    is_int = s.str.fullmatch(_INT_RE).to_numpy(dtype=bool)
    bad = np.zeros(len(s), dtype=bool)
    if is_int.any():
        digits = s[is_int].str.lstrip("+-").str.lstrip("0")
        neg = s[is_int].str.startswith("-").to_numpy() & (digits != "").to_numpy()
        n = digits.str.len().to_numpy()
        too_big = (n > 19) | ((n == 19) & (digits > str(INT64_MAX)).to_numpy())
        bad[is_int] = neg | too_big
    rest = ~is_int
    if rest.any():
        sub = s[rest]
        num = pd.to_numeric(sub, errors="coerce").to_numpy(dtype=float)
        is_num = np.isfinite(num)
        num_bad = is_num & ((num < 0) | (num >= 2.0 ** 63))
        dates = pd.to_datetime(sub.where(~is_num, None), errors="coerce", utc=True,
                               format="mixed")
        epoch = pd.Timestamp("1970-01-01", tz="UTC")
        date_ok = dates.notna().to_numpy()
        secs = np.zeros(len(sub), dtype=np.int64)
        if date_ok.any():
            secs[date_ok] = ((dates[date_ok] - epoch) // pd.Timedelta(seconds=1)).to_numpy()
        date_bad = ~is_num & (~date_ok | (secs < 0))
        bad[rest] = num_bad | date_bad | (sub == "").to_numpy()
    return bad


def _why_bad(value: str) -> str:
    v = value.strip()
    if not v:
        return "is empty"
    if re.fullmatch(_INT_RE, v):
        if v.startswith("-") and v.lstrip("-0"):
            return "is negative (timestamps are times since 1970, >= 0)"
        return "does not fit a 64-bit integer (expected Unix time in seconds or milliseconds)"
    try:
        f = float(v)
    except ValueError:
        date = pd.to_datetime(v, errors="coerce", utc=True, format="mixed")
        if pd.notna(date) and date < pd.Timestamp("1970-01-01", tz="UTC"):
            return "is a date before 1970 (timestamps must be >= 0)"
        return "is neither an integer nor a date/time"
    if not np.isfinite(f):
        return "is neither an integer nor a date/time"
    if f < 0:
        return "is negative (timestamps are times since 1970, >= 0)"
    if f >= 2.0 ** 63:
        return "does not fit a 64-bit integer (expected Unix time in seconds or milliseconds)"
    return "is a date before 1970 (timestamps must be >= 0)"


def _timestamp_error(values: pd.Series, row: int, n_bad: int, why: str,
                     path: str | os.PathLike, column: str,
                     line_of: Callable[[int], int] | None) -> None:
    line = line_of(row) if line_of is not None else row + 2
    where = f" (line {line})" if line >= 0 else ""
    raise InputFormatError(
        f"{path}: column {column!r} row {row + 1} has {values.iloc[row]!r}{where}, which {why} "
        f"({n_bad} bad rows in all). Fix or remove those rows."
    )


def _check_integer_timestamps(values: pd.Series, path: str | os.PathLike, *,
                              column: str = "timestamp",
                              line_of: Callable[[int], int] | None = None) -> np.ndarray:
    arr = values.to_numpy()
    if arr.dtype.kind == "u" and (arr > INT64_MAX).any():
        row = int(np.flatnonzero(arr > INT64_MAX)[0])
        _timestamp_error(values, row, int((arr > INT64_MAX).sum()), _why_bad("9" * 20), path,
                         column, line_of)
    arr = arr.astype(np.int64)
    if (arr < 0).any():
        row = int(np.flatnonzero(arr < 0)[0])
        _timestamp_error(values, row, int((arr < 0).sum()), _why_bad("-1"), path, column,
                         line_of)
    return arr


def timestamp_value(value: Any, path: str | os.PathLike, line: int, key: str) -> int:
    """One timestamp from a JSON record as int64 (ints, integral floats or digit strings); an
    error naming file, line and value otherwise (used by the JSON-lines adapters)."""
    if isinstance(value, bool) or value is None:
        ok = False
    elif isinstance(value, int):
        ok = True
    elif isinstance(value, float) and np.isfinite(value) and value == int(value):
        value, ok = int(value), True
    elif isinstance(value, str) and re.fullmatch(_INT_RE, value.strip()):
        value, ok = int(value.strip()), True
    else:
        ok = False
    if ok and 0 <= value <= INT64_MAX:
        return int(value)
    why = ("is negative (timestamps are times since 1970, >= 0)" if ok and value < 0 else
           "does not fit a 64-bit integer" if ok else "is not an integer time")
    raise InputFormatError(f"{path}: line {line}: field {key!r} has {value!r}, which {why}. "
                           "Fix or remove that line.")


# -- delimited tables ------------------------------------------------------------------------
class LineMap:
    """Row index of a parsed table -> line number in its file (blank lines and quoted line
    breaks shift them); kept compact: only rows after the first irregularity are stored."""

    def __init__(self) -> None:
        self.regular = 0  # rows 0..regular-1 sit on line row + 2
        self._lines: list[int] | None = None

    @property
    def irregular(self) -> bool:
        """True once a row was not on line row + 2 (every later row is stored)."""
        return self._lines is not None

    def add(self, row: int, line: int) -> None:
        if self._lines is None and line == row + 2:
            self.regular = row + 1
            return
        if self._lines is None:
            self._lines = []
        self._lines.append(line)

    def __call__(self, row: int) -> int:
        if row < self.regular or self._lines is None:
            return row + 2
        return self._lines[row - self.regular]


def detect_delimiter(path: Path) -> str:
    """The table's delimiter among , TAB ; |: the one the header line uses (a header is plain
    column names); else csv.Sniffer on the first 64 KiB; else by suffix."""
    with open(path, "rb") as f:
        sample = f.read(1 << 16).decode("utf-8", errors="replace")
    header = sample.splitlines()[0] if sample else ""
    counts = {d: header.count(d) for d in _DELIMITERS}
    best = max(counts, key=counts.get)
    if counts[best] and sorted(counts.values())[-2] < counts[best]:
        return best
    try:
        return csv.Sniffer().sniff(sample, delimiters=_DELIMITERS).delimiter
    except csv.Error:
        if counts[best]:
            return best
        return "\t" if path.suffix.lower() in (".tsv", ".tab") else ","


def check_input_file(path: Path, what: str) -> None:
    """A readable regular input file, else an error saying which argument to fix."""
    if not path.exists():
        raise FileNotFoundError(f"{what} file {path} does not exist; {_HINT_SRC}")
    if not path.is_file():
        kind = "a folder" if path.is_dir() else "not a regular file"
        raise InputFormatError(f"{what} file {path} is {kind}; pass the table file itself")


_HINT_SRC = "check the --src folder / the file argument (docs/adapters.md lists the layout)"


def read_delimited(path: str | os.PathLike, *, required: tuple[str, ...] = (),
                   usecols: tuple[str, ...] | None = None, categorical: tuple[str, ...] = (),
                   what: str = "table", sep: str | None = None
                   ) -> tuple[pd.DataFrame, LineMap]:
    """Read a CSV/TSV with a header into string columns (ids keep leading zeros).

    A first streaming pass checks every record has the header's number of fields and is valid
    UTF-8, so a ragged row, undecodable bytes, an empty file or a missing `required` column is
    an `InputFormatError` naming the file and the line, with what to do. `usecols` reads only
    those columns; `categorical` ones become pandas categoricals of the *strings* (paper-size
    interaction files; leading zeros kept). Returns the frame and a `LineMap` (row -> line) for later error messages.
    """
    path = Path(path)
    check_input_file(path, what)
    sep = sep or detect_delimiter(path)
    header, lines = _scan_delimited(path, sep)
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        raise InputFormatError(f"{path}: the header (line 1) repeats the columns {repeated}; "
                               "give every column its own name")
    missing = [c for c in required if c not in header]
    if missing:
        raise InputFormatError(
            f"{path}: missing columns {missing} in the header (line 1); expected "
            f"{list(required)}, found {header} (delimiter {sep!r}). Rename the columns of your "
            "export (or pick the right file)."
        )
    wanted = list(usecols) if usecols is not None else header
    positions = [header.index(c) for c in wanted]
    names = [header[p] for p in positions]
    options = {"sep": sep, "header": 0, "names": header, "usecols": positions, "dtype": str,
               "keep_default_na": False, "na_filter": False, "encoding": "utf-8-sig"}
    try:
        if categorical:
            df = _read_categorical(path, options, names, set(categorical))
        else:
            df = pd.read_csv(path, **options)[names]
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
        raise InputFormatError(f"{path}: could not be parsed as a {sep!r}-separated table "
                               f"({e}). Check the file is a complete export.") from e
    log.info("%s: %d rows read (delimiter %r)", path, len(df), sep)
    return df, lines


def _read_categorical(path: Path, options: dict[str, Any], names: list[str],
                      categorical: set[str]) -> pd.DataFrame:
    """Read in chunks of strings, turning `categorical` columns into categoricals chunk by chunk:
    a 31M-row file never holds 31M id strings at once. (pandas' own ``dtype="category"`` infers
    the categories' type and would turn "007" into 7.)"""
    parts: dict[str, list] = {c: [] for c in names}
    for chunk in pd.read_csv(path, chunksize=_CHUNK_ROWS, **options):
        for c in names:
            col = chunk[c]
            parts[c].append(col.astype("category") if c in categorical else col)
    if not parts[names[0]]:
        return pd.DataFrame({c: pd.Series([], dtype=str) for c in names})
    return pd.DataFrame({
        c: (pd.Series(union_categoricals(parts[c]), name=c) if c in categorical
            else pd.concat(parts[c], ignore_index=True))
        for c in names
    })


def _scan_delimited(path: Path, sep: str) -> tuple[list[str], LineMap]:
    """Header names and the row -> line map; raises naming the first bad line."""
    state = {"line": 0}

    def decoded() -> Iterator[str]:
        with open(path, "rb") as f:
            for number, raw in enumerate(f, 1):
                state["line"] = number
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    snippet = raw[max(0, e.start - 20): e.end + 20]
                    raise InputFormatError(
                        f"{path}: line {number} is not valid UTF-8 (byte {raw[e.start]:#04x} "
                        f"at column {e.start + 1}, near {snippet!r}). Re-save the file as UTF-8, "
                        "e.g. `iconv -f latin1 -t utf-8 in.csv > out.csv`."
                    ) from None
                if number == 1 and text.startswith("\ufeff"):
                    text = text[1:]
                yield text

    reader = csv.reader(decoded(), delimiter=sep)
    header: list[str] | None = None
    lines = LineMap()
    row = 0
    end = 0  # the line the previous record ended on
    try:
        for fields in reader:
            begin, end = end + 1, state["line"]
            if not fields:
                continue  # blank line: pandas skips it too
            if header is None:
                header = [h.strip() for h in fields]
                continue
            if len(fields) != len(header):
                spans = (f" The record spans lines {begin}-{end}: an unbalanced quote (\") "
                         f"near line {begin} joins lines." if end > begin else "")
                raise InputFormatError(
                    f"{path}: line {end} has {len(fields)} fields but the header "
                    f"(line 1) has {len(header)} ({header}); the row is ragged. Fix or remove "
                    f"that line (a text field holding the delimiter must be quoted).{spans}"
                )
            if lines.irregular or state["line"] != row + 2:
                lines.add(row, state["line"])
            else:
                lines.regular = row + 1
            row += 1
    except csv.Error as e:
        raise InputFormatError(f"{path}: line {state['line']}: {e}. Fix that line (quoting or "
                               "line endings).") from e
    if header is None:
        raise InputFormatError(f"{path} is empty; expected a header line with the column names "
                               "and one row per record")
    return header, lines


# -- the generic CSV importer ----------------------------------------------------------------
def import_tables(
    interactions_csv: str | os.PathLike,
    items_csv: str | os.PathLike,
    image_dir: str | os.PathLike | None,
    out_dir: str | os.PathLike,
    **options: Any,
) -> ImportReport:
    """Import ``user,item,timestamp`` and ``item,text[,image]`` tables (CSV or TSV, delimiter
    detected, extra columns ignored) with images in `image_dir` (None: text only); `options`
    are `ImportOptions`. Every item row is kept, except with ``users``: then items none of the
    sampled users touched are left out (and their images not decoded)."""
    interactions_csv, items_csv = Path(interactions_csv), Path(items_csv)
    opts = ImportOptions.of(options)
    check_writable_target(Path(out_dir), opts.overwrite)
    inter, inter_lines = read_delimited(interactions_csv, required=INTERACTION_COLUMNS,
                                        usecols=INTERACTION_COLUMNS, what="interactions")
    items, _ = read_delimited(items_csv, required=("item", "text"), what="items")
    extra = [c for c in items.columns if c not in ("item", "text", "image")]
    if extra:
        log.info("%s: ignoring columns %s", items_csv, extra)
    if "image" not in items.columns:
        items["image"] = ""  # no column: text only
    inter["timestamp"] = parse_timestamps(inter["timestamp"], interactions_csv,
                                          line_of=inter_lines)
    return import_frames(
        inter, items[["item", "text", "image"]], image_dir, out_dir, **opts.frames(),
        drop_unused_items=opts.users is not None, fmt="csv",
        source=f"imported from {interactions_csv.name}, {items_csv.name}"
               + (f" and images in {image_dir}" if image_dir is not None else ""),
        inputs={"interactions": str(interactions_csv), "items": str(items_csv),
                "image_dir": str(image_dir) if image_dir is not None else None},
        where=(str(interactions_csv), str(items_csv)),
    )


def import_dataset(
    interactions_csv: str | os.PathLike,
    items_csv: str | os.PathLike,
    image_dir: str | os.PathLike | None,
    out_dir: str | os.PathLike,
    **options: Any,
) -> Path:
    """`import_tables` returning only the data set's path (the original API); the counts are
    in its ``meta.json``. Timestamps may be integers (e.g. Unix seconds) or date strings."""
    return import_tables(interactions_csv, items_csv, image_dir, out_dir, **options).path


_TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".tab")


def find_table(src: Path, stem: str) -> Path:
    """``<src>/<stem>.csv`` (or .tsv/.txt/.tab); an error listing what the folder holds."""
    found = [src / f"{stem}{s}" for s in _TABLE_SUFFIXES if (src / f"{stem}{s}").is_file()]
    if len(found) == 1:
        return found[0]
    have = sorted(p.name for p in src.iterdir()) if src.is_dir() else []
    if not found:
        raise FileNotFoundError(f"{src} has no {stem}.csv / {stem}.tsv (it holds {have[:20]}); "
                                "see docs/adapters.md for the layout of --src")
    raise InputFormatError(f"{src} holds several {stem} tables {[p.name for p in found]}; keep "
                           "one")


@register("data_format", "csv",
          description="generic tables: <src>/interactions.csv (user,item,timestamp), "
                      "<src>/items.csv (item,text[,image]), images in <src>/images/")
def import_csv(src: str | os.PathLike, out: str | os.PathLike, **options: Any) -> ImportReport:
    """The generic importer as a data format (`ImportOptions`): `src` is a folder holding
    ``interactions.{csv,tsv}`` and ``items.{csv,tsv}``; images from `images`, else from
    ``<src>/images`` when it exists, else text only."""
    opts = ImportOptions.of(options)
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"--src {src} is not a folder; it must hold interactions.csv "
                                "and items.csv (docs/adapters.md)")
    images = opts.images
    if images is None and (src / "images").is_dir():
        images = src / "images"
    return import_tables(find_table(src, "interactions"), find_table(src, "items"), images, out,
                         **opts.frames())
