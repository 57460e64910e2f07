"""Per-user item histories in CSR form: what evaluation masks and what sub-sequences share.

A data-layer structure (preprocessing builds it, the evaluator reads it), so it lives here and
not in the evaluator.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class History:
    """Items each user saw before the target, in CSR form (one row per evaluated user).

    CSR keeps millions of histories in two flat arrays, so masking is one vectorised
    ``index_put_`` instead of a Python loop over users.
    """

    indptr: np.ndarray  # int64 [U + 1], indptr[0] == 0, non-decreasing
    indices: np.ndarray  # int64 [indptr[-1]], item ids (any order, repeats allowed)

    def __post_init__(self) -> None:
        self.indptr = np.ascontiguousarray(self.indptr, dtype=np.int64)
        self.indices = np.ascontiguousarray(self.indices, dtype=np.int64)
        if self.indptr.ndim != 1 or len(self.indptr) < 1:
            raise ValueError("History.indptr must be a 1-D array of length n_users + 1")
        if self.indices.ndim != 1:
            raise ValueError("History.indices must be a 1-D array of item ids")
        if self.indptr[0] != 0 or self.indptr[-1] != len(self.indices):
            raise ValueError(
                f"History.indptr must start at 0 and end at len(indices)={len(self.indices)}; "
                f"got {self.indptr[0]}..{self.indptr[-1]}"
            )
        if np.any(np.diff(self.indptr) < 0):
            raise ValueError("History.indptr must be non-decreasing (row lengths are >= 0)")
        if len(self.indices) and self.indices.min() < 0:
            raise ValueError(f"History.indices holds a negative item id ({self.indices.min()})")

    @property
    def n_users(self) -> int:
        return len(self.indptr) - 1

    def __len__(self) -> int:
        return self.n_users

    @classmethod
    def from_lists(cls, seqs: Sequence[np.ndarray | Sequence[int]]) -> History:
        """Build from one array (or list) of item ids per user."""
        lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
        indptr = np.zeros(len(seqs) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        if indptr[-1] == 0:
            indices = np.zeros(0, dtype=np.int64)
        else:
            indices = np.concatenate([np.asarray(s, dtype=np.int64).reshape(-1) for s in seqs])
        return cls(indptr, indices)

    def row(self, i: int) -> np.ndarray:
        """The history of user ``i`` (a view)."""
        return self.indices[self.indptr[i] : self.indptr[i + 1]]

    def rows(self, start: int, stop: int) -> History:
        """Users ``start..stop-1`` (a contiguous slice; cheap, shares ``indices``)."""
        if not 0 <= start <= stop <= self.n_users:
            raise IndexError(f"rows({start}, {stop}) is outside 0..{self.n_users}")
        lo, hi = self.indptr[start], self.indptr[stop]
        return History(self.indptr[start : stop + 1] - lo, self.indices[lo:hi])

    def take(self, users: np.ndarray | Sequence[int]) -> History:
        """Users in the given order (arbitrary indices; used for subsets such as cold targets)."""
        users = np.asarray(users, dtype=np.int64).reshape(-1)
        if len(users) and (users.min() < 0 or users.max() >= self.n_users):
            raise IndexError(f"user indices must be in 0..{self.n_users - 1}")
        starts = self.indptr[users]
        counts = self.indptr[users + 1] - starts
        indptr = np.zeros(len(users) + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        # position k of the output comes from starts[row(k)] + (k - indptr[row(k)])
        offsets = np.repeat(starts - indptr[:-1], counts)
        return History(indptr, self.indices[offsets + np.arange(indptr[-1], dtype=np.int64)])
