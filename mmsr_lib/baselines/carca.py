"""CARCA++ (after Rashed et al., RecSys 2022, "CARCA: Context and Attribute-Aware Next-Item
Recommendation via Cross-Attention"), made multi-modal as in the MMSR paper: an "IDSR with side
features" row of Table V, the paper's strongest baseline.

Following the reference code (github.com/ahmedrashed-ml/CARCA, ``CARCA.py``):

- an item is ``Linear([ID embedding ; Linear(features)])`` ("embComp" over the ID embedding and
  "feat_emb"); CARCA's features are image features plus attributes, here the pooled outputs of
  the configured text and vision encoders, each LayerNorm-ed (encoders of different families
  differ in scale) and concatenated before the feature projection;
- a self-attention profile encoder runs over the user's items;
- each candidate item cross-attends over the encoded profile (query, key and value projections
  with a leaky ReLU, several heads), the attended vector is multiplied element-wise with the
  candidate's own representation (the reference's ``res=True``) and a final Linear -> 1 gives
  the score. The score is not a dot product, which is why `CarcaScorer` exists.

Deviations, and why:

- Causality. The reference encodes the profile without a causal mask and lets every training
  position's candidate attend over the whole window, so the target of position t (the input at
  t + 1) is among the keys it attends to. We keep every-position training (the loss and
  negative sampling of every other row) and make it causal: the profile encoder is the
  configured sequence model (`model.sequence`, SASRec by default: causal self-attention with
  learned positions, pre-LN) and position t's candidates attend only to states 0..t. At test
  time the candidate attends over the whole input, which is all past. Training only the last
  position per window, as the paper's text describes, would waste L - 1 of every L labels.
- Blocks. The profile encoder is our SASRec (additive residuals, pre-LN, positions) instead of
  the reference's blocks (multiplicative attention "residual", no positions); the cross-attention
  head keeps the reference's form.
- Context. CARCA's per-interaction context (timestamps) is not used: the paper's CARCA++ makes
  the context multi-modal, and our batches carry no timestamps.
- Encoders. The same encoders and top-k fine-tuning as every content row (`model.finetune`,
  `model.top_blocks`; `top_blocks=0` is the reference's frozen pre-extracted features).

Full ranking. Cross-attention scores of every item for every user are computed exactly but
reordered: with g_n = w * e_n (w the final layer, e_n the candidate), the score of item n is
``sum_h sum_l softmax_l(q_n^h . k_l^h / sqrt(d_h)) (g_n^h . v_l^h) + b``, so per user batch the
cost is two [items x L] products per head, in item chunks, in float64 (ranks do not depend on
the evaluation batch size), and nothing of size [users x items x dim] is ever formed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
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
from mmsr_lib.fusion import Fusion
from mmsr_lib.recommender import DotScorer, Recommender, Scorer
from mmsr_lib.sequence import create_sequence_model
from mmsr_lib.sequence.base import SequenceModel
from mmsr_lib.util import registry

HEADS = ("cross", "dot")  # CARCA's cross-attention scorer; a dot product (the ablation)
LEAKY_SLOPE = 0.2  # tf.nn.leaky_relu's default, used on q, k and v in the reference
# elements of one [users, heads, items, L] score block in the full-ranking scorer (float64):
# 2^23 x 8 bytes = 64 MiB per block, three blocks alive at a time
SCORE_BLOCK_ELEMENTS = 2**23
# users scored together after sorting by history length (`CarcaScorer.trim`): a group's cost is
# set by its longest history, so the padding of the short ones is not attended over
TRIM_GROUP = 64


class CarcaFeatures(Fusion):
    """CARCA's "feat_emb": the item's features concatenated and projected to the model width.

    Each pooled vector is LayerNorm-ed first: a CNN and a transformer emit very different scales.
    """

    def __init__(self, text_dim: int, vision_dim: int, dim: int) -> None:
        super().__init__(text_dim, vision_dim, dim)
        self.text_norm = nn.LayerNorm(text_dim)
        self.vision_norm = nn.LayerNorm(vision_dim)
        self.proj = nn.Linear(text_dim + vision_dim, dim)

    def fuse(self, text: ModalityOutput, vision: ModalityOutput) -> torch.Tensor:
        return self.proj(torch.cat([self.text_norm(text.pooled),
                                    self.vision_norm(vision.pooled)], dim=-1))


class CrossAttentionHead(nn.Module):
    """Candidates attend over the encoded profile; (attended * candidate) -> Linear -> logit."""

    def __init__(self, dim: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        if n_heads < 1 or dim % n_heads:
            raise ValueError(f"CARCA++: model.dim={dim} must be divisible by "
                             f"model.n_heads={n_heads}; change one of them")
        self.n_heads, self.attn_dropout = n_heads, dropout
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, 1)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.n_heads, d // self.n_heads).transpose(1, 2)

    def forward(self, cand: torch.Tensor, states: torch.Tensor, allowed: torch.Tensor
                ) -> torch.Tensor:
        """cand [B, Q, d] candidates, states [B, L, d], allowed [B, Q, L] (True: query may see
        that key) -> logits [B, Q]. A query with no allowed key attends to nothing."""
        act = F.leaky_relu
        q = self._heads(act(self.q(cand), LEAKY_SLOPE))
        k = self._heads(act(self.k(states), LEAKY_SLOPE))
        v = self._heads(act(self.v(states), LEAKY_SLOPE))
        has_keys = allowed.any(-1, keepdim=True)  # [B, Q, 1]
        mask = (allowed | ~has_keys).unsqueeze(1)  # empty rows attend to all, zeroed below
        a = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.attn_dropout if self.training else 0.0)
        a = a.transpose(1, 2).reshape(cand.shape)
        a = torch.where(has_keys, a, 0.0)
        return self.out(a * cand).squeeze(-1)


class CARCA(PositionBCE, Recommender):
    """ID + multi-modal item representations, a causal profile encoder, cross-attention scoring.

    `item_encoder` is the feature encoder (text + image -> one vector per item): it carries that
    name so that `build_model` builds its frozen-prefix cache as for an MMSR item encoder.
    """

    def __init__(self, ids: IDItemEncoder, item_encoder: ContentEncoder,
                 profile: SequenceModel, n_heads: int, dropout: float = 0.1,
                 head: str = "cross") -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"CARCA++: unknown scoring head {head!r}; choose one of {HEADS}")
        dim = ids.dim
        if item_encoder.dim != dim or profile.dim != dim:
            raise ValueError("CARCA++: the ID embeddings, feature encoder and profile encoder "
                             f"must share model.dim (got {ids.dim}, {item_encoder.dim}, "
                             f"{profile.dim})")
        self.ids = ids
        self.item_encoder = item_encoder
        self.compose = nn.Linear(2 * dim, dim)  # the reference's "embComp"
        self.profile = profile
        # "dot" (the ablation `carca++dot`): position t's profile state . the candidate
        self.head = CrossAttentionHead(dim, n_heads, dropout) if head == "cross" else None
        self.n_items = ids.n_items

    def encoder_parameters(self) -> list[nn.Parameter]:
        return self.item_encoder.encoder_parameters()

    def represent(self, ids: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
        """Item representations from indices and their feature vectors (same leading shape)."""
        id_vecs = self.ids(ids)
        return self.compose(torch.cat([id_vecs, content.to(id_vecs.dtype)], dim=-1))

    def embed(self, *ids: torch.Tensor) -> list[torch.Tensor]:
        """Representations of several index tensors, each distinct item's content encoded once."""
        content = embed_items(self.item_encoder, *ids)
        return [self.represent(t, c) for t, c in zip(ids, content, strict=True)]

    def position_logits(self, batch: dict[str, torch.Tensor]
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits [B, L] of each position's next item and of its negative; position t's
        candidates attend to the profile states of positions 0..t only."""
        inputs = batch["inputs"]
        x, pos, neg = self.embed(inputs, batch["targets"], batch["negatives"])
        mask = inputs > 0
        states = self.profile(x, mask)
        if self.head is None:  # the causal profile encoder's state t scores item t + 1
            return (states * pos).sum(-1), (states * neg).sum(-1)
        n = inputs.shape[1]
        causal = torch.ones(n, n, dtype=torch.bool, device=inputs.device).tril()
        allowed = causal.unsqueeze(0) & mask.unsqueeze(1)  # [B, L(query), L(key)]
        logits = self.head(torch.cat([pos, neg], 1), states, torch.cat([allowed, allowed], 1))
        return logits[:, :n], logits[:, n:]

    @torch.no_grad()
    def item_table(self, batch_size: int = 512) -> torch.Tensor:
        """Representations [n_items + 1, dim] of the whole catalog (row 0: padding)."""
        content = self.item_encoder.encode_all(batch_size)
        ids = torch.arange(self.n_items + 1, device=content.device)
        return self.represent(ids, content).float()

    @torch.no_grad()
    def scorer(self, batch_size: int = 512) -> Scorer:
        table = self.item_table(batch_size)
        if self.head is None:
            return DotScorer(lambda inputs: self.user_vectors(inputs, batch_size, table), table)
        return CarcaScorer(self, table, batch_size)

    @torch.no_grad()
    def user_vectors(self, inputs: torch.Tensor, batch_size: int = 512,
                     table: torch.Tensor | None = None) -> torch.Tensor:
        """The profile state at the last position of each left-padded sequence: what the dot
        head scores items against (`Recommender.user_vectors` for CARCA's profile encoder)."""
        table = self.item_table(batch_size) if table is None else table
        out = [self.profile(table[chunk], chunk > 0)[:, -1] for chunk in inputs.split(batch_size)]
        return torch.cat(out) if out else table.new_zeros((0, table.shape[1]))


class CarcaScorer(Scorer):
    """CARCA++ scores of every catalog item for a batch of users (see the module docstring).

    Item-side terms (queries q_n and g_n = w * e_n) are computed once per evaluation; per user
    batch the profile is encoded once and the items are scored in chunks of
    `SCORE_BLOCK_ELEMENTS`. Exact: equal to the training path's scores up to float rounding.
    `trim`: within a user batch, users sorted by history length are scored in groups of
    `TRIM_GROUP` over only the positions some member of the group has, so short histories do not
    pay for the longest one's length (a padded position's weight is exactly zero either way;
    `trim=False` is the plain reference, `mmsr bench carca-scorer`).
    """

    def __init__(self, model: CARCA, table: torch.Tensor, batch_size: int = 512,
                 dtype: torch.dtype = torch.float64, trim: bool = True) -> None:
        self.model, self.table, self.batch_size, self.dtype = model, table, batch_size, dtype
        self.trim = trim
        self.n_items = table.shape[0] - 1
        head = model.head
        self.n_heads = head.n_heads
        self.d_head = table.shape[1] // head.n_heads
        e = table.to(dtype)
        w = {name: getattr(head, name).weight.to(dtype) for name in ("q", "k", "v")}
        b = {name: getattr(head, name).bias.to(dtype) for name in ("q", "k", "v")}
        self.w, self.b = w, b
        n = e.shape[0]
        q = F.leaky_relu(e @ w["q"].T + b["q"], LEAKY_SLOPE)
        g = e * head.out.weight.to(dtype).view(1, -1)
        # [heads, items, d_head]
        self.q = q.view(n, self.n_heads, self.d_head).permute(1, 0, 2).contiguous()
        self.g = g.view(n, self.n_heads, self.d_head).permute(1, 0, 2).contiguous()
        self.bias = head.out.bias.to(dtype)
        self._buf: torch.Tensor | None = None

    def _profile(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values [B, heads, L, d_head] of the encoded profiles (float64)."""
        states = self.model.profile(self.table[inputs], inputs > 0).to(self.dtype)
        b, n, _ = states.shape

        def heads(name: str) -> torch.Tensor:
            x = F.leaky_relu(states @ self.w[name].T + self.b[name], LEAKY_SLOPE)
            return x.view(b, n, self.n_heads, self.d_head).transpose(1, 2)

        return heads("k"), heads("v")

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        n_users, n_cols = len(inputs), self.n_items + 1
        if self._buf is None or self._buf.shape[0] < n_users:
            self._buf = torch.empty(n_users, n_cols, dtype=self.dtype, device=self.table.device)
        out = self._buf[:n_users]
        for u0 in range(0, n_users, self.batch_size):
            users = inputs[u0 : u0 + self.batch_size]
            k, v = self._profile(users)
            key_mask = users > 0
            has_keys = key_mask.any(-1)  # a row without items scores every item at the bias
            key_mask = key_mask | ~has_keys.unsqueeze(-1)
            if not self.trim:
                out[u0 : u0 + len(users)] = self._score(k, v, key_mask, has_keys)
                continue
            # users by history length, in groups that keep only the positions some member has
            order = torch.argsort(key_mask.sum(-1), stable=True)
            for g0 in range(0, len(users), TRIM_GROUP):
                rows = order[g0 : g0 + TRIM_GROUP]
                cols = key_mask[rows].any(0)
                out[u0 + rows] = self._score(k[rows][:, :, cols], v[rows][:, :, cols],
                                             key_mask[rows][:, cols], has_keys[rows])
        return out

    def _score(self, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor,
               has_keys: torch.Tensor) -> torch.Tensor:
        """Scores [B, items + 1] of users whose keys / values are [B, heads, n, d_head]."""
        b, h, n, _ = k.shape
        scores = torch.empty(b, self.n_items + 1, dtype=self.dtype, device=k.device)
        scale = 1.0 / math.sqrt(self.d_head)
        chunk = max(1, SCORE_BLOCK_ELEMENTS // max(1, b * h * n))
        masked = ~key_mask[:, None, None, :]  # [B, 1, 1, n]
        for c0 in range(0, scores.shape[1], chunk):
            q, g = self.q[:, c0 : c0 + chunk], self.g[:, c0 : c0 + chunk]
            logits = torch.einsum("hcd,bhld->bhcl", q, k) * scale
            attn = torch.softmax(logits.masked_fill(masked, -math.inf), dim=-1)
            values = torch.einsum("hcd,bhld->bhcl", g, v)
            block = (attn * values).sum(dim=(1, 3)) + self.bias
            scores[:, c0 : c0 + chunk] = torch.where(has_keys.unsqueeze(-1), block, self.bias)
        return scores


@registry.register("recommender", "carca++", aliases=("carca", "CARCA++", "CARCA"),
                   label="CARCA++", uses=("sequence", "text", "vision", "encoders"),
                   description="CARCA++: ID + text/image item representations, a causal "
                               "profile encoder and cross-attention scoring of the candidates "
                               "(ID-based)")
def build_carca(cfg: RunConfig, data: SequenceData) -> CARCA:
    """CARCA++ from the resolved `cfg` (profile encoder = `model.sequence`; heads of the
    cross-attention = `model.n_heads`)."""
    return _build(cfg, data, "cross")


@registry.register("recommender", "carca++dot", aliases=("carca-dot", "CARCA++ (dot)"),
                   label="CARCA++ (dot head)", uses=("sequence", "text", "vision", "encoders"),
                   description="ablation (ours): CARCA++ with its cross-attention scorer "
                               "replaced by the dot product of the profile state and the "
                               "candidate; asks whether the head is why CARCA++ under-fits")
def build_carca_dot(cfg: RunConfig, data: SequenceData) -> CARCA:
    """CARCA++ whose candidates are scored by <profile state, item representation>: the same
    item representations (ID + features, "embComp") and causal profile encoder as `carca++`."""
    return _build(cfg, data, "dot")


def _build(cfg: RunConfig, data: SequenceData, head: str) -> CARCA:
    m = cfg.model
    ids = IDItemEncoder(data.n_items, m.dim)
    features = build_content_encoder(cfg, data, CarcaFeatures, m.recommender)
    profile = create_sequence_model(m.sequence, m.dim, data.max_len, n_layers=m.n_layers,
                                    n_heads=m.n_heads, dropout=m.dropout)
    return CARCA(ids, features, profile, n_heads=m.n_heads or 1, dropout=m.dropout, head=head)
