"""Real product photos offline: Fashion-MNIST, 70,000 28 x 28 grayscale garment photos.

Fashion-MNIST (Xiao, Rasul and Vollgraf 2017; Zalando article images, MIT licence) is shipped by
Debian's ``dataset-fashion-mnist`` package, which puts the four IDX files in
``/usr/share/datasets/fashion-mnist``::

    apt-get install -y dataset-fashion-mnist

The synthetic catalog uses them as real item photos (``SynthConfig.images = "fashion-mnist"``).
The files are read here directly: the IDX format is a 4-byte magic (0, 0, type, ndim), ndim
big-endian int32 sizes, then the raw array. No pickle, no download; ``.gz`` or plain files.
Another folder holding the same four files can be named with ``$MMSR_FASHION_MNIST``.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

ENV = "MMSR_FASHION_MNIST"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
INSTALL_HINT = (
    "install Debian's package with `apt-get install -y dataset-fashion-mnist` (it puts the IDX "
    f"files in {DEBIAN_DIR}), or set {ENV} to a folder holding train-images-idx3-ubyte(.gz), "
    "train-labels-idx1-ubyte(.gz), t10k-images-idx3-ubyte(.gz) and t10k-labels-idx1-ubyte(.gz)"
)
# the ten classes, in label order
CLASSES = ("t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
           "bag", "ankle boot")
SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60_000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10_000),
}
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class FashionMNISTNotFoundError(FileNotFoundError):
    """The Fashion-MNIST files are not on this machine; the message says how to install them."""


def find_root(root: str | Path | None = None) -> Path:
    """The folder with the four IDX files: `root`, else $MMSR_FASHION_MNIST, else Debian's."""
    candidates = [Path(root)] if root is not None else (
        [Path(os.environ[ENV])] if os.environ.get(ENV) else [DEBIAN_DIR])
    for folder in candidates:
        folder = folder.expanduser()
        if all(_file(folder, name) is not None for split in SPLITS.values() for name in split[:2]):
            return folder
    where = ", ".join(str(c) for c in candidates)
    raise FashionMNISTNotFoundError(f"Fashion-MNIST is not in {where}; {INSTALL_HINT}")


def _file(folder: Path, name: str) -> Path | None:
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.is_file():
            return candidate
    return None


def read_idx(path: str | Path) -> np.ndarray:
    """One IDX file (gzip-compressed or not) as a read-only array, its header checked."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:  # a truncated or damaged .gz
        raise ValueError(f"{path} cannot be read ({e}); reinstall it ({INSTALL_HINT})") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic {raw[:4]!r})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path} is truncated inside its header")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != header + size:
        raise ValueError(f"{path} holds {len(raw) - header} data bytes but its header {shape} "
                         f"needs {size}; the file is truncated or damaged ({INSTALL_HINT})")
    arr = np.frombuffer(raw, dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=False)


@lru_cache(maxsize=4)
def _load(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for name in (["train", "test"] if split == "all" else [split]):
        img_name, lab_name, n = SPLITS[name]
        img = read_idx(_file(folder, img_name))
        lab = read_idx(_file(folder, lab_name))
        if img.shape != (n, 28, 28) or img.dtype != np.uint8 or lab.shape != (n,) \
                or int(lab.max()) >= len(CLASSES):
            raise ValueError(
                f"{folder}: the {name} split has images {img.shape} {img.dtype} and labels "
                f"{lab.shape} (max {int(lab.max())}); Fashion-MNIST has ({n}, 28, 28) uint8 and "
                f"{n} labels in 0..9"
            )
        images.append(img)
        labels.append(lab.astype(np.uint8))
    out = np.concatenate(images), np.concatenate(labels)
    for a in out:
        a.setflags(write=False)
    return out


def load_fashion_mnist(root: str | Path | None = None,
                       split: str = "all") -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, 28, 28], labels uint8 [N]): "train" (60,000), "test" (10,000) or "all"
    (train then test, 70,000). Light garment on a black background; cached per process."""
    if split not in (*SPLITS, "all"):
        raise ValueError(f"split={split!r}; choose 'train', 'test' or 'all'")
    return _load(find_root(root).resolve(), split)


def fingerprint(root: str | Path | None = None) -> str:
    """sha256 over the four files: which photos a catalog was made from (recorded in its meta)."""
    folder = find_root(root)
    h = hashlib.sha256()
    for img_name, lab_name, _ in SPLITS.values():
        for name in (img_name, lab_name):
            h.update(_file(folder, name).read_bytes())
    return h.hexdigest()[:16]
