"""Most-popular: ranks every item by its number of training interactions, the same for every user.

The floor every sequential recommender must clear. It is a `Recommender` like any other (with
nothing to train), so it runs through the same full-ranking evaluator (history masking, tie rule).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mmsr_lib.data.preprocess import SequenceData
from mmsr_lib.recommender import Recommender, Scorer
from mmsr_lib.util import registry


class _PopularityScorer(Scorer):
    def __init__(self, counts: torch.Tensor) -> None:
        self.counts = counts
        self.n_items = len(counts) - 1

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.counts.to(inputs.device).expand(len(inputs), -1).clone()


class MostPopular(Recommender):
    trainable = False

    def __init__(self, data: SequenceData) -> None:
        super().__init__()
        counts = data.train_counts.astype(np.float64)
        counts[0] = 0.0
        self.register_buffer("counts", torch.from_numpy(counts))
        self.n_items = data.n_items

    def scorer(self, batch_size: int = 512) -> Scorer:
        return _PopularityScorer(self.counts)


@registry.register("recommender", "mostpop", aliases=("MostPop", "popular", "most-popular"),
                   description="most-popular: every user gets the items with the most training "
                               "interactions (nothing to train)", uses=(), trainable=False)
def build_most_popular(cfg: Any, data: SequenceData) -> MostPopular:
    return MostPopular(data)
