"""What the content baselines of Table V (FDSA, CARCA++, MoRec++) share with MMSR's item encoders.

Each of them reads an item's text and image through the configured encoders, with MMSR's
top-k fine-tuning, its distinct-item encoding and its frozen-prefix cache: only the way the two
pooled vectors become one item vector differs (a vanilla attention for FDSA, a concatenation for
CARCA++, MoRec's per-modality heads for MoRec++). `ContentEncoder` is a `MultiModalItemEncoder`
with such a combination module in place of a registered fusion, so `runs.runner.build_model`
builds its cache exactly as for an MMSR row (it looks for ``model.item_encoder.enable_cache``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from mmsr_lib.config import RunConfig
from mmsr_lib.data.preprocess import SequenceData
from mmsr_lib.encoders.multimodal import (
    ImageInputs,
    ModalityBranch,
    MultiModalItemEncoder,
    TextInputs,
)
from mmsr_lib.encoders.text import create_text_encoder
from mmsr_lib.encoders.vision import create_vision_encoder
from mmsr_lib.fusion import Fusion
from mmsr_lib.recommender import bce_loss

# (text width, vision width, model width) -> the module that turns two pooled vectors into one
CombineFactory = Callable[[int, int, int], Fusion]


class ContentEncoder(MultiModalItemEncoder):
    """A `MultiModalItemEncoder` whose fusion is a baseline's own combination module.

    Everything else (fast vs plain item encoding, trimming and length groups, the frozen-prefix
    cache, padding -> the zero vector, the 1/sqrt(dim) output scale) is MMSR's, so a baseline
    row and an MMSR row differ only where the papers differ.
    """

    def __init__(self, n_items: int, dim: int, text: ModalityBranch, vision: ModalityBranch,
                 combine: Fusion, item_encoding: str = "fast") -> None:
        # the parent builds a registered fusion; "sum" is the cheapest, and is replaced at once
        super().__init__(n_items, dim, text, vision, fusion="sum", fusion_layers=None,
                         fusion_heads=None, dropout=0.0, item_encoding=item_encoding)
        self.fusion = combine


def require_images(data: SequenceData, who: str) -> None:
    """Fail early, naming the model, when a text + image baseline meets a text-only data set."""
    if data.image_path is None:
        raise ValueError(
            f"model.recommender={who!r} reads item texts and images, but data set "
            f"{data.name!r} has no images (no images.npy). Use a data set with images, or a "
            "text-only model (model.recommender=vqrec, or model.recommender=sequential with "
            "model.item_encoder=text)"
        )


def stored_image_size(data: SequenceData) -> int:
    """Side of the images in the data set's store (tiny vision encoders are built for it)."""
    return int(np.load(data.image_path, mmap_mode="r").shape[1])


def build_content_encoder(cfg: RunConfig, data: SequenceData, combine: CombineFactory,
                          who: str) -> ContentEncoder:
    """Text + vision branches from `cfg.model` (encoders, fine-tuning, tokens, pooling, mask
    ratio, item encoding), joined by `combine(text_dim, vision_dim, dim)`."""
    require_images(data, who)
    m = cfg.model
    text_enc = create_text_encoder(m.text_encoder, max_tokens=m.text_max_tokens,
                                   pooling=m.text_pooling, finetune=m.finetune,
                                   top_blocks=m.top_blocks)
    text = ModalityBranch(text_enc, TextInputs(text_enc, data.item_text), "text")
    vision_enc = create_vision_encoder(m.vision_encoder, image_size=stored_image_size(data),
                                       finetune=m.finetune, top_blocks=m.top_blocks,
                                       mask_ratio=m.mask_ratio)
    vision = ModalityBranch(vision_enc, ImageInputs(vision_enc, data), "vision")
    module = combine(text_enc.out_dim, vision_enc.out_dim, m.dim)
    return ContentEncoder(data.n_items, m.dim, text, vision, module,
                          item_encoding=m.item_encoding or "fast")


def embed_items(encoder: nn.Module, *ids: torch.Tensor) -> list[torch.Tensor]:
    """`encoder` vectors for several index tensors, each distinct item encoded once.

    In plain mode (the paper's code path, the reference for benchmarks and tests) every slot,
    padding included, goes through the encoders, as `SequentialRecommender.embed` does.
    """
    if getattr(encoder, "plain", False):
        return [encoder(t.reshape(-1)).view(*t.shape, -1) for t in ids]
    flat = torch.cat([t.reshape(-1) for t in ids])
    uniq, inverse = torch.unique(flat, return_inverse=True)
    vecs = encoder(uniq)[inverse]
    out, start = [], 0
    for t in ids:
        out.append(vecs[start : start + t.numel()].view(*t.shape, -1))
        start += t.numel()
    return out


class PositionBCE:
    """The loss of the baselines trained as their papers train them: BCE on every real
    position's next item against one sampled negative (the paper's Eq. 6), from the model's
    ``position_logits(batch) -> (positive, negative)`` logits [B, L]."""

    def position_logits(self, batch: dict[str, torch.Tensor]
                        ) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover - interface
        raise NotImplementedError

    def loss(self, batch: dict[str, torch.Tensor], denominator: float | None = None
             ) -> torch.Tensor:
        pos, neg = self.position_logits(batch)
        valid = batch["targets"] > 0
        return bce_loss(pos[valid], neg[valid], denominator)
