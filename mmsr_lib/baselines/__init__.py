"""Baselines, each a registered `Recommender` (kind "recommender") in its own file."""

from mmsr_lib.baselines import most_popular  # noqa: F401  (registers "mostpop")
