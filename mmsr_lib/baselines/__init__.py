"""Baselines, each a registered `Recommender` (kind "recommender") in its own file."""

# import order is the registry's listing order: the floor, then Table V's order
# isort: off
from mmsr_lib.baselines import most_popular  # noqa: F401  (registers "mostpop")
from mmsr_lib.baselines import fdsa  # noqa: F401  (registers "fdsa")
from mmsr_lib.baselines import carca  # noqa: F401  (registers "carca++")
from mmsr_lib.baselines import vqrec  # noqa: F401  (registers "vqrec")
from mmsr_lib.baselines import morec  # noqa: F401  (registers "morec++")
# isort: on
