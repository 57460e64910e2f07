"""Frozen-prefix cache: the output of an encoder's frozen lower blocks, computed once per item.

With top-k fine-tuning (the paper's default) the lower blocks of every encoder never change and
run in eval mode, so their output for an item is a constant. Computing it once and training only
the top blocks on it is exact, and removes most of the cost of a step.

The cache is refused when that premise fails: full fine-tuning (the lower blocks train) or random
masking (MAE with mask_ratio > 0 draws a new mask each step). It is keyed by the encoder's
`cache_key()` (model, digest of the frozen weights, tokenisation / image preprocessing,
fine-tuning split) and by a digest of the item inputs (the tokenised texts, or the image store's
fingerprint and the item -> image row mapping), and rebuilt whenever the key changes.

Storage. In memory (no `cache_dir`): float32, exact, so fast and plain modes give equal losses
for transformer encoders. A CNN whose trainable top blocks hold BatchNorm (ResNet, EfficientNet)
normalises with batch statistics in training, and plain mode feeds duplicates and padding
images through it, so there the two modes differ by design (equal in eval mode).

On disk (`cache_dir`): one file per key, ``<key>-<dtype>.npy``, shared by every run and process
that builds the same encoder over the same items; a second build memory-maps it instead of
recomputing. float32 by default, bit-identical to an in-memory build; float16 halves the size
but rounds the states to ~3 significant digits (results then match plain mode only
approximately). Size: (n_items + 1) x the frozen output per item x 4 bytes (float32). For text
that is max_tokens x width: the 1,200-item cpu catalog with 50 tokens is 92 MB for MiniLM (384)
and 184 MB for MPNet-base (768); a paper-size catalog (85K items, 768 wide) is 13 GB (6.5 GB in
float16). For EfficientNet-Lite0 split below its top 3 blocks it is 192 x 7 x 7 per item (45 MB
for 1,200 items).

The file is a plain ``.npy`` (``np.load`` reads it) followed by a 40-byte trailer: a magic and a
BLAKE2b digest of everything before it. Opening checks the size, the trailer, the digest, the
dtype and the row count, so a truncated or corrupt file is detected, logged as a warning and
rebuilt. A builder writes a hidden temporary file in the same folder and publishes it with a
hard link (`os.link`, atomic, fails if the name exists: the first finished writer wins and later
ones drop their copy; `os.replace` where links are not supported), so no reader ever sees a
half-written file. Builders of one key take turns: the first holds the key's lock file
(``.<key>-<dtype>.lock``, flock, kept empty in the folder) while it computes, and a second one
(a grid starts several runs on one catalog at once) waits, then maps the published file instead
of computing the same table again. The lock only saves work; publishing is safe without it
(a folder whose file system ignores flock gets two builders that agree bit for bit).

Under torchrun the build is shared: in each round every rank runs one chunk of items and the
chunks are all-gathered, so every rank holds the whole table after 1/world of the work; on disk,
rank 0 alone checks and writes the file and the others map it once it is complete.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import time
import uuid
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from tqdm.auto import tqdm

from mmsr_lib.util import distributed

log = logging.getLogger("mmsr.encoders")


DTYPES = {"float32": np.float32, "float16": np.float16}
_MAGIC = b"MMSRFC01"  # trailer: magic + BLAKE2b-256 of the .npy bytes before it
_TRAILER = len(_MAGIC) + 32


class FrozenCache:
    """A table [n_items + 1, ...] of frozen-part outputs (row 0, padding, is zero), in memory or
    memory-mapped from `path`."""

    def __init__(self, table: torch.Tensor | np.ndarray, key: str, path: Path | None = None) -> None:
        self.table = table
        self.key = key
        self.path = path

    @staticmethod
    def invalid_reason(encoder: torch.nn.Module) -> str | None:
        """Why the frozen part of `encoder` cannot be cached, or None when it can."""
        if getattr(encoder, "finetune", "top") == "full":
            return "finetune='full' trains every block, so nothing is frozen"
        if not getattr(encoder, "frozen_is_deterministic", False):
            return (
                "its frozen part is not deterministic (e.g. MAE random masking with "
                "mask_ratio > 0 draws a new mask every step); set model.mask_ratio=0 to cache"
            )
        return None

    @classmethod
    def build(
        cls,
        branch: torch.nn.Module,
        n_items: int,
        batch_size: int = 256,
        cache_dir: str | Path | None = None,
        dtype: str = "float32",
        progress: bool = False,
        path: str | Path | None = None,
    ) -> FrozenCache:
        """Run the frozen part over items 1..n_items (row 0, padding, stays zero).

        cache_dir: a folder shared across runs; a valid file for this key there is mapped
        instead of recomputed, a missing / truncated / corrupt one is (re)built. dtype:
        "float32" (exact) or "float16" (half the size), on disk only; in memory it is float32.
        path: the earlier spelling of ``cache_dir=path, dtype="float16"``.

        The chunks are those of a single process (`batch_size` items from id 1), so a shared
        build under DDP stores bit-identical rows.
        """
        if path is not None:
            if cache_dir is not None:
                raise ValueError("pass cache_dir (or the older path), not both")
            cache_dir, dtype = path, "float16"
        if dtype not in DTYPES:
            raise ValueError(f"frozen cache dtype {dtype!r}; choose one of {sorted(DTYPES)}")
        encoder = branch.encoder
        reason = cls.invalid_reason(encoder)
        if reason:
            raise ValueError(f"cannot cache the frozen part of {encoder.name}: {reason}")
        key = cls.key_for(branch, n_items)
        if cache_dir is None:
            return cls(cls._compute(branch, n_items, batch_size, progress, True), key)
        file = Path(cache_dir) / cls.file_name(key, dtype)
        with build_lock(file) if distributed.is_main_process() else contextlib.nullcontext():
            return cls._map_or_build(branch, n_items, batch_size, progress, key, file, dtype)

    @classmethod
    def _map_or_build(cls, branch: torch.nn.Module, n_items: int, batch_size: int,
                      progress: bool, key: str, file: Path, dtype: str) -> FrozenCache:
        problem = None
        if distributed.is_main_process():
            problem = cls.check_file(file, n_items, dtype) if file.exists() else "absent"
        problem = distributed.broadcast_object(problem)  # rank 0's view: one branch for all
        if problem is None:
            log.info("frozen cache hit %s", file)
            return cls(np.load(file, mmap_mode="r"), key, file)
        if problem != "absent":
            log.warning("frozen cache %s is unusable (%s); rebuilding it", file, problem)
        writer = distributed.is_main_process()
        if writer:
            remove_orphans(file)
        tmp = file.with_name(f".{file.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            if writer:
                file.parent.mkdir(parents=True, exist_ok=True)
            table = cls._compute(branch, n_items, batch_size, progress, writer,
                                 sink=(tmp, DTYPES[dtype]))
            if writer:
                del table
                _seal(tmp)
                _publish(tmp, file, n_items, dtype, problem)
        finally:
            if writer:
                tmp.unlink(missing_ok=True)
        distributed.barrier()  # the others map the file only once it is complete
        return cls(np.load(file, mmap_mode="r"), key, file)

    @classmethod
    def _compute(cls, branch: torch.nn.Module, n_items: int, batch_size: int, progress: bool,
                 assemble: bool, sink: tuple[Path, type] | None = None,
                 ) -> torch.Tensor | np.ndarray | None:
        """The table, in memory (float32 tensor) or written into the .npy memmap `sink`.

        Every rank computes its chunks; only those that `assemble` keep the rows (all of them
        for an in-memory table, rank 0 alone for a file).
        """
        device = next(branch.encoder.parameters()).device
        ids = torch.arange(1, n_items + 1, device=device)
        writer = assemble
        table = None
        chunks = ids.split(batch_size)
        world, me = distributed.world_size(), distributed.rank()
        rounds = range(0, len(chunks), world)
        with torch.no_grad():
            for first in tqdm(rounds, disable=not progress or not distributed.is_main_process(),
                              desc="frozen cache"):
                group = chunks[first : first + world]  # one chunk per rank this round
                mine = branch.frozen(group[me]).float() if me < len(group) else ids.new_empty(0)
                for chunk, h in zip(group, distributed.all_gather_uneven(mine), strict=False):
                    if not writer:
                        continue
                    if table is None:
                        shape = (n_items + 1, *h.shape[1:])
                        if sink is None:
                            table = torch.zeros(shape, dtype=torch.float32)
                        else:
                            table = np.lib.format.open_memmap(sink[0], mode="w+", dtype=sink[1],
                                                              shape=shape)
                            table[0] = 0
                    start = int(chunk[0])
                    if isinstance(table, torch.Tensor):
                        table[start : start + len(chunk)] = h.cpu()
                    else:
                        table[start : start + len(chunk)] = h.cpu().numpy().astype(table.dtype)
        if isinstance(table, np.memmap):
            table.flush()
        return table

    @staticmethod
    def file_name(key: str, dtype: str = "float32") -> str:
        return f"{key}-{dtype}.npy"

    @staticmethod
    def check_file(file: str | Path, n_items: int, dtype: str = "float32") -> str | None:
        """None when `file` is a complete, intact cache of `n_items` items in `dtype`, else why
        not (truncated, no trailer, digest mismatch, wrong dtype or row count, unreadable)."""
        file = Path(file)
        try:
            size = file.stat().st_size
            with open(file, "rb") as f:
                version = np.lib.format.read_magic(f)
                read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                               (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                if read_header is None:
                    return f".npy format version {version} is not one this cache writes"
                shape, fortran, stored = read_header(f)
                offset = f.tell()
        except (OSError, ValueError, SyntaxError) as e:
            return f"unreadable header: {e}"
        if stored != np.dtype(DTYPES[dtype]) or fortran:
            return f"holds {stored} (fortran={fortran}), expected {dtype}"
        if not shape or shape[0] != n_items + 1:
            return f"has shape {shape}, expected {n_items + 1} rows"
        expected = offset + int(np.prod(shape, dtype=np.int64)) * stored.itemsize + _TRAILER
        if size != expected:
            return f"{size} bytes where {expected} were expected (truncated or extended)"
        with open(file, "rb") as f:
            digest = _digest(f, size - _TRAILER)
            trailer = f.read()
        if trailer[: len(_MAGIC)] != _MAGIC:
            return "no integrity trailer (written by an older version or damaged)"
        if trailer[len(_MAGIC) :] != digest:
            return "content does not match its checksum (corrupt)"
        return None

    @staticmethod
    def key_for(branch: torch.nn.Module, n_items: int) -> str:
        """Encoder identity + a digest of the exact item inputs the cache was computed from.

        The device type is part of it: CPU and CUDA kernels round differently, and a mapped
        table must equal what this process would compute, bit for bit."""
        h = hashlib.sha256(branch.encoder.cache_key().encode())
        h.update(str(n_items).encode())
        h.update(next(branch.encoder.parameters()).device.type.encode())
        inputs = branch.inputs
        if hasattr(inputs, "input_ids"):
            h.update(inputs.input_ids.numpy().tobytes())
            h.update(inputs.attention_mask.numpy().tobytes())
        else:
            h.update(np.ascontiguousarray(inputs.rows_of_item).tobytes())
            h.update(inputs.fingerprint.encode())  # the image store's content, not its path
        return h.hexdigest()[:20]

    def get(self, ids: torch.Tensor) -> torch.Tensor:
        idx = ids.cpu()
        if isinstance(self.table, torch.Tensor):
            return self.table[idx]
        return torch.from_numpy(np.asarray(self.table[idx.numpy()], dtype=np.float32))

    def __len__(self) -> int:
        return len(self.table)


@contextlib.contextmanager
def build_lock(file: Path):
    """Hold the lock of the cache `file` (``.<stem>.lock`` beside it, created empty and left
    there): one process at a time checks and builds one key, so a second builder waits and
    then finds the file published. A folder where the lock cannot be created (read-only, a
    prepared cache) is used without it: nobody can build there, so there is nothing to wait
    for."""
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        fh = open(file.with_name(f".{file.stem}.lock"), "a")
    except OSError as err:
        log.debug("no build lock for %s (%s)", file, err)
        yield
        return
    with fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


ORPHAN_AGE_S = 600.0  # a live builder writes a chunk far more often than this


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's process (or not a pid we can test): leave its file alone
    return True


def remove_orphans(file: Path, max_age_s: float = ORPHAN_AGE_S) -> list[Path]:
    """Delete the temporaries of `file` that a killed builder left behind; returns them.

    A builder killed mid-write (SIGKILL, power loss) cannot run its cleanup, and at paper size its
    temporary is gigabytes. Ours are named ``.<stem>.<pid>.<random>.tmp``; one is an orphan when
    its process no longer exists on this machine *and* nobody has written to it for
    `max_age_s` (a builder on another machine sharing the folder has its own pids, but keeps
    its file fresh). Anything else in the folder is never touched.
    """
    removed = []
    now = time.time()
    for tmp in file.parent.glob(f".{file.stem}.*.tmp"):
        parts = tmp.name[len(file.stem) + 2 : -len(".tmp")].split(".")
        if len(parts) != 2 or not parts[0].isdigit():
            continue
        pid = int(parts[0])
        try:
            st = tmp.stat()
        except FileNotFoundError:  # its builder finished meanwhile
            continue
        age = now - st.st_mtime
        if pid == os.getpid() or _pid_alive(pid) or age < max_age_s:
            continue
        tmp.unlink(missing_ok=True)
        log.warning("removed %s (%d MB): the temporary of a frozen-cache build whose process %d "
                    "no longer runs and which nobody wrote for %.0f min", tmp, st.st_size >> 20,
                    pid, age / 60)
        removed.append(tmp)
    return removed


def _digest(f: BinaryIO, n: int) -> bytes:
    """BLAKE2b-256 of the next `n` bytes of `f`, read in 8 MiB blocks."""
    h = hashlib.blake2b(digest_size=32)
    while n > 0:
        block = f.read(min(n, 1 << 23))
        if not block:
            break
        h.update(block)
        n -= len(block)
    return h.digest()


def _seal(tmp: Path) -> None:
    """Append the integrity trailer to a finished .npy and flush it to the disk."""
    with open(tmp, "r+b") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(0)
        digest = _digest(f, size)
        f.seek(size)
        f.write(_MAGIC + digest)
        f.flush()
        os.fsync(f.fileno())


def _publish(tmp: Path, file: Path, n_items: int, dtype: str, problem: str) -> None:
    """Give `tmp` the name `file` atomically; the first complete file there wins."""
    if problem != "absent":  # the damaged file we found; a concurrent builder may replace it too
        file.unlink(missing_ok=True)
    try:
        os.link(tmp, file)  # fails if another builder published first
    except FileExistsError:
        if FrozenCache.check_file(file, n_items, dtype) is not None:
            os.replace(tmp, file)  # theirs is damaged after all: ours replaces it
    except OSError:  # no hard links on this file system
        os.replace(tmp, file)
