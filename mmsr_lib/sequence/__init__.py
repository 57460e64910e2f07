"""Sequence models behind one interface (`SequenceModel`): SASRec, GRU4Rec, NextItNet.

`create_sequence_model` is the only constructor the rest of the library uses, so adding a model
means one file plus one registry line here.
"""

from __future__ import annotations

from mmsr_lib.sequence.base import SequenceModel
from mmsr_lib.sequence.gru4rec import GRU4Rec
from mmsr_lib.sequence.nextitnet import NextItNet
from mmsr_lib.sequence.sasrec import SASRec

SEQUENCE_MODELS: dict[str, type[SequenceModel]] = {
    "sasrec": SASRec,
    "gru4rec": GRU4Rec,
    "nextitnet": NextItNet,
}


def create_sequence_model(
    name: str,
    dim: int,
    max_len: int,
    n_layers: int | None = None,
    n_heads: int = 2,
    dropout: float = 0.1,
) -> SequenceModel:
    """Builds a sequence model by registry name.

    n_layers=None takes the paper's choice (SASRec 2 blocks, GRU4Rec 4 layers, NextItNet 2
    residual blocks). `max_len` (learned positions) and `n_heads` only concern SASRec; the
    recurrent and convolutional models have no positions or heads.
    """
    key = name.strip().lower()
    if key not in SEQUENCE_MODELS:
        raise ValueError(
            f"unknown sequence model {name!r} (model.sequence); valid names: "
            f"{', '.join(sorted(SEQUENCE_MODELS))}"
        )
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout} (model.dropout)")
    cls = SEQUENCE_MODELS[key]
    if cls is SASRec:
        return SASRec(dim, max_len, n_layers=n_layers, n_heads=n_heads, dropout=dropout)
    return cls(dim, n_layers=n_layers, dropout=dropout)


__all__ = [
    "SEQUENCE_MODELS",
    "GRU4Rec",
    "NextItNet",
    "SASRec",
    "SequenceModel",
    "create_sequence_model",
]
