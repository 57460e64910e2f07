"""MovieLens-100K from the files the ``recbole`` wheel ships, for checks on real user behaviour.

``recbole`` carries ``dataset_example/ml-100k/`` as RecBole atomic files (tab separated, typed
headers such as ``user_id:token``). We only *read* those files: ``import recbole`` would fail
because it is installed with ``--no-deps``. Items get a text (title, year, genres) and no image,
so MovieLens serves the ID and text item encoders only.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from mmsr_lib.data.format import FORMAT_VERSION, META_FILE, write_dataset
from mmsr_lib.util.paths import resolve

log = logging.getLogger("mmsr.data")

DIR_NAME = "movielens-100k"
_INSTALL = "pip install --no-deps recbole==1.2.1"
_CONVERTER_VERSION = 1


def recbole_ml100k_dir() -> Path:
    """Where the installed recbole wheel keeps ml-100k; a clear error when it is not installed."""
    spec = importlib.util.find_spec("recbole")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"MovieLens-100K is read from the recbole wheel, which is not installed: run "
            f"`{_INSTALL}` (no dependencies needed; the package is never imported)"
        )
    for location in spec.submodule_search_locations:
        d = Path(location) / "dataset_example" / "ml-100k"
        if (d / "ml-100k.inter").is_file() and (d / "ml-100k.item").is_file():
            return d
    raise FileNotFoundError(
        f"recbole is installed at {list(spec.submodule_search_locations)} but without "
        f"dataset_example/ml-100k/ml-100k.inter and ml-100k.item; reinstall it with `{_INSTALL}`"
    )


def ensure_movielens_100k(cache_dir: str | Path) -> Path:
    """MovieLens-100K in the mmsr format under `cache_dir`, converted on first use."""
    root = resolve(cache_dir) / DIR_NAME
    meta_path = root / META_FILE
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if (meta.get("converter_version") == _CONVERTER_VERSION
                and meta.get("format_version") == FORMAT_VERSION):
            return root
    return convert_movielens_100k(recbole_ml100k_dir(), root, overwrite=True)  # our cache folder


def convert_movielens_100k(src: Path, out_dir: Path, overwrite: bool = False) -> Path:
    """Convert RecBole's ml-100k atomic files in `src` into a text-only data set at `out_dir`."""
    inter = _read_atomic(src / "ml-100k.inter", ("user_id", "item_id", "timestamp"))
    items = _read_atomic(src / "ml-100k.item",
                         ("item_id", "movie_title", "release_year", "class"))
    timestamps = pd.to_numeric(inter["timestamp"], errors="coerce")
    if timestamps.isna().any():
        row = int(np.flatnonzero(timestamps.isna().to_numpy())[0])
        raise ValueError(f"{src / 'ml-100k.inter'}: unparsable timestamp in row {row + 1}: "
                         f"{inter['timestamp'].iloc[row]!r}")
    title = items["movie_title"].str.strip()
    year = items["release_year"].str.strip()
    genres = items["class"].str.split().str.join(", ")
    head = title.where(year == "", title + " (" + year + ")")  # f"{title} ({year})"
    text = (head + ". Genres: " + genres).where(genres != "", head + ".")
    meta = {
        "name": DIR_NAME,
        "source": f"MovieLens-100K (GroupLens) via the recbole wheel: {src}",
        "synthetic": False,
        "converter_version": _CONVERTER_VERSION,
        "notes": "every rating counts as an interaction; text = title (year) + genres; no images",
        "skipped": {},
    }
    return write_dataset(
        out_dir,
        pd.DataFrame({"user": inter["user_id"], "item": inter["item_id"],
                      "timestamp": np.rint(timestamps.to_numpy(dtype=float)).astype(np.int64)}),
        pd.DataFrame({"item": items["item_id"], "text": text, "image": -1}),
        None,
        meta,
        overwrite=overwrite,
    )


def _read_atomic(path: Path, fields: tuple[str, ...]) -> pd.DataFrame:
    """A RecBole atomic file with its ``name:type`` headers reduced to ``name``."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall recbole with `{_INSTALL}`")
    df = pd.read_csv(path, sep="\t", dtype=str, quoting=csv.QUOTE_NONE, keep_default_na=False,
                     na_filter=False)
    df.columns = [c.split(":", 1)[0] for c in df.columns]
    missing = [f for f in fields if f not in df.columns]
    if missing:
        raise ValueError(f"{path}: expected fields {list(fields)}, found {list(df.columns)}")
    return df[list(fields)]
