"""What the model tests share: a deterministic training batch, dropout off in train mode, and
the fast-vs-plain comparison of one training step (same weights, same batch)."""

from __future__ import annotations

import torch
from torch import nn

from mmsr_lib.data.loaders import TrainBatches
from mmsr_lib.data.preprocess import SequenceData


def batch_of(data: SequenceData, n_users: int = 8, index: int = 0) -> dict[str, torch.Tensor]:
    batches = TrainBatches(data, n_users, seed=0)
    batches.set_epoch(0)
    return batches[index]


def zero_dropout(model: nn.Module) -> None:
    """Dropout off everywhere while staying in train mode: nn.Dropout modules and the float
    rates that attention kernels read (HF `attention_dropout`, ours `attn_dropout`/`dropout`)."""
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
        for attr in ("attention_dropout", "attn_dropout", "dropout", "dropout_prob", "drop_prob"):
            if isinstance(getattr(m, attr, None), float):
                setattr(m, attr, 0.0)


def step_losses_and_grads(models: tuple[nn.Module, nn.Module], batch: dict[str, torch.Tensor],
                          loss_atol: float) -> tuple[dict, dict]:
    """One training step's loss and gradients for two models (fast and plain) with the same
    weights and batch, dropout off; asserts the losses agree within `loss_atol` and both
    models have the same trainable parameters; returns their gradients by name."""
    losses, grads = [], []
    for model in models:
        model.train()
        zero_dropout(model)
        loss = model.loss(batch)
        loss.backward()
        losses.append(loss.detach())
        grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    torch.testing.assert_close(losses[0], losses[1], atol=loss_atol, rtol=0.0)
    assert grads[0].keys() == grads[1].keys()
    return grads[0], grads[1]
