"""MoRec++ (after Yuan et al., SIGIR 2023, "Where to Go Next for Recommender Systems? ID- vs.
Modality-based Recommender Models Revisited"), made multi-modal as in the MMSR paper: "we
improve it into a multi-modal version by fusing the representations extracted from text and
the vision encoders". A "modality-based SR" row of Table V.

MoRec trains its modality encoder end to end and turns the encoder's pooled output into the
item vector with one dense layer and a GELU (``Text_Encoder``: ``GELU(fc(CLS))`` in
github.com/westlake-repl/IDvs.MoRec, ``model/encoders.py``); when an item has several texts
(title, abstract, body) it averages their vectors. MoRec++ does exactly that across modalities:

    item = mean( GELU(Linear(LN(text pooled))), GELU(Linear(LN(image pooled))) )

followed by the configured sequence model (SASRec by default, MoRec's choice) and the dot-product
BCE of every row. The LayerNorm before each head is ours: a CNN and a transformer emit very
different scales, and the coarse fusions of Table III normalise the same way.

How it differs from the MMSR rows, exactly: the item encoder is `MultiModalItemEncoder` with the
same encoders, the same top-k fine-tuning, fast path and frozen-prefix cache, and the sequence
model and loss are the same; only the fusion differs. MoRec++ fuses the two *pooled* vectors
(one per modality: [CLS] or mean for text, the vision encoder's pooling) with the coarse
per-modality-head mean above; MMSR's default merge-attention runs transformer blocks over the
*tokens* of both modalities together (text tokens + image patches), so words and patches can
attend to each other before pooling. The other coarse fusions of Table III (gate, FiLM, sum,
concat, +DNN) are the MMSR framework with ``model.item_encoder=mm model.fusion=<name>``.
"""

from __future__ import annotations

import torch
from torch import nn

from mmsr_lib.baselines._content import build_content_encoder
from mmsr_lib.config import RunConfig
from mmsr_lib.data.preprocess import SequenceData
from mmsr_lib.encoders.base import ModalityOutput
from mmsr_lib.fusion import Fusion
from mmsr_lib.recommender import SequentialRecommender
from mmsr_lib.sequence import create_sequence_model
from mmsr_lib.util import registry


class MoRecHeads(Fusion):
    """MoRec's item head (LayerNorm, Linear, GELU) on each modality's pooled vector, averaged."""

    def __init__(self, text_dim: int, vision_dim: int, dim: int) -> None:
        super().__init__(text_dim, vision_dim, dim)
        self.text_head = nn.Sequential(nn.LayerNorm(text_dim), nn.Linear(text_dim, dim),
                                       nn.GELU())
        self.vision_head = nn.Sequential(nn.LayerNorm(vision_dim), nn.Linear(vision_dim, dim),
                                         nn.GELU())

    def fuse(self, text: ModalityOutput, vision: ModalityOutput) -> torch.Tensor:
        return 0.5 * (self.text_head(text.pooled) + self.vision_head(vision.pooled))


class MoRecPP(SequentialRecommender):
    """MoRec++: `SequentialRecommender` over a text + vision item encoder with `MoRecHeads`.

    Training, full ranking (item table + dot product), fast vs plain item encoding and the
    frozen-prefix cache are `SequentialRecommender`'s and `MultiModalItemEncoder`'s.
    """


@registry.register("recommender", "morec++", aliases=("morec", "MoRec++", "MoRec"),
                   label="MoRec++", uses=("sequence", "text", "vision", "encoders"),
                   description="MoRec++: end-to-end text and vision encoders (top-k "
                               "fine-tuning), pooled vectors fused by MoRec's per-modality "
                               "heads (mean), a sequence model on top (ID-free)")
def build_morec(cfg: RunConfig, data: SequenceData) -> MoRecPP:
    """MoRec++ from the resolved `cfg` (encoders, fine-tuning, sequence model, dim, dropout)."""
    m = cfg.model
    items = build_content_encoder(cfg, data, MoRecHeads, "morec++")
    seq = create_sequence_model(m.sequence, m.dim, data.max_len, n_layers=m.n_layers,
                                n_heads=m.n_heads, dropout=m.dropout)
    return MoRecPP(items, seq)
