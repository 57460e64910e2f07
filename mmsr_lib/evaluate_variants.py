"""Evaluation variants that the library's contract does *not* use, for notebook 11.

Tie rules other than the pessimistic one, and ranking against sampled negatives instead of the
whole catalog: what other libraries report, kept apart from `mmsr_lib.evaluate` (which every
run executes) so that studying them never changes the code fingerprint of a stored run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mmsr_lib.data.history import History
from mmsr_lib.evaluate import (
    DEFAULT_KS,
    _as_numpy_ids,
    _check_ks,
    _check_targets,
    masked_batches,
    target_ranks,
)

# other protocols users meet in papers and libraries, so their effect can be measured.
TIE_RULES = ("pessimistic", "optimistic", "random")


def tie_counts(scores: Tensor, targets: Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
    """Per row: how many other items score strictly above the target, and how many tie with it.

    ``scores`` must already be masked (`mask_scores`). Every tie rule is a function of these two
    counts (`tie_ranks`), and ``greater + equal`` is `target_ranks` (the library's rule).
    Raises on NaN scores like `target_ranks`.
    """
    targets = torch.as_tensor(targets, device=scores.device).long().view(-1, 1)
    pessimistic = target_ranks(scores, targets)
    t = scores.gather(1, targets)
    greater = (scores > t).sum(dim=1, dtype=torch.int32).long()
    return greater, pessimistic - greater


def _check_rule(rule: str) -> None:
    if rule not in TIE_RULES:
        raise ValueError(f"tie rule {rule!r}; choose one of {TIE_RULES}")


def tie_ranks(scores: Tensor, targets: Tensor | np.ndarray, rule: str = "pessimistic") -> Tensor:
    """0-based rank of each target (float64) under a tie rule, on masked scores.

    pessimistic: every tied item ranks above the target (the library's `TIE_RULE`); optimistic:
    none does; random: the *expected* rank when ties are broken uniformly at random,
    ``greater + equal / 2``. Metrics of the expected rank are not the expected metrics (HR and
    NDCG are not linear in the rank): use `tie_metrics` for those.
    """
    _check_rule(rule)
    greater, equal = tie_counts(scores, targets)
    g, e = greater.double(), equal.double()
    return {"pessimistic": g + e, "optimistic": g, "random": g + e / 2.0}[rule]


def _parse_metric(metric: str) -> tuple[str, int]:
    name, _, k = metric.partition("@")
    if name not in ("HR", "NDCG") or not k.isdigit() or int(k) < 1:
        raise ValueError(f"metric {metric!r}: use HR@K or NDCG@K with K >= 1")
    return name, int(k)


def tie_metric_per_user(
    greater: np.ndarray | Sequence[int], equal: np.ndarray | Sequence[int], metric: str = "NDCG@10",
    rule: str = "pessimistic",
) -> np.ndarray:
    """Per-user HR@K or NDCG@K (percent) under a tie rule, from `tie_counts`.

    ``random`` is exact: the target is equally likely at each of the ``equal + 1`` places of
    its tie group, so the value is the metric averaged over those places (what the mean over
    infinitely many random tie-breaks gives), not the metric of the expected rank.
    """
    _check_rule(rule)
    name, k = _parse_metric(metric)
    g = np.asarray(greater, dtype=np.int64).reshape(-1)
    e = np.asarray(equal, dtype=np.int64).reshape(-1)
    if g.shape != e.shape:
        raise ValueError(f"greater and equal must have one value per user, got {g.shape} and "
                         f"{e.shape}")
    if len(g) and (g.min() < 0 or e.min() < 0):
        raise ValueError("tie counts must be >= 0")
    # the target's rank is uniform on first .. first + places - 1
    first = g + e if rule == "pessimistic" else g
    places = e + 1 if rule == "random" else np.ones_like(e)
    inside = np.clip(k - first, 0, places)  # places that fall in the top K
    if name == "HR":
        return inside / places * 100.0
    cum = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(k) + 2.0))])
    start = np.minimum(first, k)
    return (cum[start + inside] - cum[start]) / places * 100.0


def tie_metrics(
    greater: np.ndarray | Sequence[int], equal: np.ndarray | Sequence[int],
    ks: Sequence[int] = DEFAULT_KS, rule: str = "pessimistic",
) -> dict[str, float]:
    """HR@K and NDCG@K in percent under a tie rule (`tie_metric_per_user` averaged over users);
    ``pessimistic`` equals `metrics_from_ranks` of ``greater + equal``."""
    ks = _check_ks(ks)
    if len(np.asarray(greater).reshape(-1)) == 0:
        raise ValueError("no tie counts to average: the evaluation set is empty")
    out: dict[str, float] = {}
    for k in ks:
        for name in ("HR", "NDCG"):
            out[f"{name}@{k}"] = float(tie_metric_per_user(greater, equal, f"{name}@{k}",
                                                           rule).mean())
    return out


def tie_count_batches(
    scores: Callable[[int, int], Tensor], targets: np.ndarray, history: History, batch_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """`tie_counts` of every row, batch by batch, with the masking of `rank_batches` (padding
    and history items except the target never count): int64 arrays ``greater`` and ``equal``."""
    greater, equal = np.empty(len(targets), dtype=np.int64), np.empty(len(targets), dtype=np.int64)
    for b0, b1, masked, bt in masked_batches(scores, targets, history, batch_size):
        g, e = tie_counts(masked, bt)
        greater[b0:b1], equal[b0:b1] = g.cpu().numpy(), e.cpu().numpy()
    return greater, equal


def sample_negatives(
    history: History,
    targets: np.ndarray | Sequence[int],
    n_items: int,
    n_negatives: int,
    rng: np.random.Generator,
    weights: np.ndarray | None = None,
    batch_size: int = 256,
) -> np.ndarray:
    """``n_negatives`` distinct items per row for sampled ranking: int64 [U, n_negatives].

    Drawn without replacement among the items the row has not interacted with (its history
    and its target excluded, padding never), uniformly or, with `weights` ([n_items + 1], e.g.
    training counts), with probability proportional to the weight (successive sampling via
    Gumbel top-k; weight 0 is never drawn). A row with fewer candidates gets them all and 0 in
    the remaining slots. Rows are sorted. The draws do not depend on `batch_size`. Costs one
    [batch, n_items + 1] array per batch, like scoring.
    """
    tgt = _as_numpy_ids(targets, "targets")
    if history.n_users != len(tgt):
        raise ValueError(f"history has {history.n_users} rows but there are {len(tgt)} targets")
    _check_targets(tgt, n_items)
    if n_negatives < 1:
        raise ValueError(f"n_negatives must be >= 1, got {n_negatives}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    log_w = None
    if weights is not None:
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
        if len(w) != n_items + 1:
            raise ValueError(f"weights must have n_items + 1 = {n_items + 1} entries (index 0 is "
                             f"padding), got {len(w)}")
        if not np.all(np.isfinite(w)) or w.min() < 0:
            raise ValueError("weights must be finite and >= 0")
        with np.errstate(divide="ignore"):
            log_w = np.log(w)
    n = len(tgt)
    take = min(n_negatives, n_items)
    out = np.zeros((n, n_negatives), dtype=np.int64)
    for b0 in range(0, n, batch_size):
        b1 = min(b0 + batch_size, n)
        keys = rng.gumbel(size=(b1 - b0, n_items + 1))
        if log_w is not None:
            keys += log_w
        keys[:, 0] = -np.inf
        h = history.rows(b0, b1)
        rows = np.repeat(np.arange(b1 - b0), np.diff(h.indptr))
        inside = h.indices <= n_items  # an id outside the catalog is no candidate anyway
        keys[rows[inside], h.indices[inside]] = -np.inf
        keys[np.arange(b1 - b0), tgt[b0:b1]] = -np.inf
        idx = np.argpartition(-keys, take - 1, axis=1)[:, :take]
        idx[np.isneginf(np.take_along_axis(keys, idx, axis=1))] = 0
        out[b0:b1, :take] = idx
        out[b0:b1] = np.sort(out[b0:b1], axis=1)
    return out


def sampled_ranks(
    scores: Callable[[int, int], Tensor],
    targets: np.ndarray | Sequence[int],
    negatives: np.ndarray,
    batch_size: int = 256,
) -> np.ndarray:
    """0-based rank of each target among its sampled negatives (`sample_negatives`), ties
    against the model as in `TIE_RULE`: the number of negatives scoring at least as high.

    ``scores(b0, b1)`` returns the [b1 - b0, N+1] scores of rows b0..b1-1 (unmasked: the
    negatives already exclude the history); 0 in `negatives` is an empty slot. The rank lies in
    0..n_negatives, so HR@K and NDCG@K (`metrics_from_ranks`) are those of the sampled protocol.
    """
    tgt = _as_numpy_ids(targets, "targets")
    neg = np.asarray(negatives, dtype=np.int64)
    if neg.ndim != 2 or len(neg) != len(tgt):
        raise ValueError(f"negatives must be [{len(tgt)}, n_negatives], got {neg.shape}")
    out = np.empty(len(tgt), dtype=np.int64)
    with torch.no_grad():
        for b0 in range(0, len(tgt), batch_size):
            b1 = min(b0 + batch_size, len(tgt))
            s = scores(b0, b1)
            if s.shape[0] != b1 - b0:
                raise ValueError(f"the scorer returned {s.shape[0]} rows for {b1 - b0} users")
            _check_targets(tgt[b0:b1], s.shape[1] - 1)
            if len(neg) and neg.max() >= s.shape[1]:
                raise ValueError(f"a negative item id {int(neg.max())} is outside the catalog "
                                 f"1..{s.shape[1] - 1}")
            t = s.gather(1, torch.from_numpy(tgt[b0:b1]).to(s.device).view(-1, 1))
            nb = torch.from_numpy(neg[b0:b1]).to(s.device)
            ns = s.gather(1, nb)
            used = nb > 0
            if bool(torch.isnan(t).any()) or bool(torch.isnan(ns[used]).any()):
                raise ValueError("scores contain NaN; the model produced NaN embeddings, check "
                                 "the training loss and learning rate")
            out[b0:b1] = ((ns >= t) & used).sum(dim=1).cpu().numpy()
    return out


@contextmanager
def _evaluating(model: Any) -> Iterator[None]:
    """Eval mode without gradients for the block; the model's mode is restored after it."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _model_scores(model: Any, eval_set: Any, scorer: Any) -> Callable[[int, int], Tensor]:
    device = next(iter(model.parameters()), torch.zeros(0)).device
    inputs = torch.from_numpy(np.ascontiguousarray(eval_set.inputs))
    return lambda b0, b1: scorer(inputs[b0:b1].to(device))


def model_tie_counts(
    model: Any, eval_set: Any, batch_size: int = 256, scorer: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """`tie_count_batches` for every row of `eval_set` scored by a `Recommender` (one process;
    the model is put in eval mode and restored)."""
    with _evaluating(model):
        scorer = scorer if scorer is not None else model.scorer()
        return tie_count_batches(_model_scores(model, eval_set, scorer),
                                 np.asarray(eval_set.targets, dtype=np.int64),
                                 eval_set.history, batch_size)


def model_sampled_ranks(
    model: Any, eval_set: Any, negatives: np.ndarray, batch_size: int = 256, scorer: Any = None
) -> np.ndarray:
    """`sampled_ranks` for every row of `eval_set` scored by a `Recommender`, against the
    negatives of `sample_negatives` (draw them once and reuse them for every model compared)."""
    with _evaluating(model):
        scorer = scorer if scorer is not None else model.scorer()
        return sampled_ranks(_model_scores(model, eval_set, scorer),
                             np.asarray(eval_set.targets, dtype=np.int64), negatives,
                             batch_size)
