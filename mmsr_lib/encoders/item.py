"""Item encoders: turn item indices into vectors. The ID embedding lives here; the multi-modal
encoders (text, vision, text + vision + fusion) share the same interface.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mmsr_lib.util import registry


class ItemEncoder(nn.Module):
    """Maps item indices (0 = padding) to [.., dim] vectors.

    `forward` receives DISTINCT indices: the recommender deduplicates a batch before calling it,
    so a multi-modal encoder runs each item through its networks once per step.
    """

    n_items: int
    dim: int

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def encoder_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters of pretrained encoders: the "top" learning rate, no weight decay."""
        return []

    @torch.no_grad()
    def encode_all(self, batch_size: int = 512) -> torch.Tensor:
        """The item table [n_items + 1, dim] used for full ranking; row 0 is padding."""
        device = next(self.parameters()).device
        ids = torch.arange(self.n_items + 1, device=device)
        return torch.cat([self(chunk) for chunk in ids.split(batch_size)])


class IDItemEncoder(ItemEncoder):
    """A learned embedding per item index: the IDSR baseline. Padding maps to the zero vector."""

    def __init__(self, n_items: int, dim: int) -> None:
        super().__init__()
        self.n_items, self.dim = n_items, dim
        self.embedding = nn.Embedding(n_items + 1, dim, padding_idx=0)
        nn.init.normal_(self.embedding.weight, std=dim**-0.5)
        with torch.no_grad():
            self.embedding.weight[0].zero_()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embedding(ids)

    @torch.no_grad()
    def encode_all(self, batch_size: int = 512) -> torch.Tensor:
        return self.embedding.weight.detach().clone()


@registry.register("item_encoder", "id", aliases=("IDSR", "ids"), label="IDSR", uses=(),
                   description="IDSR: one learned embedding per item ID")
def build_id_encoder(cfg: Any, data: Any) -> IDItemEncoder:
    return IDItemEncoder(data.n_items, cfg.model.dim)
