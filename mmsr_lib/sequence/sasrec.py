"""SASRec (Kang & McAuley, 2018): a unidirectional (causal) Transformer over the item sequence.

Block layout: pre-LN (x + attn(LN(x)), x + ffn(LN(x)), then a final LayerNorm), as in GPT-2,
rather than the original SASRec block (post-attention LN on the query only). Pre-LN trains
stably without warm-up at the paper's learning rates, and with 2 blocks the two differ little.
The paper's setting is 2 blocks with 2 heads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmsr_lib.sequence.base import SequenceModel
from mmsr_lib.util import registry

DEFAULT_LAYERS = 2


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention through `scaled_dot_product_attention` (fused on CUDA)."""

    def __init__(self, dim: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attn_dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """allowed: [B, 1, L, L] bool, True where query i may attend to key j."""
        b, n, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=-1)
        # [B, L, d] -> [B, heads, L, d / heads]
        q, k, v = (t.view(b, n, self.n_heads, d // self.n_heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, dropout_p=self.attn_dropout if self.training else 0.0
        )
        return self.resid_dropout(self.proj(y.transpose(1, 2).reshape(b, n, d)))


class Block(nn.Module):
    """Pre-LN Transformer block: attention then a position-wise feed-forward (4x, GELU)."""

    def __init__(self, dim: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, n_heads, dropout)
        self.ln2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), allowed)
        return x + self.ffn(self.ln2(x))


class SASRec(SequenceModel):
    """Causal Transformer with learned positions counted from the most recent item."""

    def __init__(
        self,
        dim: int,
        max_len: int,
        n_layers: int | None = None,
        n_heads: int = 2,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(dim, DEFAULT_LAYERS if n_layers is None else n_layers)
        if max_len <= 0:
            raise ValueError(f"SASRec: max_len must be a positive integer, got {max_len}")
        if n_heads <= 0 or dim % n_heads:
            raise ValueError(
                f"SASRec: dim={dim} must be divisible by n_heads={n_heads}; "
                "change model.dim or model.n_heads"
            )
        self.max_len = max_len
        self.n_heads = n_heads
        # Position 0 is the most recent item, 1 the one before, ...: the state that scores the
        # next item always sees the same position embedding, however short the history is.
        self.pos_emb = nn.Embedding(max_len, dim)
        nn.init.normal_(self.pos_emb.weight, std=0.02)
        self.emb_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, n_heads, dropout) for _ in range(self.n_layers))
        self.ln_f = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self._check(x, mask)
        n = x.shape[1]
        # Real items counted from the right; with left padding this is L-1-t for real positions,
        # so extra padding in front changes nothing. Padding rows get a clamped (unused) index.
        from_right = mask.flip(1).cumsum(1).flip(1) - 1
        if n > self.max_len and x.shape[0] and int(from_right[:, 0].max()) >= self.max_len:
            raise ValueError(
                f"SASRec: a sequence holds {int(from_right[:, 0].max()) + 1} real items but the "
                f"model has max_len={self.max_len} positions; truncate sequences to data.max_len"
            )
        h = self.emb_dropout(x + self.pos_emb(from_right.clamp(min=0)))

        causal = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()
        eye = torch.eye(n, dtype=torch.bool, device=x.device)
        # Keys: the past and real items only. A padding query would then have no key at all and
        # softmax would give NaN, so every query may also see itself (its row is zeroed later).
        allowed = (causal & mask.unsqueeze(1)) | eye
        allowed = allowed.unsqueeze(1)  # broadcast over heads
        for block in self.blocks:
            h = block(h, allowed)
        return self.ln_f(h) * mask.unsqueeze(-1).to(h.dtype)


@registry.register("sequence", "sasrec", aliases=("SASRec",),
                   description="SASRec: causal Transformer over the item sequence (2 blocks)")
def build_sasrec(dim: int, max_len: int, n_layers: int | None = None, n_heads: int | None = 2,
                 dropout: float = 0.1) -> SASRec:
    return SASRec(dim, max_len, n_layers=n_layers, n_heads=2 if n_heads is None else n_heads,
                  dropout=dropout)
