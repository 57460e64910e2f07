"""What every modality encoder hands to a fusion module: tokens, their mask, and a pooled vector."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ModalityOutput:
    """Output of a text or vision encoder for a batch of items.

    tokens: [B, T, D] token (or patch / grid cell) states; mask: [B, T] bool, True = real token;
    pooled: [B, D] one vector per item (CLS or masked mean, as the encoder is configured).
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor

    @property
    def dim(self) -> int:
        return int(self.tokens.shape[-1])
