"""Table III's coarse fusions (vector level) and Coarse+ (the same followed by a DNN).

``gate``, ``film``, ``sum``, ``concat`` combine the two pooled vectors; ``<name>+dnn`` adds the
paper's three-layer DNN, added because a single combining layer may be too shallow on top of
large encoders; ``<name>+resdnn`` (ours) adds the fused vector back around the DNN, which the
plain stack needs to train on frozen encoders.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mmsr_lib.encoders.base import ModalityOutput
from mmsr_lib.fusion.base import Fusion, VectorProjection
from mmsr_lib.util import registry


class DNN(nn.Sequential):
    """The paper's "three-layer DNN" after a coarse fusion: dim -> dim -> dim -> dim, no residual."""

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__(
            nn.Linear(dim, dim), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(dim, dim), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(dim, dim),
        )


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
