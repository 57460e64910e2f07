"""The gate and FiLM as the paper's released code computes them (github.com/MMSR23/MMSR,
``model/fushion_module.py``), next to our textbook readings in `fusion.coarse`.

The two readings differ in what a user of Table III would take for granted:

- **gate**: ours is a gated multimodal unit, ``g * t + (1 - g) * v`` with ``g`` computed from both
  vectors; the authors' is Kiela et al.'s (2018) multiplicative gate, where the text alone gates
  the image and a linear layer follows: ``fc_out(sigmoid(fc_x(t)) * fc_y(v))``;
- **FiLM**: ours lets the image modulate the text, ``(1 + gamma(v)) * t + beta(v)``; the authors'
  lets the text modulate the image, without the 1: ``fc_out(gamma(t) * v + beta(t))``.

Their code also fixes where the parts sit and how they start: each encoder's output goes through a
linear layer to the model width (their ``text_pooler`` and the image encoder's projection), one
LayerNorm (eps 1e-6) shared by both modalities follows, and every linear layer starts Xavier-normal
with zero bias. All of that is kept here, so a row of these fusions is the authors' reading as a
whole; docs/results_cpu.md ("Notebook 02") compares it with ours.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mmsr_lib.encoders.base import ModalityOutput
from mmsr_lib.fusion.base import Fusion
from mmsr_lib.util import registry


class AuthorsFusion(Fusion):
    """The shared front of the authors' vector fusions: per modality a linear layer to `dim`,
    then one LayerNorm(dim, eps=1e-6) for both; every linear layer Xavier-normal, zero bias."""

    def __init__(self, text_dim: int, vision_dim: int, dim: int) -> None:
        super().__init__(text_dim, vision_dim, dim)
        self.text_in = nn.Linear(text_dim, dim)
        self.vision_in = nn.Linear(vision_dim, dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def init_weights(self) -> None:
        """Xavier-normal weights and zero biases for every linear layer (their `_init_weights`);
        subclasses call it once their layers exist."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_normal_(module.weight)
                nn.init.zeros_(module.bias)

    def combine(self, t: Tensor, v: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def fuse(self, text: ModalityOutput, vision: ModalityOutput) -> Tensor:
        return self.combine(self.norm(self.text_in(text.pooled)),
                            self.norm(self.vision_in(vision.pooled)))


class AuthorsGateFusion(AuthorsFusion):
    """The text gates the image, then a linear layer: fc_out(sigmoid(fc_x(t)) * fc_y(v))."""

    def __init__(self, text_dim: int, vision_dim: int, dim: int) -> None:
        super().__init__(text_dim, vision_dim, dim)
        self.fc_x, self.fc_y, self.fc_out = (nn.Linear(dim, dim) for _ in range(3))
        self.init_weights()

    def combine(self, t: Tensor, v: Tensor) -> Tensor:
        return self.fc_out(torch.sigmoid(self.fc_x(t)) * self.fc_y(v))


class AuthorsFiLMFusion(AuthorsFusion):
    """The text modulates the image, then a linear layer: fc_out(gamma(t) * v + beta(t))."""

    def __init__(self, text_dim: int, vision_dim: int, dim: int) -> None:
        super().__init__(text_dim, vision_dim, dim)
        self.fc = nn.Linear(dim, 2 * dim)
        self.fc_out = nn.Linear(dim, dim)
        self.init_weights()

    def combine(self, t: Tensor, v: Tensor) -> Tensor:
        gamma, beta = self.fc(t).chunk(2, dim=-1)
        return self.fc_out(gamma * v + beta)


@registry.register("fusion", "gate_authors",
                   aliases=("gated_authors", "authors gate", "kiela gate"),
                   description="Coarse (authors' code): the text gates the image, "
                               "fc_out(sigmoid(fc_x(t)) * fc_y(v))",
                   group="Coarse", attention=False, reading="authors")
def gate_authors(text_dim: int, vision_dim: int, dim: int, n_layers: int | None = None,
                 n_heads: int | None = None, dropout: float = 0.1) -> Fusion:
    return AuthorsGateFusion(text_dim, vision_dim, dim)


@registry.register("fusion", "film_authors", aliases=("authors film",),
                   description="Coarse (authors' code): the text modulates the image, "
                               "fc_out(gamma(t) * v + beta(t))",
                   group="Coarse", attention=False, reading="authors")
def film_authors(text_dim: int, vision_dim: int, dim: int, n_layers: int | None = None,
                 n_heads: int | None = None, dropout: float = 0.1) -> Fusion:
    return AuthorsFiLMFusion(text_dim, vision_dim, dim)
