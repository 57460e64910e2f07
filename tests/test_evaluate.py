"""Full-ranking evaluation against brute force, hand-computed values and its own invariances."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmsr_lib.evaluate import (
    TIE_RULE,
    History,
    evaluate_ranking,
    mask_scores,
    metrics_from_ranks,
    reference_eval_loop,
    target_ranks,
    topk_items,
)


def brute_force_rank(scores: np.ndarray, target: int, history: list[int]) -> int:
    """Rank by definition: other valid items whose score is >= the target's (ties against)."""
    banned = {0} | {h for h in history if h != target}
    return sum(
        1
        for j in range(len(scores))
        if j != target and j not in banned and scores[j] >= scores[target]
    )


def brute_force_metrics(ranks: list[int], ks: tuple[int, ...]) -> dict[str, float]:
    out = {}
    for k in ks:
        out[f"HR@{k}"] = 100.0 * sum(r < k for r in ranks) / len(ranks)
        out[f"NDCG@{k}"] = 100.0 * sum(1 / math.log2(r + 2) for r in ranks if r < k) / len(ranks)
    return out


def integer_problem(seed: int, n_users: int = 40, n_items: int = 30, dim: int = 3):
    """Small integer-valued vectors: exact scores and many ties."""
    rng = np.random.default_rng(seed)
    users = torch.from_numpy(rng.integers(-2, 3, size=(n_users, dim)).astype(np.float32))
    items = torch.from_numpy(rng.integers(-2, 3, size=(n_items + 1, dim)).astype(np.float32))
    items[0] = 100.0  # padding row scores high on purpose: it must never count
    targets = rng.integers(1, n_items + 1, size=n_users)
    hist = [rng.integers(0, n_items + 1, size=rng.integers(0, 8)) for _ in range(n_users)]
    for u in range(0, n_users, 4):  # the target also occurs in the history (re-consumption)
        hist[u] = np.append(hist[u], targets[u])
    return users, items, targets, hist


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force_with_ties(seed: int) -> None:
    users, items, targets, hist = integer_problem(seed)
    scores = (users @ items.T).numpy()
    expected = [brute_force_rank(scores[u], int(targets[u]), list(hist[u]))
                for u in range(len(users))]
    n_ties = sum(int((scores[u] == scores[u, targets[u]]).sum()) - 1 for u in range(len(users)))
    assert n_ties > len(users)  # the problem really is tie-heavy
    res = evaluate_ranking(users, items, targets, History.from_lists(hist), ks=(1, 5, 10))
    np.testing.assert_array_equal(res.ranks, expected)
    assert res.n_users == len(users)
    want = brute_force_metrics(expected, (1, 5, 10))
    assert res.metrics.keys() == want.keys()
    for key, value in want.items():
        assert res.metrics[key] == pytest.approx(value, abs=1e-12)


def test_hand_computed_metrics() -> None:
    assert metrics_from_ranks([0], ks=(10,)) == {"HR@10": 100.0, "NDCG@10": 100.0}
    m = metrics_from_ranks([1], ks=(1, 10))
    assert m["HR@1"] == 0.0 and m["NDCG@1"] == 0.0
    assert m["HR@10"] == 100.0
    assert m["NDCG@10"] == pytest.approx(100.0 / math.log2(3))
    m = metrics_from_ranks(np.array([0, 9, 10, 49]), ks=(10, 50))
    assert m["HR@10"] == 50.0 and m["HR@50"] == 100.0
    assert m["NDCG@10"] == pytest.approx(25.0 * (1 + 1 / math.log2(11)))


def test_tie_rule_is_pessimistic() -> None:
    # items 1..4 all score 1.0; the target (2) ties with three others -> rank 3, not 0 or 1
    scores = torch.tensor([[0.0, 1.0, 1.0, 1.0, 1.0]], dtype=torch.float64)
    mask_scores(scores, History.from_lists([[]]), torch.tensor([2]))
    assert target_ranks(scores, torch.tensor([2])).tolist() == [3]
    assert "pessimistic" in TIE_RULE


