"""What every recommender is to the trainer and the evaluator, and the sequential one of the paper.

`Recommender` is the interface: a training loss over a batch and a `scorer()` that ranks the
whole catalog for a batch of input sequences. The trainer and the evaluator (`mmsr_lib.evaluate`)
know nothing else, so an ID model, an MMSR model, most-popular and the baselines of Table V
(FDSA, CARCA++, VQRec, MoRec++) all run through the same loop and the same metrics.

`SequentialRecommender` is the paper's framework: an item encoder (an ID row, a text, an image,
both) feeds a sequence model, and the next item is scored by a dot product.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mmsr_lib.encoders.item import ItemEncoder
from mmsr_lib.sequence import create_sequence_model
from mmsr_lib.sequence.base import SequenceModel
from mmsr_lib.util import distributed, registry

OBJECTIVES = ("bce", "ce")


class Scorer:
    """Scores of every catalog item for a batch of left-padded input sequences.

    Made once per evaluation (`Recommender.scorer`), so work shared by all users (encoding the
    catalog) is done once. `__call__(inputs [B, L]) -> [B, n_items + 1]`; column 0 (padding) is
    ignored by the evaluator.
    """

    n_items: int

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class DotScorer(Scorer):
    """<user vector, item vector> for every item, computed in float64.

    BLAS picks different kernels for different batch shapes, so a float32 product can differ in
    its last bit between batch sizes and swap a near-tie with the target; products of float32
    numbers are exact in float64, so the ranking no longer depends on the batch size.
    """

    def __init__(self, user_vectors: Callable[[torch.Tensor], torch.Tensor],
                 item_table: torch.Tensor, dtype: torch.dtype = torch.float64) -> None:
        self.user_vectors = user_vectors
        self.item_table = item_table
        self.items_t = item_table.detach().to(dtype).T.contiguous()
        self.dtype = dtype
        self.n_items = item_table.shape[0] - 1
        self._buf: torch.Tensor | None = None

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        users = self.user_vectors(inputs).to(self.dtype)
        # one buffer reused across batches: a fresh [256, 20K] float64 matrix per batch is 40 MB
        # that the allocator returns to the OS and page-faults in again every time
        if self._buf is None or self._buf.shape[0] < len(users):
            self._buf = torch.empty(len(users), self.items_t.shape[1], dtype=self.dtype,
                                    device=self.items_t.device)
        return torch.matmul(users, self.items_t, out=self._buf[: len(users)])


class Recommender(nn.Module):
    """The interface every model implements (see the module docstring).

    `trainable = False` marks a model with nothing to learn (most-popular): the trainer skips it.
    """

    trainable: bool = True
    n_items: int

    def loss(self, batch: dict[str, torch.Tensor], denominator: float | None = None
             ) -> torch.Tensor:  # pragma: no cover - interface
        """Mean training loss of a batch (``inputs``, ``targets``, ``negatives`` [B, L], and
        ``users`` [B]); with `denominator`, the sum over real positions divided by it (DDP)."""
        raise NotImplementedError

    def forward(self, batch: dict[str, torch.Tensor], denominator: float | None = None
                ) -> torch.Tensor:
        """The training loss: DistributedDataParallel syncs gradients only for work that goes
        through `forward`."""
        return self.loss(batch, denominator)

    def scorer(self, batch_size: int = 512) -> Scorer:  # pragma: no cover - interface
        """A `Scorer` for the current weights (call in eval mode, under no_grad)."""
        raise NotImplementedError

    def encoder_parameters(self) -> list[nn.Parameter]:
        """Parameters of pretrained encoders (their own learning rate, no weight decay)."""
        return []


def bce_loss(pos_logit: torch.Tensor, neg_logit: torch.Tensor,
             denominator: float | None = None) -> torch.Tensor:
    """BCE of positives against 1 and negatives against 0, averaged over the positions (or
    summed and divided by `denominator`, the global count / world size under DDP)."""
    pos_logit, neg_logit = pos_logit.float(), neg_logit.float()
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


class SequentialRecommender(Recommender):
    """Scores the next item by <user state at position t, item vector>.

    The item encoder decides what an item is (an ID row, a text, an image, both); the sequence
    model turns a sequence of item vectors into user states. Nothing else differs between IDSR
    and MMSR, which is the point of the paper's framework.
    """

    def __init__(self, item_encoder: ItemEncoder, sequence_model: SequenceModel,
                 objective: str = "bce") -> None:
        super().__init__()
        if objective not in OBJECTIVES:
            raise ValueError(f"train.loss={objective!r}; choose one of {OBJECTIVES}")
        self.item_encoder = item_encoder
        self.sequence_model = sequence_model
        self.objective = objective
        self.n_items = item_encoder.n_items

    def encoder_parameters(self) -> list[nn.Parameter]:
        return self.item_encoder.encoder_parameters()

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

    def loss(
        self, batch: dict[str, torch.Tensor], denominator: float | None = None
    ) -> torch.Tensor:
        """The next-item loss averaged over real positions: BCE against one random negative
        (``objective="bce"``, the paper's) or softmax cross-entropy over the whole catalog
        (``"ce"``, the common strong ID baseline)."""
        if self.objective == "ce":
            return self._softmax_loss(batch, denominator)
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
        return bce_loss((h * pos).sum(-1), (h * neg).sum(-1), denominator)

    def _softmax_loss(self, batch: dict[str, torch.Tensor], denominator: float | None
                      ) -> torch.Tensor:
        """Cross-entropy of the next item over every catalog item (padding excluded).

        The whole catalog is encoded at every step: free for ID models (the embedding table),
        about the cost of a BCE step for content models on the cpu profile (a batch already
        touches most of its ~1,200 items), and too dear for catalogs of 100K items, where BCE
        (or a sampled softmax) is the practical choice.
        """
        inputs, targets = batch["inputs"], batch["targets"]
        ids = torch.arange(self.n_items + 1, device=inputs.device)
        table = self.item_encoder(ids)
        x = table[inputs]
        h = self.sequence_model(x, inputs > 0)
        valid = targets > 0
        logits = (h[valid] @ table.T).float()
        logits[:, 0] = float("-inf")
        reduction = "sum" if denominator is not None else "mean"
        loss = F.cross_entropy(logits, targets[valid], reduction=reduction)
        return loss / denominator if denominator is not None else loss

    @torch.no_grad()
    def user_vectors(self, inputs: torch.Tensor, batch_size: int = 512,
                     table: torch.Tensor | None = None) -> torch.Tensor:
        """The state at the last position (the most recent item) of each left-padded sequence.

        With the catalog's `table` (the scorer has it) the inputs' vectors are looked up instead
        of being encoded again: an item's vector does not depend on its batch.
        """
        out = [self.states(chunk, None if table is None else table[chunk])[:, -1]
               for chunk in inputs.split(batch_size)]
        return torch.cat(out) if out else inputs.new_zeros((0, self.item_encoder.dim),
                                                           dtype=torch.float)

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
    def scorer(self, batch_size: int = 512) -> DotScorer:
        table = self.item_table(batch_size)
        return DotScorer(lambda inputs: self.user_vectors(inputs, batch_size, table).float(),
                         table.float())


@registry.register("recommender", "sequential", aliases=("default", "item+sequence"),
                   description="the paper's framework: an item encoder (ID, text, image, both) "
                               "feeding a sequence model, next item by dot product",
                   uses=("item_encoder", "sequence"), objectives=OBJECTIVES)
def build_sequential(cfg: Any, data: Any) -> SequentialRecommender:
    """`cfg.model.item_encoder` and `cfg.model.sequence` from the registry (cfg resolved)."""
    m = cfg.model
    item_encoder = registry.create("item_encoder", m.item_encoder, cfg, data)
    seq = create_sequence_model(m.sequence, m.dim, data.max_len, n_layers=m.n_layers,
                                n_heads=m.n_heads, dropout=m.dropout)
    return SequentialRecommender(item_encoder, seq, objective=cfg.train.loss)
