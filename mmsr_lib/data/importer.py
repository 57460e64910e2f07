"""Import a real data set (interaction + item tables and an image folder) into the mmsr format.

Inputs are CSV or TSV (the delimiter is detected) with columns ``user, item, timestamp`` and
``item, text, image``; ``image`` is a file name relative to the image folder and may be empty.
Images are decoded once, converted to RGB, resized and centre-cropped, and streamed into a
memory-mapped ``images.npy``, so a catalog of a hundred thousand images never sits in RAM.
Broken rows are repaired or dropped, counted in ``meta["skipped"]`` and logged, never fatal.
"""

from __future__ import annotations

import csv
import logging
import os
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from mmsr_lib.data.format import (
    INTERACTION_COLUMNS,
    ITEM_COLUMNS,
    clean_items,
    drop_unknown_items,
    write_dataset,
)
from mmsr_lib.data.images import PLACEHOLDER_VALUE, to_rgb_uint8

log = logging.getLogger("mmsr.data")

_DELIMITERS = ",\t;|"
_N_LOGGED = 20  # failing image files logged one by one; the rest only counted


def import_dataset(
    interactions_csv: str | os.PathLike,
    items_csv: str | os.PathLike,
    image_dir: str | os.PathLike | None,
    out_dir: str | os.PathLike,
    image_size: int = 224,
    name: str | None = None,
) -> Path:
    """Convert the tables (and images in `image_dir`, None for text-only) into a data set at
    `out_dir`; returns its path. Timestamps may be integers (e.g. Unix seconds) or date strings."""
    interactions_csv, items_csv, out_dir = Path(interactions_csv), Path(items_csv), Path(out_dir)
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8 pixels, got {image_size}")
    inter = _read_table(interactions_csv, INTERACTION_COLUMNS)
    items = _read_table(items_csv, ITEM_COLUMNS, optional=("image",))  # no column: text only
    inter["timestamp"] = parse_timestamps(inter["timestamp"], interactions_csv)
    skipped: dict[str, int] = {}
    examples: dict[str, list[str]] = {}

    files = items["image"].astype(str).str.strip()
    has_file = (files != "").to_numpy()
    if image_dir is None and has_file.any():
        log.warning("%s names %d image files but no image folder was given: importing text only",
                    items_csv, int(has_file.sum()))
        skipped["no_image_dir"] = int(has_file.sum())
        has_file = np.zeros(len(files), dtype=bool)
    unique_files = pd.unique(files[has_file].to_numpy()) if has_file.any() else np.array([])

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_images = out_dir.parent / f".{out_dir.name}.images-{uuid.uuid4().hex[:8]}.npy"
    try:
        row_of_file: dict[str, int] = {}
        n_images = 0
        if len(unique_files):
            row_of_file, failures = _load_images(Path(image_dir), unique_files, image_size,
                                                 tmp_images)
            n_images = len(unique_files)
            for reason, names in failures.items():
                skipped[reason] = len(names)
                examples[reason] = names[:_N_LOGGED]
        rows = np.full(len(items), -1, dtype=np.int64)
        rows[has_file] = [row_of_file.get(f, -1) for f in files[has_file]]
        items = pd.DataFrame({"item": items["item"], "text": items["text"], "image": rows})
        items, item_counts = clean_items(items, n_images, where=str(items_csv))
        inter, inter_counts = drop_unknown_items(inter, items, where=str(interactions_csv))
        for counts in (item_counts, inter_counts):
            skipped.update({k: v for k, v in counts.items() if v})
        meta = {
            "name": name or out_dir.name,
            "source": f"imported from {interactions_csv.name}, {items_csv.name}"
                      + (f" and images in {image_dir}" if n_images else ""),
            "synthetic": False,
            "inputs": {"interactions": str(interactions_csv), "items": str(items_csv),
                       "image_dir": str(image_dir) if image_dir is not None else None,
                       "image_size": image_size},
            "skipped": skipped,
            "skipped_examples": examples,
        }
        return write_dataset(out_dir, inter, items, tmp_images if n_images else None, meta)
    finally:
        tmp_images.unlink(missing_ok=True)


