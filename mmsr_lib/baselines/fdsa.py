"""FDSA (Zhang et al., IJCAI 2019): feature-level deeper self-attention, an "IDSR with side
features" row of the paper's Table V.

Two causal self-attention streams over the user's sequence:

- the item stream reads the item ID embeddings;
- the feature stream reads one feature vector per item, built by a vanilla attention over the
  item's feature vectors. FDSA's features are categorical attributes (brand, category, text);
  here, as the MMSR paper uses it, they are the item's text and image, each the pooled output
  of the configured text / vision encoder projected to the model width (LayerNorm + Linear).

The two streams' outputs are concatenated, projected back to the model width (Linear,
LayerNorm, dropout, as in RecBole's FDSA) and the next item is scored by a dot product with
its ID embedding, so the ranking is over IDs and the model cannot score an item it never saw.

Encoders. FDSA consumed fixed side features; we feed it the same encoders as every content row
of the table, with the same top-k fine-tuning (`model.finetune`, `model.top_blocks`: the top 2
transformer blocks of each encoder train by default), so Table V compares how the models *use*
text and images, not how much encoder each may tune. `model.top_blocks=0` gives FDSA's own
setting, frozen pre-extracted features: the frozen-prefix cache then holds the whole encoder
(where the frozen part is deterministic: MAE needs `model.mask_ratio=0`) and a step costs no
encoder work at all.

Each stream is the configured sequence model (`model.sequence`, SASRec by default: FDSA's
streams are SASRec-style causal transformer blocks), with `model.n_layers` / `model.n_heads`.
"""

from __future__ import annotations

import torch
from torch import nn

from mmsr_lib.baselines._content import (
    ContentEncoder,
    PositionBCE,
    build_content_encoder,
    embed_items,
)
from mmsr_lib.config import RunConfig
from mmsr_lib.data.preprocess import SequenceData
from mmsr_lib.encoders.base import ModalityOutput
from mmsr_lib.encoders.item import IDItemEncoder
from mmsr_lib.fusion import Fusion, VectorProjection
from mmsr_lib.recommender import DotScorer, Recommender
from mmsr_lib.sequence import create_sequence_model
from mmsr_lib.sequence.base import SequenceModel
from mmsr_lib.util import registry


class VanillaAttention(Fusion):
    """FDSA's vanilla attention over an item's feature vectors -> one feature vector.

    Each modality's pooled vector is projected to the model width; a two-layer scorer (Linear,
    ReLU, Linear -> 1, as RecBole's `VanillaAttention`) weighs them with a softmax over the
    features, and the weighted sum is the item's feature vector.
    """

    def __init__(self, text_dim: int, vision_dim: int, dim: int) -> None:
        super().__init__(text_dim, vision_dim, dim)
        self.text_proj = VectorProjection(text_dim, dim)
        self.vision_proj = VectorProjection(vision_dim, dim)
        self.energy = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, 1))

    def fuse(self, text: ModalityOutput, vision: ModalityOutput) -> torch.Tensor:
        feats = torch.stack([self.text_proj(text.pooled), self.vision_proj(vision.pooled)], 1)
        weights = torch.softmax(self.energy(feats), dim=1)  # [B, n_features, 1]
        return (weights * feats).sum(1)


class FDSA(PositionBCE, Recommender):
    """Item-ID stream + feature stream, concatenated, scored against the ID embeddings.

    `item_encoder` is the feature encoder (text + image -> one vector per item): it carries that
    name so that `build_model` builds its frozen-prefix cache as for an MMSR item encoder.
    """

    def __init__(self, ids: IDItemEncoder, item_encoder: ContentEncoder,
                 id_stream: SequenceModel, feature_stream: SequenceModel,
                 dropout: float = 0.1) -> None:
        super().__init__()
        dim = ids.dim
        if item_encoder.dim != dim or id_stream.dim != dim or feature_stream.dim != dim:
            raise ValueError("FDSA: the ID embeddings, feature encoder and both streams must "
                             f"share model.dim (got {ids.dim}, {item_encoder.dim}, "
                             f"{id_stream.dim}, {feature_stream.dim})")
        self.ids = ids
        self.item_encoder = item_encoder
        self.id_stream = id_stream
        self.feature_stream = feature_stream
        self.concat = nn.Linear(2 * dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.n_items = ids.n_items

    def encoder_parameters(self) -> list[nn.Parameter]:
        return self.item_encoder.encoder_parameters()

    def states(self, inputs: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        """User states [B, L, dim] of left-padded item indices (position t sees items <= t)."""
        if features is None:
            (features,) = embed_items(self.item_encoder, inputs)
        mask = inputs > 0
        o_items = self.id_stream(self.ids(inputs), mask)
        o_feats = self.feature_stream(features, mask)
        return self.dropout(self.norm(self.concat(torch.cat([o_items, o_feats.to(o_items.dtype)],
                                                            dim=-1))))

    def position_logits(self, batch: dict[str, torch.Tensor]
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits [B, L] of each position's next item and of its negative."""
        h = self.states(batch["inputs"])
        pos, neg = self.ids(batch["targets"]), self.ids(batch["negatives"])
        return (h * pos).sum(-1), (h * neg).sum(-1)

    @torch.no_grad()
    def user_vectors(self, inputs: torch.Tensor, batch_size: int = 512,
                     feature_table: torch.Tensor | None = None) -> torch.Tensor:
        """The state at the last position; `feature_table` [n_items + 1, dim] (the catalog's
        feature vectors, encoded once) replaces per-batch encoding when given."""
        out = []
        for chunk in inputs.split(batch_size):
            feats = feature_table[chunk] if feature_table is not None else None
            out.append(self.states(chunk, feats)[:, -1])
        return torch.cat(out) if out else inputs.new_zeros((0, self.ids.dim), dtype=torch.float)

    @torch.no_grad()
    def scorer(self, batch_size: int = 512) -> DotScorer:
        """<state, ID embedding> for every item; the catalog's features are encoded once."""
        table = self.item_encoder.encode_all(batch_size).float()
        return DotScorer(lambda inputs: self.user_vectors(inputs, batch_size, table).float(),
                         self.ids.encode_all().float())


@registry.register("recommender", "fdsa", aliases=("FDSA",), label="FDSA",
                   uses=("sequence", "text", "vision", "encoders"),
                   description="FDSA: an item-ID and a text+image feature self-attention stream, "
                               "next item by dot product with its ID embedding (ID-based)")
def build_fdsa(cfg: RunConfig, data: SequenceData) -> FDSA:
    """FDSA from the resolved `cfg` (sequence model, encoders, fine-tuning, dim, dropout)."""
    m = cfg.model
    ids = IDItemEncoder(data.n_items, m.dim)
    features = build_content_encoder(cfg, data, VanillaAttention, "fdsa")
    streams = [create_sequence_model(m.sequence, m.dim, data.max_len, n_layers=m.n_layers,
                                     n_heads=m.n_heads, dropout=m.dropout) for _ in range(2)]
    return FDSA(ids, features, streams[0], streams[1], dropout=m.dropout)
