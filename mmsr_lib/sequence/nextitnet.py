"""NextItNet (Yuan et al., 2019): stacked residual blocks of dilated causal 1-D convolutions.

Each block: causal conv (dilation d) -> LayerNorm -> ReLU -> causal conv (dilation 2d) ->
LayerNorm -> ReLU, added to the block input. Block i uses d = [1, 4][i % 2], so two blocks see
1 + 2*(1+2+4+8) = 31 past items with kernel 3. The paper uses 2 blocks.

Padding: the convolutions pad on the left only (no future leaks in). Hidden states are multiplied
by the mask after the input and after every conv layer (not only after every block: a conv's
bias makes padding rows non-zero, and the next conv would read them), so left padding looks
exactly like the convolution's own zero padding and the amount of it changes nothing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmsr_lib.sequence.base import SequenceModel
from mmsr_lib.util import registry

DEFAULT_LAYERS = 2
DILATIONS = (1, 4)


class CausalConv1d(nn.Conv1d):
    """Conv over time on [B, L, d] that only sees the current and past positions."""

    def __init__(self, dim: int, kernel_size: int, dilation: int) -> None:
        super().__init__(dim, dim, kernel_size, dilation=dilation)
        self.left_pad = (kernel_size - 1) * dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.pad(x.transpose(1, 2), (self.left_pad, 0))
        return super().forward(y).transpose(1, 2)


class ResidualBlock(nn.Module):
    """The NextItNet residual block with dilations (d, 2d)."""

    def __init__(self, dim: int, dilation: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.dilations = (dilation, 2 * dilation)
        self.conv1 = CausalConv1d(dim, kernel_size, dilation)
        self.ln1 = nn.LayerNorm(dim)
        self.conv2 = CausalConv1d(dim, kernel_size, 2 * dilation)
        self.ln2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """keep: [B, L, 1] mask in x's dtype (1 = real item)."""
        y = F.relu(self.ln1(self.conv1(x))) * keep
        y = F.relu(self.ln2(self.conv2(y))) * keep
        return x + y


class NextItNet(SequenceModel):
    """Residual dilated causal CNN; input vectors pass through the residual path unchanged."""

    def __init__(
        self, dim: int, n_layers: int | None = None, dropout: float = 0.1, kernel_size: int = 3
    ) -> None:
        super().__init__(dim, DEFAULT_LAYERS if n_layers is None else n_layers)
        self.emb_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            ResidualBlock(dim, DILATIONS[i % len(DILATIONS)], kernel_size)
            for i in range(self.n_layers)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self._check(x, mask)
        keep = mask.unsqueeze(-1).to(x.dtype)
        h = self.emb_dropout(x) * keep
        for block in self.blocks:
            h = block(h, keep)  # h stays 0 at padding: input and both branches are masked
        return h


@registry.register("sequence", "nextitnet", aliases=("NextItNet",),
                   description="NextItNet: dilated causal convolutions (2 residual blocks)")
def build_nextitnet(dim: int, max_len: int, n_layers: int | None = None,
                    n_heads: int | None = None, dropout: float = 0.1) -> NextItNet:
    return NextItNet(dim, n_layers=n_layers, dropout=dropout)  # no positions, no heads
