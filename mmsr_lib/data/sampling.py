"""Uniform, seeded user sampling for the paper's data set sizes (HM-200K, Amazon-100K, ...).

The paper removed users with fewer than 5 interactions and then drew 200K / 100K users at random
(Table I reports exactly 200K and 100K users *after* preprocessing, which only that order gives).
`sample_users` does the same: it draws uniformly among the users that pass the filter
(`min_interactions`, default 5; 0 draws among all users, i.e. samples before the filter), so
every sampled user survives ``build_sequences``' user filter later.

The draw is a seeded permutation of the *sorted* eligible user ids, so it depends only on the
seed and on which users are eligible, not on file order, and samples are nested: with the same
seed the 100K sample is contained in the 200K one (the transfer experiments' source sizes).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger("mmsr.data")

METHOD = ("uniform without replacement: a seeded permutation (numpy default_rng) of the sorted "
          "ids of users with at least min_interactions interactions, first n taken; nested "
          "across n for one seed")


def eligible_users(interactions: pd.DataFrame, min_interactions: int = 5) -> np.ndarray:
    """Sorted ids (str) of users with at least `min_interactions` rows in `interactions`."""
    counts = interactions["user"].value_counts(sort=False)
    if isinstance(interactions["user"].dtype, pd.CategoricalDtype):
        counts = counts[counts > 0]  # categories without rows
    keep = counts.index[counts.to_numpy() >= max(int(min_interactions), 1)]
    return np.sort(np.asarray(keep.astype(str), dtype=object))


def sample_users(interactions: pd.DataFrame, n_users: int | None, seed: int = 0, *,
                 min_interactions: int = 5) -> tuple[pd.DataFrame, dict[str, Any] | None]:
    """Keep the interactions of `n_users` users drawn uniformly (deterministic from `seed`)
    among users with at least `min_interactions` interactions; None keeps everything.

    Returns the kept rows (input order) and the record that goes to ``meta["sampling"]``
    (None without sampling). Asking for more users than are eligible keeps all eligible ones
    and says so in the record and the log.
    """
    if n_users is None:
        return interactions, None
    if int(n_users) < 1:
        raise ValueError(f"the number of users to sample must be positive, got {n_users}")
    population = int(interactions["user"].nunique())
    ids = eligible_users(interactions, min_interactions)
    rng = np.random.default_rng(int(seed))
    chosen = ids[rng.permutation(len(ids))[: int(n_users)]]
    user = interactions["user"]
    if isinstance(user.dtype, pd.CategoricalDtype):
        keep_cat = pd.Index(user.cat.categories.astype(str)).isin(chosen)  # hashed, not sorted
        codes = user.cat.codes.to_numpy()
        mask = (codes >= 0) & keep_cat[np.maximum(codes, 0)]
    else:
        mask = user.astype(str).isin(chosen).to_numpy()
    info = {
        "users_requested": int(n_users),
        "seed": int(seed),
        "min_interactions": int(min_interactions),
        "population_users": population,
        "eligible_users": len(ids),
        "sampled_users": len(chosen),
        "interactions_before": int(len(interactions)),
        "interactions_after": int(mask.sum()),
        "method": METHOD,
    }
    if len(chosen) < int(n_users):
        log.warning("asked for %d users but only %d of %d users have at least %d interactions: "
                    "keeping all of them", n_users, len(ids), population, min_interactions)
    else:
        log.info("sampled %d of %d eligible users (%d in all, seed %d)", len(chosen), len(ids),
                 population, seed)
    return interactions[mask].reset_index(drop=True), info
