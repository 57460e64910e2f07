"""Table III's fine-grained fusions (token level): co-attention and merge-attention.

``co_attn``: the two streams attend to each other, then one merging block; ``merge_attn``: the
text and image token sequences concatenated and run through n single-stream blocks. A depth may
be written in the name ("MergeAttn-2", see `fusion.api`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmsr_lib.encoders.base import ModalityOutput
from mmsr_lib.fusion.base import Fusion, VectorProjection, masked_mean
from mmsr_lib.util import registry


class Attention(nn.Module):
    """Multi-head attention of queries `x` over `context` with a key padding mask (True = real).

    Uses `scaled_dot_product_attention` so CUDA picks a fused kernel. A row whose keys are all
    padding would give NaN from the softmax; such rows attend to nothing and output zeros.
    """

    def __init__(self, dim: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def _heads(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.n_heads, d // self.n_heads).transpose(1, 2)

    def forward(self, x: Tensor, context: Tensor, key_mask: Tensor) -> Tensor:
        q = self._heads(self.q(x))
        k, v = (self._heads(t) for t in self.kv(context).chunk(2, dim=-1))
        has_keys = key_mask.any(-1)[:, None, None, None]  # [B, 1, 1, 1]
        attn_mask = key_mask[:, None, None, :] | ~has_keys  # empty rows: attend (then zeroed)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )
        y = torch.where(has_keys, y, 0.0)
        return self.out(y.transpose(1, 2).reshape(x.shape))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: attention (self, or cross when `context` is given) + FFN."""

    def __init__(self, dim: int, n_heads: int, dropout: float, cross: bool = False) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim) if cross else None
        self.attn = Attention(dim, n_heads, dropout)
        self.norm_ffn = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * dim, dim)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, key_mask: Tensor, context: Tensor | None = None) -> Tensor:
        """`key_mask` is the mask of the keys: `context`'s for cross-attention, else `x`'s."""
        h = self.norm_q(x)
        if (self.norm_kv is None) != (context is None):
            raise ValueError("pass `context` exactly when the block was built with cross=True")
        kv = h if self.norm_kv is None else self.norm_kv(context)
        x = x + self.drop(self.attn(h, kv, key_mask))
        return x + self.drop(self.ffn(self.norm_ffn(x)))


class TokenFusion(Fusion):
    """Shared parts of the attention fusions: token projections and a final LayerNorm."""

    granularity = "token"

    def __init__(self, text_dim: int, vision_dim: int, dim: int, n_heads: int) -> None:
        super().__init__(text_dim, vision_dim, dim)
        if dim % n_heads:
            raise ValueError(
                f"fusion width dim={dim} is not divisible by n_heads={n_heads}; "
                "choose a model.dim that is a multiple of the number of heads"
            )
        self.text_proj = VectorProjection(text_dim, dim)
        self.vision_proj = VectorProjection(vision_dim, dim)
        # Row 0 = text, row 1 = vision: tells attention which modality a token came from.
        self.type_embed = nn.Embedding(2, dim)
        nn.init.normal_(self.type_embed.weight, std=0.02)
        self.norm = nn.LayerNorm(dim)

    def project(self, out: ModalityOutput, proj: nn.Module) -> Tensor:
        """Project tokens to dim; padding is zeroed first so garbage (even NaN) there is inert."""
        return proj(torch.where(out.mask.unsqueeze(-1), out.tokens, 0.0))


class MergeAttentionFusion(TokenFusion):
    """Merged attention (FLAVA-style single stream): concatenate text and image tokens, each
    plus its modality-type embedding, run n transformer blocks, masked-mean pool, LayerNorm.

    The paper's released code builds the type embeddings but never adds them; here they are added.
    """

    def __init__(
        self, text_dim: int, vision_dim: int, dim: int, n_layers: int, n_heads: int,
        dropout: float,
    ) -> None:
        super().__init__(text_dim, vision_dim, dim, n_heads)
        self.blocks = nn.ModuleList(Block(dim, n_heads, dropout) for _ in range(n_layers))

    def fuse(self, text: ModalityOutput, vision: ModalityOutput) -> Tensor:
        t = self.project(text, self.text_proj) + self.type_embed.weight[0]
        v = self.project(vision, self.vision_proj) + self.type_embed.weight[1]
        x = torch.cat([t, v], dim=1)
        mask = torch.cat([text.mask, vision.mask], dim=1)
        for block in self.blocks:
            x = block(x, mask)
        # Pool over real tokens only: padding positions still hold (query) outputs, and averaging
        # them in would make an item's vector depend on how long the other texts in its batch are.
        return self.norm(masked_mean(x, mask))


class CoAttentionFusion(TokenFusion):
    """Co-attention (ViLBERT-style two streams): per layer, text queries attend over image
    tokens and image queries over text tokens (both from the previous layer's states), then ONE
    merging single-stream block over the concatenation, masked-mean pool, LayerNorm.

    Type embeddings are added before the merging block so it can still tell the streams apart.
    """

    def __init__(
        self, text_dim: int, vision_dim: int, dim: int, n_layers: int, n_heads: int,
        dropout: float,
    ) -> None:
        super().__init__(text_dim, vision_dim, dim, n_heads)
        self.text_blocks = nn.ModuleList(
            Block(dim, n_heads, dropout, cross=True) for _ in range(n_layers)
        )
        self.vision_blocks = nn.ModuleList(
            Block(dim, n_heads, dropout, cross=True) for _ in range(n_layers)
        )
        self.merge = Block(dim, n_heads, dropout)

    def fuse(self, text: ModalityOutput, vision: ModalityOutput) -> Tensor:
        t = self.project(text, self.text_proj)
        v = self.project(vision, self.vision_proj)
        for t_block, v_block in zip(self.text_blocks, self.vision_blocks, strict=True):
            t, v = (t_block(t, vision.mask, context=v), v_block(v, text.mask, context=t))
        x = torch.cat([t + self.type_embed.weight[0], v + self.type_embed.weight[1]], dim=1)
        mask = torch.cat([text.mask, vision.mask], dim=1)
        x = self.merge(x, mask)
        return self.norm(masked_mean(x, mask))  # real tokens only, as in MergeAttentionFusion


@registry.register("fusion", "co_attn", aliases=("coattn", "coatten", "coattention"),
                   description="Attention: co-attention (two streams attend to each other, "
                               "then one merging block)", group="Attention", attention=True)
def co_attention(text_dim: int, vision_dim: int, dim: int, n_layers: int = 1,
                 n_heads: int = 4, dropout: float = 0.1) -> Fusion:
    return CoAttentionFusion(text_dim, vision_dim, dim, n_layers, n_heads, dropout)


@registry.register("fusion", "merge_attn",
                   aliases=("mergeattn", "mergeatten", "merge attention", "merged attention",
                            "merge"),
                   description="Attention: merge-attention (one stream over text and image "
                               "tokens with modality-type embeddings, n blocks)",
                   group="Attention", attention=True)
def merge_attention(text_dim: int, vision_dim: int, dim: int, n_layers: int = 1,
                    n_heads: int = 4, dropout: float = 0.1) -> Fusion:
    return MergeAttentionFusion(text_dim, vision_dim, dim, n_layers, n_heads, dropout)
