"""GRU4Rec (Hidasi et al., 2016): a stacked GRU reads the sequence left to right.

The paper uses 4 GRU layers. Sequences arrive left-padded, but a GRU that reads padding first
would carry it in its state; so rows are rolled to put real items first, packed (the GRU stops at
each row's length), unpacked, and rolled back. Padding then cannot touch any real position.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from mmsr_lib.sequence.base import SequenceModel, left_padding_errors
from mmsr_lib.util import registry

DEFAULT_LAYERS = 4


def roll_rows(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rolls row b of x [B, L, d] left by shift[b] positions (cyclically)."""
    n = x.shape[1]
    idx = (torch.arange(n, device=x.device).unsqueeze(0) + shift.unsqueeze(1)) % n
    return x.gather(1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class GRU4Rec(SequenceModel):
    """n-layer GRU (dropout between layers) with an output projection back to `dim`."""

    def __init__(self, dim: int, n_layers: int | None = None, dropout: float = 0.1) -> None:
        super().__init__(dim, DEFAULT_LAYERS if n_layers is None else n_layers)
        self.emb_dropout = nn.Dropout(dropout)
        # Item vectors already have size `dim`, so no input projection is needed.
        self.gru = nn.GRU(
            dim,
            dim,
            num_layers=self.n_layers,
            batch_first=True,
            dropout=dropout if self.n_layers > 1 else 0.0,
        )
        # The GRU state lives in (-1, 1) per unit; a free linear map lets it reach the scale and
        # directions of the item vectors it is scored against.
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self._check(x, mask)
        bad = left_padding_errors(mask)
        if len(bad):
            raise ValueError(
                f"GRU4Rec expects left-padded sequences (padding first, most recent item last), "
                f"but rows {bad[:5].tolist()} have padding after a real item"
            )
        n = x.shape[1]
        if x.shape[0] == 0 or n == 0:
            return x
        lengths = mask.sum(1)
        pad = n - lengths
        h = roll_rows(self.emb_dropout(x), pad)  # real items first
        # Packing rejects empty rows; an all-padding row runs one step on a zero vector and its
        # output is zeroed below with the rest of the padding.
        packed = pack_padded_sequence(
            h, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
        )
        out, _ = self.gru(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=n)
        out = roll_rows(out, lengths % n)  # back to left-padded: shift by L - pad
        return self.out(out) * mask.unsqueeze(-1).to(out.dtype)


@registry.register("sequence", "gru4rec", aliases=("GRU4Rec", "GRURec"),
                   description="GRU4Rec: stacked GRU over the item sequence (4 layers)")
def build_gru4rec(dim: int, max_len: int, n_layers: int | None = None,
                  n_heads: int | None = None, dropout: float = 0.1) -> GRU4Rec:
    return GRU4Rec(dim, n_layers=n_layers, dropout=dropout)  # no positions, no heads