def _load_images(image_dir: Path, files: np.ndarray, size: int, dest: Path
                 ) -> tuple[dict[str, int], dict[str, list[str]]]:
    """Decode every file into row i of a memory-mapped store; returns {file: row} for the ones
    that worked and the failing file names by reason. Failed rows stay mid-grey, unreferenced."""
    if not image_dir.is_dir():
        raise FileNotFoundError(f"image folder {image_dir} does not exist (argument image_dir / "
                                "--images); pass the folder the items table's image names are in")
    store = np.lib.format.open_memmap(dest, mode="w+", dtype=np.uint8,
                                      shape=(len(files), size, size, 3))
    row_of_file: dict[str, int] = {}
    failures: dict[str, list[str]] = {"missing_image": [], "corrupt_image": []}
    for row, name in enumerate(tqdm(files, desc="images", unit="img", mininterval=1.0)):
        path = image_dir / name
        try:
            with Image.open(path) as img:
                store[row] = to_rgb_uint8(img, size)
        except FileNotFoundError:
            _image_failed(failures, "missing_image", name, "file not found")
            store[row] = PLACEHOLDER_VALUE
            continue
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            _image_failed(failures, "corrupt_image", name, f"{type(e).__name__}: {e}")
            store[row] = PLACEHOLDER_VALUE
            continue
        row_of_file[name] = row
    store.flush()
    del store
    total = sum(len(v) for v in failures.values())
    if total:
        log.warning("%d of %d images could not be loaded (%s); those items have no image",
                    total, len(files), ", ".join(f"{k}: {len(v)}" for k, v in failures.items()))
    return row_of_file, {k: v for k, v in failures.items() if v}


def _image_failed(failures: dict[str, list[str]], reason: str, name: str, why: str) -> None:
    failures[reason].append(name)
    if sum(len(v) for v in failures.values()) <= _N_LOGGED:
        log.warning("image %s: %s (%s); the item gets no image", name, reason, why)
    else:
        log.debug("image %s: %s (%s)", name, reason, why)


def detect_delimiter(path: Path) -> str:
    """The table's delimiter among , TAB ; | (csv.Sniffer on the first 64 KiB, else by suffix)."""
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        sample = f.read(1 << 16)
    header = sample.splitlines()[0] if sample else ""
    try:
        return csv.Sniffer().sniff(sample, delimiters=_DELIMITERS).delimiter
    except csv.Error:
        counts = {d: header.count(d) for d in _DELIMITERS}
        best = max(counts, key=counts.get)
        if counts[best]:
            return best
        return "\t" if path.suffix.lower() in (".tsv", ".tab") else ","


def _read_table(path: Path, columns: tuple[str, ...], optional: tuple[str, ...] = ()
                ) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; pass a CSV/TSV with columns "
                                f"{', '.join(columns)}")
    sep = detect_delimiter(path)
    df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_filter=False)
    df.columns = [str(c).strip() for c in df.columns]
    for col in optional:
        if col not in df.columns:
            df[col] = ""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(
            f"{path}: missing columns {missing}; expected {list(columns)}, found "
            f"{list(df.columns)} (delimiter {sep!r}). Rename the columns of your export."
        )
    extra = [c for c in df.columns if c not in columns]
    if extra:
        log.info("%s: ignoring columns %s", path, extra)
    return df[list(columns)].copy()


def parse_timestamps(values: pd.Series, path: Path) -> np.ndarray:
    """Integers as they are; otherwise date/time strings as Unix seconds. A value that is
    neither is an error naming the file and the first bad row."""
    num = pd.to_numeric(values, errors="coerce")
    if not num.isna().any():
        arr = num.to_numpy(dtype=float)
        if (arr == np.round(arr)).all():
            return num.to_numpy().astype(np.int64)
    dates = pd.to_datetime(values.where(num.isna(), None), errors="coerce", utc=True,
                           format="mixed")
    ok_num = num.notna().to_numpy()
    bad = ~ok_num & dates.isna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{path}: column 'timestamp' row {row + 1} has {values.iloc[row]!r}, which is neither "
            f"an integer nor a date/time ({int(bad.sum())} bad rows). Fix or remove those rows."
        )
    seconds = np.zeros(len(values), dtype=np.int64)
    seconds[ok_num] = np.round(num.to_numpy(dtype=float)[ok_num]).astype(np.int64)
    if (~ok_num).any():
        epoch = pd.Timestamp("1970-01-01", tz="UTC")
        seconds[~ok_num] = ((dates[~ok_num] - epoch) // pd.Timedelta(seconds=1)).to_numpy()
    return seconds
