"""The fusion interface and the parts every fusion family shares.

A fusion takes the text and the vision encoder outputs of a batch of items (tokens, mask,
pooled; the two widths may differ) and returns one item vector [B, dim]. Each family lives in
its own module of this package (`coarse`, `attention`, `authors`), so that a run's code
fingerprint holds only the fusion it uses: changing one family on purpose re-trains its runs and
no others.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mmsr_lib.encoders.base import ModalityOutput

COARSE = ("gate", "film", "sum", "concat")
TOKEN_FUSIONS = ("co_attn", "merge_attn")


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean over real tokens only; a row without real tokens gives the zero vector."""
    w = mask.unsqueeze(-1).to(x.dtype)
    return torch.where(mask.unsqueeze(-1), x, 0.0).sum(1) / w.sum(1).clamp_min(1.0)


class VectorProjection(nn.Sequential):
    """LayerNorm then Linear: brings one modality's vector(s) to the shared width.

    The LayerNorm first puts encoders with very different activation scales (ResNet grids vs.
    transformer states) on the same footing before they are mixed.
    """

    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__(nn.LayerNorm(in_dim), nn.Linear(in_dim, dim))


class Fusion(nn.Module):
    """text + vision encoder outputs -> one item vector [B, dim].

    `granularity` says what a fusion reads: "vector" (pooled) or "token" (tokens + mask), so an
    encoder can skip work the fusion ignores. Subclasses implement `fuse`; `forward` first checks
    the inputs so a wrong encoder/fusion pairing fails with a message instead of a shape error.
    """

    granularity: str = "vector"

    def __init__(self, text_dim: int, vision_dim: int, dim: int) -> None:
        super().__init__()
        for field, value in (("text_dim", text_dim), ("vision_dim", vision_dim), ("dim", dim)):
            if value < 1:
                raise ValueError(f"fusion {field} must be a positive width, got {value}")
        self.text_dim, self.vision_dim, self.dim = text_dim, vision_dim, dim

    def forward(self, text: ModalityOutput, vision: ModalityOutput) -> Tensor:
        self._check(text, "text", self.text_dim)
        self._check(vision, "vision", self.vision_dim)
        if text.pooled.shape[0] != vision.pooled.shape[0]:
            raise ValueError(
                f"text and vision batches differ ({text.pooled.shape[0]} vs "
                f"{vision.pooled.shape[0]} items); both encoders must see the same items"
            )
        return self.fuse(text, vision)

    def fuse(self, text: ModalityOutput, vision: ModalityOutput) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def _check(self, out: ModalityOutput, name: str, width: int) -> None:
        fix = f"build the fusion with {name}_dim = the {name} encoder's out_dim"
        if self.granularity == "vector":
            if out.pooled.dim() != 2 or out.pooled.shape[-1] != width:
                raise ValueError(
                    f"{name}.pooled has shape {tuple(out.pooled.shape)}, expected [B, {width}]; {fix}"
                )
            return
        if out.tokens.dim() != 3 or out.tokens.shape[-1] != width:
            raise ValueError(
                f"{name}.tokens has shape {tuple(out.tokens.shape)}, expected [B, T, {width}]; {fix}"
            )
        if out.mask.shape != out.tokens.shape[:2]:
            raise ValueError(
                f"{name}.mask has shape {tuple(out.mask.shape)} but {name}.tokens is "
                f"{tuple(out.tokens.shape)}; the mask must be [B, T]"
            )
        if out.mask.dtype != torch.bool:
            raise ValueError(
                f"{name}.mask has dtype {out.mask.dtype}; fusions expect a bool mask with "
                "True = real token (convert an attention mask with `mask.bool()`)"
            )
