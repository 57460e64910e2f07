"""The ten multi-modal fusion modules of the paper's Table III behind one interface.

Every fusion takes the text and the vision encoder outputs of a batch of items (tokens, mask,
pooled; the two widths may differ) and returns one item vector [B, dim]:

- coarse (vector level): ``gate``, ``film``, ``sum``, ``concat`` combine the pooled vectors;
- coarse+ (``<name>+dnn``): the same followed by the paper's three-layer DNN, added because a
  single combining layer may be too shallow on top of large encoders; ``<name>+resdnn`` (ours)
  adds the fused vector back around the DNN, which the plain stack needs to train on frozen
  encoders;
- fine-grained (token level): ``co_attn`` (two streams attend to each other, then one merging
  block) and ``merge_attn`` (concatenate both token sequences and run n single-stream blocks).

``create_fusion`` is the only constructor callers need; it also accepts the paper's spellings
("summation", "MergeAttn-2", "CoAtten-1", ...).
"""

from __future__ import annotations

import dataclasses
import re

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmsr_lib.encoders.base import ModalityOutput
from mmsr_lib.util import registry

COARSE = ("gate", "film", "sum", "concat")
TOKEN_FUSIONS = ("co_attn", "merge_attn")


def fusion_names() -> list[str]:
    """Every registered fusion, in Table III's order (coarse, coarse + DNN, attention)."""
    return registry.names("fusion")


# --------------------------------------------------------------------------- building blocks


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


class DNN(nn.Sequential):
    """The paper's "three-layer DNN" after a coarse fusion: dim -> dim -> dim -> dim, no residual."""

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__(
            nn.Linear(dim, dim), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(dim, dim), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(dim, dim),
        )


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


# --------------------------------------------------------------------------- the interface


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


# --------------------------------------------------------------------------- coarse fusions


