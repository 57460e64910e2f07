"""The multi-modal fusion modules of the paper's Table III behind one interface.

Every fusion takes the text and the vision encoder outputs of a batch of items (tokens, mask,
pooled; the two widths may differ) and returns one item vector [B, dim]:

- coarse (vector level, `fusion.coarse`): ``gate``, ``film``, ``sum``, ``concat`` combine the
  pooled vectors; coarse+ (``<name>+dnn``) adds the paper's three-layer DNN, ``<name>+resdnn``
  (ours) a residual one;
- fine-grained (token level, `fusion.attention`): ``co_attn`` (two streams attend to each
  other, then one merging block) and ``merge_attn`` (both token sequences concatenated, n
  single-stream blocks);
- the authors' code's readings of the gate and FiLM (`fusion.authors`), which differ from the
  textbook ones above.

``create_fusion`` is the only constructor callers need. This package imports only the interface
(`base`) and the constructor (`api`); the registry imports every fusion module of the package
itself, so a run's code fingerprint holds only the family its fusion comes from and a new fusion
module leaves every stored run current.
"""

from __future__ import annotations

from mmsr_lib.fusion.api import create_fusion, fusion_names, parse_fusion_name
from mmsr_lib.fusion.base import COARSE, TOKEN_FUSIONS, Fusion, VectorProjection, masked_mean

__all__ = ["COARSE", "TOKEN_FUSIONS", "Fusion", "VectorProjection", "create_fusion",
           "fusion_names", "masked_mean", "parse_fusion_name"]
