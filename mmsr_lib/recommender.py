"""Item encoder + sequence model + dot-product scoring: one recommender for IDSR and MMSR alike."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmsr_lib import distributed
from mmsr_lib.data.preprocess import EvalSet
from mmsr_lib.encoders.item import ItemEncoder
from mmsr_lib.evaluate import RankingResult, evaluate_ranking, metrics_from_ranks
from mmsr_lib.sequence.base import SequenceModel


class Recommender(nn.Module):
    """Scores the next item by <user state at position t, item vector>.

    The item encoder decides what an item is (an ID row, a text, an image, both); the sequence
    model turns a sequence of item vectors into user states. Nothing else differs between IDSR
    and MMSR, which is the point of the paper's framework.
    """

    def __init__(self, item_encoder: ItemEncoder, sequence_model: SequenceModel) -> None:
        super().__init__()
        self.item_encoder = item_encoder
        self.sequence_model = sequence_model

    def embed(self, *ids: torch.Tensor) -> list[torch.Tensor]:
        """Vectors for several index tensors, encoding each distinct item once.

        A batch of 64 sequences of length 20 with negatives holds ~2.6K slots but far fewer
        distinct items; multi-modal encoders are run on those only and the result scattered back.
        """
        if getattr(self.item_encoder, "plain", False):  # reference mode: no deduplication
            return [self.item_encoder(t.reshape(-1)).view(*t.shape, -1) for t in ids]
        flat = torch.cat([t.reshape(-1) for t in ids])
        uniq, inverse = torch.unique(flat, return_inverse=True)
        vecs = self.item_encoder(uniq)[inverse]
        out, start = [], 0
        for t in ids:
            out.append(vecs[start : start + t.numel()].view(*t.shape, -1))
            start += t.numel()
        return out

    def states(self, inputs: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """User states [B, L, d] for left-padded item indices [B, L]."""
        if x is None:
            (x,) = self.embed(inputs)
        return self.sequence_model(x, inputs > 0)

    def forward(
        self, batch: dict[str, torch.Tensor], denominator: float | None = None
    ) -> torch.Tensor:
        """The training loss (`loss`): DistributedDataParallel syncs gradients only for work
        that goes through `forward`."""
        return self.loss(batch, denominator)

    def loss(
        self, batch: dict[str, torch.Tensor], denominator: float | None = None
    ) -> torch.Tensor:
        """BCE on the next item against one random negative, averaged over real positions.

        With `denominator`, the summed BCE over this batch's real positions is divided by it
        instead: a DDP rank holding a shard passes the global count / world size, so the
        average of the ranks' gradients is the gradient of the global batch's mean.
        """
        inputs, targets, negatives = batch["inputs"], batch["targets"], batch["negatives"]
        if getattr(self.item_encoder, "plain", False):
            # The paper's code path: the L+1 window and its negatives, 2(L+1) slots with padding,
            # all encoded; inputs and targets are the window shifted by one.
            window = torch.cat([inputs, targets[:, -1:]], dim=1)
            (xw,) = self.embed(window)
            x, pos = xw[:, :-1], xw[:, 1:]
            (neg,) = self.embed(torch.cat([negatives, negatives.new_zeros(len(negatives), 1)], 1))
            neg = neg[:, :-1]
        else:
            x, pos, neg = self.embed(inputs, targets, negatives)
        h = self.sequence_model(x, inputs > 0)
        valid = targets > 0
        h, pos, neg = h[valid], pos[valid], neg[valid]
        pos_logit = (h * pos).sum(-1).float()
        neg_logit = (h * neg).sum(-1).float()
        if denominator is not None:
            total = F.binary_cross_entropy_with_logits(
                pos_logit, torch.ones_like(pos_logit), reduction="sum"
            ) + F.binary_cross_entropy_with_logits(
                neg_logit, torch.zeros_like(neg_logit), reduction="sum"
            )
            return total / denominator
        return F.binary_cross_entropy_with_logits(
            pos_logit, torch.ones_like(pos_logit)
        ) + F.binary_cross_entropy_with_logits(neg_logit, torch.zeros_like(neg_logit))

    @torch.no_grad()
    def user_vectors(self, inputs: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """The state at the last position (the most recent item) of each left-padded sequence."""
        out = [self.states(chunk)[:, -1] for chunk in inputs.split(batch_size)]
        return torch.cat(out) if out else inputs.new_zeros((0, self.item_encoder.dim), dtype=torch.float)

    @torch.no_grad()
    def item_table(self, batch_size: int = 512) -> torch.Tensor:
        """The item table [n_items + 1, dim] for full ranking (`ItemEncoder.encode_all`).

        Under DDP each rank encodes a contiguous, `batch_size`-aligned block of item ids (the
        chunks one process would run) and the blocks are all-gathered: a collective, so every
        rank must call it.
        """
        if not distributed.is_distributed():
            return self.item_encoder.encode_all(batch_size)
        device = next(self.parameters()).device
        start, stop = distributed.shard_range(self.item_encoder.n_items + 1, batch_size)
        ids = torch.arange(start, stop, device=device)
        parts = [self.item_encoder(chunk) for chunk in ids.split(batch_size)]
        local = torch.cat(parts) if parts else torch.zeros(0, self.item_encoder.dim, device=device)
        return distributed.all_gather_cat(local)

    @torch.no_grad()
    def evaluate(
        self,
        eval_set: EvalSet,
        ks: tuple[int, ...] = (10, 20, 50),
        batch_size: int = 256,
        item_table: torch.Tensor | None = None,
    ) -> RankingResult:
        """Full ranking of every item for every row of `eval_set` (model put in eval mode).

        Under DDP the users are sharded in `batch_size` blocks and the ranks all-gathered, so
        every rank returns the same metrics (what early stopping needs); every rank must call it.
        """
        was_training = self.training
        self.eval()
        try:
            if item_table is None:
                item_table = self.item_table()
            if distributed.is_distributed():
                return self._evaluate_sharded(eval_set, ks, batch_size, item_table)
            device = next(self.parameters()).device
            inputs = torch.from_numpy(np.ascontiguousarray(eval_set.inputs)).to(device)
            users = self.user_vectors(inputs, batch_size)
            return evaluate_ranking(
                users.float(), item_table.float(), eval_set.targets, eval_set.history, ks, batch_size
            )
        finally:
            self.train(was_training)

    def _evaluate_sharded(
        self, eval_set: EvalSet, ks: tuple[int, ...], batch_size: int, item_table: torch.Tensor
    ) -> RankingResult:
        """This rank's block of users ranked locally, the ranks gathered, metrics from all."""
        start, stop = distributed.shard_range(len(eval_set), batch_size)
        ranks = np.zeros(0, dtype=np.int64)
        if stop > start:
            device = next(self.parameters()).device
            inputs = torch.from_numpy(np.ascontiguousarray(eval_set.inputs[start:stop])).to(device)
            users = self.user_vectors(inputs, batch_size)
            ranks = evaluate_ranking(
                users.float(), item_table.float(), eval_set.targets[start:stop],
                eval_set.history.rows(start, stop), ks, batch_size,
            ).ranks
        everyone = distributed.all_gather_cat(torch.from_numpy(ranks)).numpy()
        return RankingResult(metrics_from_ranks(everyone, ks), everyone, len(everyone))