class CoarseFusion(Fusion):
    """Vector-level fusion: each pooled vector -> LayerNorm -> Linear to dim, then `combine`."""

    def __init__(self, text_dim: int, vision_dim: int, dim: int) -> None:
        super().__init__(text_dim, vision_dim, dim)
        self.text_proj = VectorProjection(text_dim, dim)
        self.vision_proj = VectorProjection(vision_dim, dim)

    def combine(self, t: Tensor, v: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def fuse(self, text: ModalityOutput, vision: ModalityOutput) -> Tensor:
        return self.combine(self.text_proj(text.pooled), self.vision_proj(vision.pooled))


class GateFusion(CoarseFusion):
    """Gated multimodal unit: g = sigmoid(W[t; v]) chooses per feature between text and vision."""

    def __init__(self, text_dim: int, vision_dim: int, dim: int) -> None:
        super().__init__(text_dim, vision_dim, dim)
        self.gate = nn.Linear(2 * dim, dim)

    def combine(self, t: Tensor, v: Tensor) -> Tensor:
        g = torch.sigmoid(self.gate(torch.cat([t, v], dim=-1)))
        return g * t + (1 - g) * v


class FiLMFusion(CoarseFusion):
    """FiLM: the image modulates the text, gamma(v) * t + beta(v).

    gamma is predicted as 1 + W_g v so that at initialisation the text passes through unscaled
    instead of being multiplied by a random near-zero factor.
    """

    def __init__(self, text_dim: int, vision_dim: int, dim: int) -> None:
        super().__init__(text_dim, vision_dim, dim)
        self.film = nn.Linear(dim, 2 * dim)

    def combine(self, t: Tensor, v: Tensor) -> Tensor:
        gamma, beta = self.film(v).chunk(2, dim=-1)
        return (1 + gamma) * t + beta


class SumFusion(CoarseFusion):
    """Summation of the projected vectors: no interaction beyond sharing a space."""

    def combine(self, t: Tensor, v: Tensor) -> Tensor:
        return t + v


class ConcatFusion(CoarseFusion):
    """Concatenation followed by a linear layer back to dim: linear([t; v])."""

    def __init__(self, text_dim: int, vision_dim: int, dim: int) -> None:
        super().__init__(text_dim, vision_dim, dim)
        self.mix = nn.Linear(2 * dim, dim)

    def combine(self, t: Tensor, v: Tensor) -> Tensor:
        return self.mix(torch.cat([t, v], dim=-1))


class DNNFusion(Fusion):
    """Coarse+ : a coarse fusion followed by the three-layer DNN (Table III, "Coarse+").

    ``residual`` adds the fused vector back (x + DNN(x), ``<name>+resdnn``): on frozen
    encoders the plain stack trains to half the coarse fusion's HR@10 (a LayerNorm after it
    does not help), the residual one does not; docs/results_cpu.md, "Table III"."""

    def __init__(self, base: CoarseFusion, dropout: float, residual: bool = False) -> None:
        super().__init__(base.text_dim, base.vision_dim, base.dim)
        self.base = base
        self.dnn = DNN(base.dim, dropout)
        self.residual = residual

    def fuse(self, text: ModalityOutput, vision: ModalityOutput) -> Tensor:
        fused = self.base.fuse(text, vision)
        return fused + self.dnn(fused) if self.residual else self.dnn(fused)


# --------------------------------------------------------------------------- token fusions


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


# --------------------------------------------------------------------------- registry
# One factory signature for every fusion: (text_dim, vision_dim, dim, n_layers, n_heads, dropout).
# Aliases are the spellings seen in the paper, its code and common usage.
_COARSE_ALIASES = {
    "gate": ("gating", "gate selection", "gmu"),
    "film": (),
    "sum": ("summation", "add"),
    "concat": ("concatenation", "cat"),
}
_COARSE_DOCS = {
    "gate": "gated multimodal unit: a sigmoid gate chooses per feature between text and image",
    "film": "FiLM: the image modulates the text, (1 + gamma(v)) * t + beta(v)",
    "sum": "sum of the projected pooled vectors",
    "concat": "linear layer over the concatenated projected vectors",
}


def _register_coarse(name: str, cls: type[CoarseFusion], head: str) -> None:
    """Register coarse fusion `name` bare (head ""), + the DNN ("dnn") or + the residual DNN
    ("resdnn")."""
    def plain(text_dim: int, vision_dim: int, dim: int, n_layers: int | None = None,
              n_heads: int | None = None, dropout: float = 0.1) -> Fusion:
        return cls(text_dim, vision_dim, dim)

    def with_dnn(text_dim: int, vision_dim: int, dim: int, n_layers: int | None = None,
                 n_heads: int | None = None, dropout: float = 0.1) -> Fusion:
        return DNNFusion(cls(text_dim, vision_dim, dim), dropout, residual=head == "resdnn")

    plain.__qualname__, with_dnn.__qualname__ = f"coarse_{name}", f"coarse_{name}_{head}"
    aliases = _COARSE_ALIASES[name]
    if not head:
        registry.add(registry.Entry("fusion", name, plain, aliases,
                                    "Coarse: " + _COARSE_DOCS[name],
                                    meta={"group": "Coarse", "attention": False}))
        return
    residual = head == "resdnn"
    registry.add(registry.Entry(
        "fusion", f"{name}+{head}", with_dnn,
        tuple(f"{a}{sep}{head}" for a in (name, *aliases) for sep in ("+", " ")
              if f"{a}{sep}" != f"{name}+"),
        "Coarse+: " + _COARSE_DOCS[name] + (", then the three-layer DNN with a residual "
                                            "connection (ours)" if residual
                                            else ", then the three-layer DNN"),
        meta={"group": "Coarse+", "attention": False, "residual": residual}))


# Table III's order: the coarse rows, then the same with the DNN; then ours, with a residual DNN
for _head in ("", "dnn", "resdnn"):
    for _name, _cls in (("gate", GateFusion), ("film", FiLMFusion), ("sum", SumFusion),
                        ("concat", ConcatFusion)):
        _register_coarse(_name, _cls, _head)


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


def _depth_suffix(name: str) -> registry.Entry | None:
    """"MergeAttn-2" / "coattn1": an attention fusion with its depth written in the name."""
    match = re.fullmatch(r"(.*?[a-z])(\d+)", registry.normalise(name))
    if not match:
        return None
    try:
        entry = registry.lookup("fusion", match.group(1))
    except registry.UnknownComponentError:
        return None
    if not entry.meta.get("attention"):
        raise registry.UnknownComponentError(
            f"fusion {name!r} has a depth suffix, but only {', '.join(TOKEN_FUSIONS)} have layers"
        )
    return dataclasses.replace(entry, meta={**entry.meta, "depth": int(match.group(2))})


registry.add_resolver("fusion", _depth_suffix)


def parse_fusion_name(name: str) -> tuple[str, int | None]:
    """Canonical fusion name and the depth written in it ("MergeAttn-2" -> ("merge_attn", 2)).

    The depth is None when the name carries none. Raises ValueError for unknown names.
    """
    entry = registry.lookup("fusion", name)
    return entry.name, entry.meta.get("depth")


def create_fusion(
    name: str,
    text_dim: int,
    vision_dim: int,
    dim: int,
    n_layers: int | None = 1,
    n_heads: int | None = 4,
    dropout: float = 0.1,
) -> Fusion:
    """Build fusion `name` (registered names and aliases). A depth in the name ("mergeattn-2")
    overrides `n_layers`; `n_layers`/`n_heads` only matter for the attention fusions.
    """
    entry = registry.lookup("fusion", name)
    n_layers = entry.meta.get("depth", n_layers)
    if entry.meta.get("attention"):
        if n_layers is None or n_layers < 1:
            raise ValueError(f"fusion n_layers (model.fusion_layers) must be >= 1, got {n_layers}")
        if n_heads is None or n_heads < 1:
            raise ValueError(f"fusion n_heads (model.fusion_heads) must be >= 1, got {n_heads}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"fusion dropout must be in [0, 1), got {dropout}")
    return entry.factory(text_dim, vision_dim, dim, n_layers, n_heads, dropout)
