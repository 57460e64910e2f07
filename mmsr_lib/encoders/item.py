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


class ContentItemEncoder(ItemEncoder):
    """Base of the encoders that compute an item's vector from its content (MMSR, VLPs).

    ``fast`` (default): the distinct real ids go through `encode` in groups of similar text
    length, padding (id 0) maps to the zero vector without running any network. ``plain``: the
    reference path, every slot (padding included) through everything, then padding zeroed.
    Subclasses implement `encode` and may override `length_groups`.
    """

    item_encoding: str = "fast"
    text_buckets: int = 4  # groups of similar text length per call; 1 turns bucketing off
    min_bucket: int = 64  # never split into groups smaller than this (tiny kernels are slow)

    @property
    def plain(self) -> bool:
        return self.item_encoding == "plain"

    def encode(self, ids: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        """Vectors for real item ids (no padding handling)."""
        raise NotImplementedError

    def length_groups(self, ids: torch.Tensor) -> list[torch.Tensor]:
        """Positions of `ids` encoded together; one group unless a subclass groups by length."""
        return [torch.arange(len(ids), device=ids.device)]

    def groups_by_length(self, ids: torch.Tensor, attention_mask: torch.Tensor
                         ) -> list[torch.Tensor]:
        """Positions of `ids` in `text_buckets` groups of similar text length, shortest first.

        Trimming drops the token columns that are padding in *every* row, so one long text
        makes a whole batch pay for its length; groups of similar length each pay for their own
        longest text. Same function when padding is masked everywhere and no item's vector
        depends on the others (callers check that), fewer padded positions.
        """
        n = len(ids)
        k = min(self.text_buckets, n // self.min_bucket)
        if k < 2:
            return [torch.arange(n, device=ids.device)]
        lengths = attention_mask[ids.cpu()].sum(1)
        order = torch.argsort(lengths, stable=True).to(ids.device)
        return list(order.tensor_split(k))

    def encode_grouped(self, ids: torch.Tensor) -> torch.Tensor:
        """`encode` over `length_groups`, rows back in the order of `ids`."""
        groups = self.length_groups(ids)
        if len(groups) == 1:
            return self.encode(ids)
        vecs = torch.cat([self.encode(ids[g]) for g in groups])
        return vecs[torch.argsort(torch.cat(groups))]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.plain:  # the reference: every slot, padding included, through everything
            return self.encode(ids) * (ids > 0).unsqueeze(-1)
        out = torch.zeros(*ids.shape, self.dim, device=ids.device)
        real = ids > 0
        if real.any():
            vecs = self.encode_grouped(ids[real])
            out = out.to(vecs.dtype)
            out[real] = vecs
        return out


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
