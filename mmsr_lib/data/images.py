"""The image store: one uint8 ``images.npy`` [N, S, S, 3] per data set, memory-mapped once.

The paper's code reopened its image database in every ``__getitem__``; here a store is opened
lazily the first time pixels are needed in a process (or DataLoader worker) and reused after.
Pickling drops the memory map, so a store handed to workers reopens in each of them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from mmsr_lib.data.format import image_store_shape

PLACEHOLDER_VALUE = 128  # mid-grey: what an item without an image looks like to a vision encoder


class ImageStore:
    """Opened lazily once per process/DataLoader worker (np.load(mmap_mode="r")), never per item.

    `path` None is a text-only data set: every row is a placeholder, so `image_size` must be given.
    `placeholders` counts the placeholder images served (rows of -1), for diagnostics.
    """

    def __init__(self, path: str | os.PathLike | None, image_size: int | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.placeholders = 0
        self._array: np.ndarray | None = None
        if self.path is None:
            if image_size is None:
                raise ValueError("ImageStore without an images.npy needs image_size for its "
                                 "placeholder images")
            self._n = 0
            self.image_size = int(image_size)
            return
        if not self.path.is_file():
            raise FileNotFoundError(
                f"image store {self.path} does not exist; rebuild the data set "
                "(`mmsr data synth` / `mmsr data import ...`) or use a text-only item encoder"
            )
        shape = image_store_shape(self.path)  # header only: no memory map in the parent process
        self._n = int(shape[0])
        self.image_size = int(shape[1])
        if image_size is not None and int(image_size) != self.image_size:
            raise ValueError(
                f"{self.path} holds {self.image_size}x{self.image_size} images but image_size="
                f"{image_size} was requested; re-import the data set at that size"
            )

    def __len__(self) -> int:
        return self._n

    @property
    def array(self) -> np.ndarray:
        """The memory-mapped store, opened on first use in this process."""
        if self._array is None:
            if self.path is None:
                raise ValueError("this ImageStore has no images.npy (text-only data set)")
            self._array = np.load(self.path, mmap_mode="r")
        return self._array

    def get(self, rows: np.ndarray) -> np.ndarray:
        """uint8 [len(rows), S, S, 3]; row -1 gives the mid-grey placeholder."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        bad = (rows < -1) | (rows >= self._n)
        if bad.any():
            raise IndexError(
                f"image rows {rows[bad][:5].tolist()} are outside the store "
                f"{self.path or '(none)'} with {self._n} images; -1 means 'no image'"
            )
        S = self.image_size
        out = np.full((len(rows), S, S, 3), PLACEHOLDER_VALUE, dtype=np.uint8)
        have = rows >= 0
        self.placeholders += int((~have).sum())
        if have.any():
            want = rows[have]
            order = np.argsort(want, kind="stable")  # sorted reads are kinder to the page cache
            out_idx = np.flatnonzero(have)[order]
            out[out_idx] = self.array[want[order]]
        return out

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_array"] = None  # never pickle the memory map: each worker reopens it
        return state

    def __repr__(self) -> str:
        return f"ImageStore({str(self.path)!r}, n={self._n}, size={self.image_size})"


def to_rgb_uint8(img: Image.Image, size: int) -> np.ndarray:
    """Any PIL image -> uint8 [size, size, 3] RGB: shorter side resized to `size`, centre crop.

    Transparent pixels are composited on white (product photos are cut out on white), EXIF
    rotation is applied, and 16-bit / float images are rescaled instead of clipped.
    """
    if size < 1:
        raise ValueError(f"image size must be positive, got {size}")
    if img.format == "JPEG":
        img.draft("RGB", (size, size))  # decode big JPEGs at a reduced scale: much faster
    img = ImageOps.exif_transpose(img)
    img = _as_rgb(img)
    img = ImageOps.fit(img, (size, size), method=Image.Resampling.BICUBIC, centering=(0.5, 0.5))
    return np.asarray(img, dtype=np.uint8).copy()


def _as_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = (0.0, 65535.0) if img.mode.startswith("I;16") else (arr.min(), arr.max())
        scaled = (arr - lo) / max(hi - lo, 1e-12) * 255.0
        return Image.fromarray(np.clip(scaled + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")