def test_history_masking_and_padding() -> None:
    items = torch.tensor([[9.0], [1.0], [2.0], [3.0], [4.0]])  # padding would be best
    user = torch.tensor([[1.0]])
    # target 1 is the worst item; items 3 and 4 are in the history -> only item 2 beats it
    res = evaluate_ranking(user, items, np.array([1]), History.from_lists([[3, 4, 0]]), ks=(1, 2))
    assert res.ranks.tolist() == [1]
    scores = (user.double() @ items.double().T)
    mask_scores(scores, History.from_lists([[3, 4]]), np.array([1]))
    assert torch.isneginf(scores[0, [0, 3, 4]]).all()
    assert scores[0, 1] == 1.0 and scores[0, 2] == 2.0


def test_target_in_history_stays_unmasked() -> None:
    items = torch.tensor([[0.0], [5.0], [1.0], [2.0]])
    res = evaluate_ranking(torch.ones(1, 1), items, [1], History.from_lists([[1, 1, 2]]), ks=(1,))
    assert res.ranks.tolist() == [0]
    assert res.metrics["HR@1"] == 100.0


def test_masked_items_never_outrank_finite_target() -> None:
    scores = torch.tensor([[5.0, 3.0, -1.0, 7.0]])
    mask_scores(scores, History.from_lists([[1, 3]]), [2])
    assert target_ranks(scores, torch.tensor([2])).tolist() == [0]


