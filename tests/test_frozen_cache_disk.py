"""The frozen-feature cache on disk: shared across runs, keyed, exact, and never half-written.

Small tiny-bert / tiny-resnet branches over made-up items; every test counts how often the
encoder's frozen part really runs.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mmsr_lib.encoders import create_text_encoder, create_vision_encoder
from mmsr_lib.encoders.frozen_cache import FrozenCache
from mmsr_lib.encoders.multimodal import ImageInputs, ModalityBranch, TextInputs

N_ITEMS = 30
TEXTS = [""] + [f"item {i}: a {['red', 'blue', 'green'][i % 3]} cotton dress, size {i}"
                for i in range(1, N_ITEMS + 1)]


class Counting(ModalityBranch):
    """A branch that counts how many items its frozen part encodes."""

    calls = 0

    def frozen(self, ids: torch.Tensor) -> torch.Tensor:
        self.calls += len(ids)
        return super().frozen(ids)


def text_branch(seed: int = 0, texts: list[str] = TEXTS) -> Counting:
    torch.manual_seed(seed)
    enc = create_text_encoder("tiny-bert", max_tokens=16).eval()
    return Counting(enc, TextInputs(enc, texts), "text")


def vision_branch(tmp_path: Path) -> Counting:
    torch.manual_seed(0)
    enc = create_vision_encoder("tiny-resnet", image_size=32).eval()
    images = np.random.default_rng(0).integers(0, 256, (N_ITEMS, 32, 32, 3), dtype=np.uint8)
    np.save(tmp_path / "images.npy", images)
    data = SimpleNamespace(name="made-up", image_path=tmp_path / "images.npy",
                           item_image=np.arange(-1, N_ITEMS), source_fingerprint="f" * 16)
    data.item_image[0] = 0
    return Counting(enc, ImageInputs(enc, data), "vision")


def files(folder: Path) -> list[str]:
    """The folder's files but the builders' empty lock files (`build_lock`), which stay."""
    return sorted(p.name for p in folder.iterdir() if p.suffix != ".lock")


@pytest.mark.parametrize("kind", ["text", "vision"])
def test_second_build_maps_the_file_and_equals_a_fresh_build(kind: str, tmp_path: Path) -> None:
    branch = text_branch() if kind == "text" else vision_branch(tmp_path)
    fresh = FrozenCache.build(branch, N_ITEMS, batch_size=7)  # in memory, float32
    assert branch.calls == N_ITEMS
    cache = tmp_path / "cache"
    first = FrozenCache.build(branch, N_ITEMS, batch_size=7, cache_dir=cache)
    assert branch.calls == 2 * N_ITEMS
    second = FrozenCache.build(branch, N_ITEMS, batch_size=64, cache_dir=cache)
    assert branch.calls == 2 * N_ITEMS  # loaded, not recomputed
    assert isinstance(second.table, np.memmap) and second.path == first.path
    assert files(cache) == [FrozenCache.file_name(fresh.key, "float32")]  # no temporaries
    for got in (first, second):
        table = np.asarray(got.table)
        assert table.dtype == np.float32 and np.array_equal(table, fresh.table.numpy())  # bits
    ids = torch.tensor([3, 0, 30, 3])
    assert torch.equal(second.get(ids), fresh.get(ids))
    assert FrozenCache.check_file(first.path, N_ITEMS) is None
    assert np.array_equal(np.load(first.path), fresh.table.numpy())  # a plain .npy to numpy


def test_float16_option_halves_the_file(tmp_path: Path) -> None:
    branch = text_branch()
    exact = FrozenCache.build(branch, N_ITEMS, cache_dir=tmp_path)
    half = FrozenCache.build(branch, N_ITEMS, cache_dir=tmp_path, dtype="float16")
    assert half.table.dtype == np.float16 and half.path != exact.path
    assert np.array_equal(np.asarray(half.table), exact.table.astype(np.float16))
    assert half.path.stat().st_size < 0.55 * exact.path.stat().st_size
    legacy = FrozenCache.build(branch, N_ITEMS, path=tmp_path)  # the older spelling
    assert legacy.path == half.path and branch.calls == 2 * N_ITEMS
    with pytest.raises(ValueError, match="dtype 'bfloat16'"):
        FrozenCache.build(branch, N_ITEMS, cache_dir=tmp_path, dtype="bfloat16")


def test_other_weights_or_other_texts_make_a_new_file(tmp_path: Path) -> None:
    a = FrozenCache.build(text_branch(seed=0), N_ITEMS, cache_dir=tmp_path)
    other_weights = text_branch(seed=1)
    b = FrozenCache.build(other_weights, N_ITEMS, cache_dir=tmp_path)
    other_texts = text_branch(seed=0, texts=TEXTS[:5] + ["a new text"] + TEXTS[6:])
    c = FrozenCache.build(other_texts, N_ITEMS, cache_dir=tmp_path)
    assert other_weights.calls == other_texts.calls == N_ITEMS  # both computed afresh
    assert len({a.path, b.path, c.path}) == 3 and len(files(tmp_path)) == 3
    assert not np.array_equal(np.asarray(a.table), np.asarray(b.table))
    # only row 5 (the changed text) differs
    diff = (np.asarray(a.table) != np.asarray(c.table)).reshape(N_ITEMS + 1, -1).any(1)
    assert np.flatnonzero(diff).tolist() == [5]


@pytest.mark.parametrize("damage", ["truncate", "flip", "header", "no-trailer", "empty"])
def test_damaged_file_is_detected_logged_and_rebuilt(damage: str, tmp_path: Path, caplog) -> None:
    branch = text_branch()
    good = FrozenCache.build(branch, N_ITEMS, cache_dir=tmp_path)
    expected = np.array(good.table)
    file = good.path
    del good
    raw = bytearray(file.read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    elif damage == "flip":
        raw[len(raw) // 2] ^= 0x10  # one bit in the middle of the states
    elif damage == "header":
        raw[:6] = b"garbag"
    elif damage == "no-trailer":
        raw = raw[:-40] + bytes(40)
    else:
        raw = bytearray()
    file.write_bytes(bytes(raw))
    assert FrozenCache.check_file(file, N_ITEMS) is not None
    with caplog.at_level(logging.WARNING, logger="mmsr.encoders"):
        again = FrozenCache.build(branch, N_ITEMS, cache_dir=tmp_path)
    assert branch.calls == 2 * N_ITEMS  # rebuilt
    assert any("unusable" in r.getMessage() and "rebuilding" in r.getMessage()
               for r in caplog.records)
    assert np.array_equal(np.asarray(again.table), expected)
    assert FrozenCache.check_file(file, N_ITEMS) is None and files(tmp_path) == [file.name]


def test_concurrent_builders_take_turns_and_never_see_a_partial_file(tmp_path: Path) -> None:
    """Two builders of one key at once (two runs of a grid starting together): one computes
    while the other waits on the key's lock, then maps the published file; both end with the
    complete table and the folder holds one file, no temporaries."""
    branches = [text_branch(), text_branch()]
    start = threading.Barrier(2)
    out: dict[int, FrozenCache] = {}

    def run(i: int) -> None:
        start.wait()
        out[i] = FrozenCache.build(branches[i], N_ITEMS, batch_size=5, cache_dir=tmp_path)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert np.array_equal(np.asarray(out[0].table), np.asarray(out[1].table))
    assert len(files(tmp_path)) == 1 and out[0].path == out[1].path
    assert FrozenCache.check_file(out[0].path, N_ITEMS) is None
    assert sorted(b.calls for b in branches) == [0, N_ITEMS]  # computed once, not twice
    lock = out[0].path.with_name(f".{out[0].path.stem}.lock")
    assert lock.is_file() and lock.stat().st_size == 0


def test_a_folder_without_a_lock_still_maps_a_published_file(tmp_path: Path) -> None:
    """Where the lock file cannot be created (a read-only, prepared cache; here its name is
    taken by a folder), a published table is mapped all the same."""
    branch = text_branch()
    built = FrozenCache.build(branch, N_ITEMS, cache_dir=tmp_path)
    lock = built.path.with_name(f".{built.path.stem}.lock")
    lock.unlink()
    lock.mkdir()  # open(lock, "a") now fails, as it does in a read-only folder
    again = FrozenCache.build(branch, N_ITEMS, cache_dir=tmp_path)
    assert branch.calls == N_ITEMS and again.path == built.path
    assert np.array_equal(np.asarray(again.table), np.asarray(built.table))


def test_refuses_what_cannot_be_cached(tmp_path: Path) -> None:
    torch.manual_seed(0)
    enc = create_text_encoder("tiny-bert", max_tokens=16, finetune="full")
    branch = ModalityBranch(enc, TextInputs(enc, TEXTS), "text")
    with pytest.raises(ValueError, match="finetune='full'"):
        FrozenCache.build(branch, N_ITEMS, cache_dir=tmp_path)
    assert not tmp_path.exists() or files(tmp_path) == []


def test_a_killed_builders_temporary_is_removed_and_nothing_else(tmp_path: Path) -> None:
    """SIGKILL leaves `.<stem>.<pid>.<rand>.tmp` behind; the next build removes it only when its
    process is gone and it is stale, never a live or fresh builder's file or anything else."""
    import os
    import subprocess
    import sys
    import time

    branch = text_branch()
    cache = tmp_path / "cache"
    cache.mkdir()
    name = FrozenCache.file_name(FrozenCache.key_for(branch, N_ITEMS), "float32")
    stem = Path(name).stem
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    old = time.time() - 3600
    orphan = cache / f".{stem}.{dead_pid}.deadbeef.tmp"
    fresh_dead = cache / f".{stem}.{dead_pid}.cafef00d.tmp"  # maybe another machine's builder
    live_old = cache / f".{stem}.{os.getpid()}.0badc0de.tmp"  # a live process's file
    other = cache / f".{stem}.notes.tmp"  # not a builder's name
    for f in (orphan, fresh_dead, live_old, other):
        f.write_bytes(b"x" * 100)
    for f in (orphan, live_old, other):
        os.utime(f, (old, old))
    FrozenCache.build(branch, N_ITEMS, cache_dir=cache)
    assert not orphan.exists()
    assert fresh_dead.exists() and live_old.exists() and other.exists()
    assert FrozenCache.check_file(cache / name, N_ITEMS) is None  # built and published as usual
