"""The one interface every sequence model (SASRec, GRU4Rec, NextItNet, ...) implements.

The recommender only knows this contract: item vectors of a LEFT-padded sequence in, one user
state per position out. Keeping it this narrow is what lets the paper swap SR architectures under
the same item encoders (Table IV) without touching anything else.
"""

from __future__ import annotations

import torch
from torch import nn


class SequenceModel(nn.Module):
    """Maps item vectors [B, L, d] of a left-padded sequence to user states [B, L, d].

    Position t of the output is the user state after items 0..t (causal: nothing after t is
    seen); it scores the item at t + 1 by dot product. Padding positions return exactly 0 so that
    no caller can accidentally score from them.
    """

    dim: int
    n_layers: int

    def __init__(self, dim: int, n_layers: int) -> None:
        super().__init__()
        if dim <= 0:
            raise ValueError(f"dim must be a positive integer, got {dim}")
        if n_layers <= 0:
            raise ValueError(f"n_layers must be a positive integer (or None), got {n_layers}")
        self.dim = dim
        self.n_layers = n_layers

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: [B, L, d] item vectors (padding rows may hold anything), mask: [B, L] bool,
        True = real item. Returns [B, L, d] user states, 0 at padding positions."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward(x, mask)")

    def _check(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Validates shapes and returns `x` with padding rows set to 0.

        `torch.where` rather than a multiply: padding rows may hold NaN/inf (e.g. an unused
        encoder slot), and NaN * 0 would still be NaN and leak through attention or convs.
        """
        name = type(self).__name__
        if x.dim() != 3:
            raise ValueError(f"{name}: x must be [batch, length, dim], got shape {tuple(x.shape)}")
        if x.shape[-1] != self.dim:
            raise ValueError(
                f"{name}: item vectors have size {x.shape[-1]} but the model was built with "
                f"dim={self.dim}; make model.dim match the item encoder's output size"
            )
        if mask.shape != x.shape[:2]:
            raise ValueError(
                f"{name}: mask must be [batch, length] = {tuple(x.shape[:2])}, "
                f"got {tuple(mask.shape)}"
            )
        if mask.dtype != torch.bool:
            raise ValueError(
                f"{name}: mask must be a bool tensor (True = real item), got {mask.dtype}; "
                "pass e.g. `item_ids > 0`"
            )
        return torch.where(mask.unsqueeze(-1), x, x.new_zeros(()))


def left_padding_errors(mask: torch.Tensor) -> torch.Tensor:
    """Indices of rows whose mask is not `[False..., True...]` (a real item before padding).

    Models that rely on left padding (GRU4Rec's packing) call this; it syncs with the device,
    so models that do not need the guarantee do not.
    """
    lengths = mask.sum(1, keepdim=True)
    steps = torch.arange(mask.shape[1], device=mask.device).unsqueeze(0)
    expected = steps >= mask.shape[1] - lengths
    return (expected != mask).any(1).nonzero().flatten()