def test_k_larger_than_catalog() -> None:
    users, items, targets, hist = integer_problem(3, n_users=10, n_items=6)
    res = evaluate_ranking(users, items, targets, History.from_lists(hist), ks=(3, 50, 1000))
    assert res.metrics["HR@50"] == 100.0 and res.metrics["HR@1000"] == 100.0
    assert res.metrics["NDCG@50"] == res.metrics["NDCG@1000"]
    assert res.metrics["NDCG@50"] == pytest.approx(
        100.0 * np.mean(1 / np.log2(res.ranks + 2.0)), abs=1e-12
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batch_size_invariance(dtype: torch.dtype) -> None:
    users, items, targets, hist = integer_problem(4, n_users=23)
    history = History.from_lists(hist)
    base = evaluate_ranking(users, items, targets, history, batch_size=len(users),
                            score_dtype=dtype)
    for bs in (1, 3, 7):
        res = evaluate_ranking(users, items, targets, history, batch_size=bs, score_dtype=dtype)
        np.testing.assert_array_equal(res.ranks, base.ranks)
        assert res.metrics == base.metrics


def test_batch_size_invariance_random_floats() -> None:
    # float64 scoring: batch-shape dependent BLAS kernels can no longer move a rank
    g = torch.Generator().manual_seed(0)
    users, items = torch.randn(300, 16, generator=g), torch.randn(2001, 16, generator=g)
    rng = np.random.default_rng(0)
    targets = rng.integers(1, 2001, size=300)
    history = History.from_lists([rng.integers(1, 2001, size=10) for _ in range(300)])
    ranks = [evaluate_ranking(users, items, targets, history, batch_size=bs).ranks
             for bs in (1, 7, 300)]
    np.testing.assert_array_equal(ranks[0], ranks[2])
    np.testing.assert_array_equal(ranks[1], ranks[2])


def test_subset_equals_evaluating_the_rows_alone() -> None:
    users, items, targets, hist = integer_problem(5)
    history = History.from_lists(hist)
    subset = np.array([7, 2, 30, 2, 11])
    res = evaluate_ranking(users, items, targets, history, subset=subset, batch_size=2)
    alone = evaluate_ranking(users[subset], items, targets[subset],
                             History.from_lists([hist[i] for i in subset]))
    np.testing.assert_array_equal(res.ranks, alone.ranks)
    assert res.n_users == 5 and res.metrics == alone.metrics


def test_reference_loop_gives_identical_metrics() -> None:
    users, items, targets, hist = integer_problem(6)
    fast = evaluate_ranking(users, items, targets, History.from_lists(hist), batch_size=5)
    assert reference_eval_loop(users, items, targets, hist, (10, 20, 50)) == fast.metrics
    g = torch.Generator().manual_seed(1)
    u, it = torch.randn(50, 8, generator=g), torch.randn(401, 8, generator=g)
    t = np.random.default_rng(1).integers(1, 401, size=50)
    h = [np.random.default_rng(i).integers(1, 401, size=5) for i in range(50)]
    fast = evaluate_ranking(u, it, t, History.from_lists(h), ks=(10, 20))
    assert reference_eval_loop(u, it, t, h, (10, 20)) == fast.metrics


def test_topk_never_returns_history_or_padding() -> None:
    users, items, _, hist = integer_problem(7, n_users=15, n_items=12)
    history = History.from_lists(hist)
    top = topk_items(users, items, history, k=10, batch_size=4)
    assert top.shape == (15, 10)
    for u in range(15):
        valid = top[u][top[u] >= 0]
        assert 0 not in top[u]
        assert not set(valid.tolist()) & set(np.asarray(hist[u]).tolist())
        assert len(set(valid.tolist())) == len(valid)
        unseen = set(range(1, 13)) - set(np.asarray(hist[u]).tolist())
        assert len(valid) == min(10, len(unseen))  # -1 only where unseen items ran out
        scores = (users[u] @ items.T).numpy()
        worst_kept = scores[valid].min()
        left_out = unseen - set(valid.tolist())
        assert all(scores[j] <= worst_kept for j in left_out)


def test_history_slicing_and_take() -> None:
    h = History.from_lists([[1, 2], [], [3], [4, 5, 6]])
    part = h.rows(1, 4)
    assert part.n_users == 3 and part.row(2).tolist() == [4, 5, 6] and part.row(0).tolist() == []
    picked = h.take([3, 0, 3])
    assert [picked.row(i).tolist() for i in range(3)] == [[4, 5, 6], [1, 2], [4, 5, 6]]
    assert History.from_lists([]).n_users == 0


def test_bad_input_messages() -> None:
    users, items = torch.ones(2, 1), torch.ones(4, 1)
    hist = History.from_lists([[1], [2]])
    with pytest.raises(ValueError, match="padding item"):
        evaluate_ranking(users, items, [0, 1], hist)
    with pytest.raises(ValueError, match="outside 1..3"):
        evaluate_ranking(users, items, [1, 9], hist)
    with pytest.raises(ValueError, match="only items 1..3"):
        evaluate_ranking(users, items, [1, 2], History.from_lists([[1], [7]]))
    with pytest.raises(ValueError, match="same users"):
        evaluate_ranking(users, items, [1, 2, 3], hist)
    with pytest.raises(ValueError, match="dim"):
        evaluate_ranking(torch.ones(2, 3), items, [1, 2], hist)
    with pytest.raises(ValueError, match="NaN"):
        evaluate_ranking(torch.full((2, 1), float("nan")), items, [1, 2], hist)
    with pytest.raises(ValueError, match="indptr"):
        History(np.array([0, 5]), np.array([1, 2]))
    with pytest.raises(ValueError, match="empty"):
        metrics_from_ranks([])


def test_ranks_with_ties_and_near_ties_do_not_depend_on_the_batch() -> None:
    """The default float64 path gives the ranks of scoring everything in one float64 product,
    whatever the batch size, also for exact duplicates of the target (ties) and items a hair
    away from it (near-ties that float32 could not separate)."""
    g = torch.Generator().manual_seed(1)
    n_users, n_items, dim = 200, 3000, 32
    users, items = torch.randn(n_users, dim, generator=g), torch.randn(n_items + 1, dim, generator=g)
    rng = np.random.default_rng(1)
    targets = rng.integers(1, n_items + 1, size=n_users)
    users += torch.rand(n_users, 1, generator=g) * items[targets]  # ranks spread from 0 to tail
    for u in range(0, n_users, 4):  # a tie and a near-tie for every 4th user
        dup, near = rng.choice(np.setdiff1d(np.arange(1, n_items + 1), targets), 2, replace=False)
        items[dup] = items[targets[u]]
        items[near] = items[targets[u]] * (1 + 1e-7)
    history = History.from_lists([rng.integers(1, n_items + 1, size=15) for _ in range(n_users)])
    full = users.double() @ items.double().T
    expected = target_ranks(mask_scores(full, history, targets), torch.from_numpy(targets))
    for bs in (1, 33, n_users):
        res = evaluate_ranking(users, items, targets, history, batch_size=bs)
        np.testing.assert_array_equal(res.ranks, expected.numpy())
    assert 0 < np.mean(res.ranks < 10) < 1, "the problem must have hits and misses"
