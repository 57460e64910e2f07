"""Most-popular: ranks every item by its number of training interactions, the same for every user.

The floor every sequential recommender must clear; it runs through the same full-ranking
evaluator (history masking, tie rule) as the trained models.
"""

from __future__ import annotations

import numpy as np
import torch

from mmsr_lib.data.preprocess import EvalSet, SequenceData
from mmsr_lib.evaluate import RankingResult, evaluate_ranking


class MostPopular:
    def __init__(self, data: SequenceData) -> None:
        counts = data.train_counts.astype(np.float32)
        counts[0] = 0.0
        self.item_table = torch.from_numpy(counts)[:, None]

    def evaluate(
        self, eval_set: EvalSet, ks: tuple[int, ...] = (10, 20, 50), batch_size: int = 256
    ) -> RankingResult:
        users = torch.ones(len(eval_set), 1)
        return evaluate_ranking(
            users, self.item_table, eval_set.targets, eval_set.history, ks, batch_size
        )
