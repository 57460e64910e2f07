"""Building a fusion by name: the one constructor callers need, and the names' grammar.

`create_fusion` accepts every registered name and the paper's spellings ("summation",
"MergeAttn-2", "CoAtten-1", ...); the registry finds the fusions by importing every module of
this package (`registry._PROVIDERS`), so this module imports none of them.
"""

from __future__ import annotations

import dataclasses
import re

from mmsr_lib.fusion.base import TOKEN_FUSIONS, Fusion
from mmsr_lib.util import registry


def fusion_names() -> list[str]:
    """Every registered fusion, in Table III's order (coarse, coarse + DNN, attention), then any
    other (e.g. the authors' readings, plugins)."""
    return registry.names("fusion")


def _depth_suffix(name: str) -> registry.Entry | None:
    """"MergeAttn-2" / "coattn1": an attention fusion with its depth written in the name."""
    match = re.fullmatch(r"(.*?[a-z])(\d+)", registry.normalise(name))
    if not match:
        return None
    try:
        entry = registry.lookup("fusion", match.group(1))
    except registry.UnknownComponentError:
        return None
    if not entry.meta.get("attention"):
        raise registry.UnknownComponentError(
            f"fusion {name!r} has a depth suffix, but only {', '.join(TOKEN_FUSIONS)} have layers"
        )
    return dataclasses.replace(entry, meta={**entry.meta, "depth": int(match.group(2))})


registry.add_resolver("fusion", _depth_suffix)


def parse_fusion_name(name: str) -> tuple[str, int | None]:
    """Canonical fusion name and the depth written in it ("MergeAttn-2" -> ("merge_attn", 2)).

    The depth is None when the name carries none. Raises ValueError for unknown names.
    """
    entry = registry.lookup("fusion", name)
    return entry.name, entry.meta.get("depth")


def create_fusion(
    name: str,
    text_dim: int,
    vision_dim: int,
    dim: int,
    n_layers: int | None = 1,
    n_heads: int | None = 4,
    dropout: float = 0.1,
) -> Fusion:
    """Build fusion `name` (registered names and aliases). A depth in the name ("mergeattn-2")
    overrides `n_layers`; `n_layers`/`n_heads` only matter for the attention fusions.
    """
    entry = registry.lookup("fusion", name)
    n_layers = entry.meta.get("depth", n_layers)
    if entry.meta.get("attention"):
        if n_layers is None or n_layers < 1:
            raise ValueError(f"fusion n_layers (model.fusion_layers) must be >= 1, got {n_layers}")
        if n_heads is None or n_heads < 1:
            raise ValueError(f"fusion n_heads (model.fusion_heads) must be >= 1, got {n_heads}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"fusion dropout must be in [0, 1), got {dropout}")
    return entry.factory(text_dim, vision_dim, dim, n_layers, n_heads, dropout)
