"""Frozen-prefix cache: the output of an encoder's frozen lower blocks, computed once per item.

With top-k fine-tuning (the paper's default) the lower blocks of every encoder never change and
run in eval mode, so their output for an item is a constant. Computing it once and training only
the top blocks on it is exact, and removes most of the cost of a step.

The cache is refused when that premise fails: full fine-tuning (the lower blocks train) or random
masking (MAE with mask_ratio > 0 draws a new mask each step). It is keyed by the encoder's
`cache_key()` (model, weights, tokenisation, image preprocessing, fine-tuning split) and by the
item inputs, and rebuilt whenever the key changes.

Storage: in memory as float32 by default, which is exact: fast and plain modes give equal
losses for transformer encoders. A CNN whose trainable top blocks hold BatchNorm (ResNet,
EfficientNet) normalises with batch statistics in training, and plain mode feeds duplicates and
padding images through it, so there the two modes differ by design (equal in eval mode). With `path`, a float16 memory-mapped .npy file on disk (half the size, for paper-scale
catalogs: 85K items x 50 tokens x 768 is 6.5 GB in float16); float16 rounds the cached states
to ~3 significant digits, so results then match plain mode only approximately.

Under torchrun the build is shared: in each round every rank runs one chunk of items and the
chunks are all-gathered, so every rank holds the whole table after 1/world of the work; with
`path`, rank 0 alone writes the file and the others map it once it is complete.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from mmsr_lib import distributed

log = logging.getLogger("mmsr.encoders")


class FrozenCache:
    def __init__(self, table: torch.Tensor | np.ndarray, key: str) -> None:
        self.table = table
        self.key = key

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
        path: str | Path | None = None,
        progress: bool = False,
    ) -> FrozenCache:
        """Run the frozen part over items 1..n_items (row 0, padding, stays zero).

        The chunks are those of a single process (`batch_size` items from id 1), so a shared
        build under DDP stores bit-identical rows.
        """
        encoder = branch.encoder
        reason = cls.invalid_reason(encoder)
        if reason:
            raise ValueError(f"cannot cache the frozen part of {encoder.name}: {reason}")
        device = next(encoder.parameters()).device
        key = cls.key_for(branch, n_items)
        ids = torch.arange(1, n_items + 1, device=device)
        table = None
        if path is not None:
            path = Path(path) / f"{key}.npy"
            if distributed.broadcast_object(path.exists()):  # rank 0's view: one branch for all
                log.info("frozen cache hit %s", path)
                return cls(np.load(path, mmap_mode="r"), key)
        # a file is written by rank 0 only; an in-memory table is assembled on every rank
        writer = path is None or distributed.is_main_process()
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
                        if path is None:
                            table = torch.zeros(shape, dtype=torch.float32)
                        else:
                            path.parent.mkdir(parents=True, exist_ok=True)
                            tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")
                            table = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16,
                                                              shape=shape)
                            table[0] = 0
                    start = int(chunk[0])
                    if isinstance(table, torch.Tensor):
                        table[start : start + len(chunk)] = h.cpu()
                    else:
                        table[start : start + len(chunk)] = h.cpu().numpy().astype(np.float16)
        if path is not None:
            if writer:
                table.flush()
                del table
                os.replace(tmp, path)
            distributed.barrier()  # the others map the file only once it is complete
            return cls(np.load(path, mmap_mode="r"), key)
        return cls(table, key)

    @staticmethod
    def key_for(branch: torch.nn.Module, n_items: int) -> str:
        """Encoder identity + a digest of the exact item inputs the cache was computed from."""
        h = hashlib.sha256(branch.encoder.cache_key().encode())
        h.update(str(n_items).encode())
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
