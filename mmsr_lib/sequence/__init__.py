"""Sequence models behind one interface (`SequenceModel`): SASRec, GRU4Rec, NextItNet.

Each model registers itself in its own file (`mmsr_lib.util.registry`, kind "sequence") with a
builder of one signature, so adding a model is one file plus its import below.
`create_sequence_model` is the only constructor the rest of the library uses.
"""

from __future__ import annotations

from mmsr_lib.sequence.base import SequenceModel
from mmsr_lib.sequence.gru4rec import GRU4Rec
from mmsr_lib.sequence.nextitnet import NextItNet
from mmsr_lib.sequence.sasrec import SASRec
from mmsr_lib.util import registry


def create_sequence_model(
    name: str,
    dim: int,
    max_len: int,
    n_layers: int | None = None,
    n_heads: int | None = 2,
    dropout: float = 0.1,
) -> SequenceModel:
    """Builds a sequence model by registry name (aliases such as "SASRec" or "GRURec" work).

    n_layers=None takes the paper's choice (SASRec 2 blocks, GRU4Rec 4 layers, NextItNet 2
    residual blocks). `max_len` (learned positions) and `n_heads` only concern SASRec; the
    recurrent and convolutional models have no positions or heads.
    """
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout} (model.dropout)")
    entry = registry.lookup("sequence", name)
    return entry.factory(dim, max_len, n_layers=n_layers, n_heads=n_heads, dropout=dropout)


__all__ = ["GRU4Rec", "NextItNet", "SASRec", "SequenceModel", "create_sequence_model"]
