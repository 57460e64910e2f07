"""ID-agnostic item encoders: MMSR-T (text), MMSR-V (vision) and MMSR (text + vision + fusion).

An item is its text and its image; the IDs only index into per-item inputs that are prepared once
(tokenised text, the image store). Two ways to run the encoders:

- ``fast`` (default): the recommender hands over each distinct item of a batch once; when an
  encoder's frozen lower part is deterministic, its output is computed once per item and cached
  (`FrozenCache`), so a training step runs only the trainable top blocks.
- ``plain``: the paper's published code path, kept as the reference to measure against: every
  slot of every sequence, padding included, goes through the whole encoders at every step.
"""

from __future__ import annotations

import logging
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmsr_lib.config import RunConfig
from mmsr_lib.data.images import ImageStore
from mmsr_lib.data.preprocess import SequenceData
from mmsr_lib.encoders.base import ModalityOutput
from mmsr_lib.encoders.frozen_cache import FrozenCache
from mmsr_lib.encoders.item import ContentItemEncoder
from mmsr_lib.encoders.text import TextEncoder, create_text_encoder
from mmsr_lib.encoders.vision import VisionEncoder, create_vision_encoder
from mmsr_lib.fusion import create_fusion
from mmsr_lib.util import registry

log = logging.getLogger("mmsr.encoders")

ITEM_ENCODINGS = ("fast", "plain")


class TextInputs:
    """Every item's text tokenised once (row 0 = padding item); `rows(ids)` gathers a batch."""

    def __init__(self, encoder: TextEncoder, texts: list[str]) -> None:
        tok = encoder.tokenize(texts)
        self.input_ids = tok["input_ids"]
        self.attention_mask = tok["attention_mask"]
        self.stats = dict(getattr(encoder, "stats", {}))

    def rows(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = ids.cpu()
        return self.input_ids[idx], self.attention_mask[idx]


class ImageInputs:
    """Image rows per item; pixels are read from the memory-mapped store only for a batch."""

    def __init__(self, encoder: VisionEncoder, data: SequenceData) -> None:
        if data.image_path is None:
            raise ValueError(
                f"data set {data.name!r} has no images (no images.npy); vision and mm item "
                "encoders need them. Use model.item_encoder=text for text-only data."
            )
        self.encoder = encoder
        self.store = ImageStore(data.image_path)
        self.rows_of_item = data.item_image
        # data set identity (TSVs, image store shape, meta incl. generator seed), not the path
        self.fingerprint = data.source_fingerprint

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        images = self.store.get(self.rows_of_item[ids.cpu().numpy()])
        return self.encoder.preprocess(images)


def pool_grid(out: ModalityOutput, grid: int | None) -> ModalityOutput:
    """Image tokens average-pooled to a `grid` x `grid` map (the pooled vector untouched).

    A fusion over every cell of a 260-px EfficientNet map (81 tokens of 1,280 features) costs
    most of a CPU training step; a 3 x 3 map keeps where things are in the image at a tenth of
    the cost. Square token grids only (CNN maps, ViT patches without masking)."""
    if grid is None:
        return out
    b, t, d = out.tokens.shape
    side = int(round(t ** 0.5))
    if side * side != t:
        raise ValueError(f"model.vision_grid needs a square map of image tokens, got {t} tokens "
                         "(MAE with random masking keeps a subset); leave it None")
    maps = out.tokens.transpose(1, 2).reshape(b, d, side, side)
    tokens = F.adaptive_avg_pool2d(maps, grid).flatten(2).transpose(1, 2)
    mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
    return ModalityOutput(tokens=tokens, mask=mask, pooled=out.pooled)


class ModalityBranch(nn.Module):
    """One encoder plus its per-item inputs and an optional frozen-prefix cache."""

    def __init__(self, encoder: nn.Module, inputs: TextInputs | ImageInputs, kind: str,
                 grid: int | None = None) -> None:
        super().__init__()
        if grid is not None and (kind != "vision" or grid < 1):
            raise ValueError(f"model.vision_grid={grid!r}: a positive grid size for the vision "
                             "branch only (None keeps every cell)")
        self.encoder = encoder
        self.inputs = inputs
        self.kind = kind
        self.grid = grid
        self.cache: FrozenCache | None = None

    trim: bool = True  # fast mode: drop token columns that are padding for the whole batch

    def _text_rows(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Token ids and mask of `ids`, and how many columns hold a real token in any row.

        Texts are tokenised to `max_tokens` (50), but most are far shorter; attention and
        pooling ignore padding, so cutting the all-padding columns changes nothing but the cost.
        The plain reference mode keeps the fixed width, as the paper's code does.
        """
        input_ids, mask = self.inputs.rows(ids)
        width = input_ids.shape[1]
        if self.trim and len(mask):
            width = max(1, int(mask.sum(1).max()))
        return input_ids[:, :width], mask[:, :width], width

    def _args(self, ids: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, ...]:
        if self.kind == "text":
            input_ids, mask, _ = self._text_rows(ids)
            return input_ids.to(device), mask.to(device)
        return (self.inputs.rows(ids).to(device),)

    # a fully frozen vision branch's outputs are kept in memory up to this size (bytes)
    memo_max_bytes: int = 1 << 30
    # read a run of consecutive ids from the memo as views (False: gather; `mmsr bench frozen`)
    memo_views: bool = True
    # read the memo's tokens and mask only if something reads them (False: at once, as before;
    # `mmsr bench memo-rows`)
    memo_lazy: bool = True

    def _is_constant(self) -> bool:
        """True when this branch's output for an item can never change: its frozen prefix is
        cached, no encoder parameter trains, and nothing left draws randomness or batch
        statistics (dropout, drop-path, BatchNorm in training mode, timm's head dropout)."""
        enc = self.encoder
        if self.cache is None or any(p.requires_grad for p in enc.parameters()):
            return False
        for m in enc.modules():
            dropout = isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0
            if m.training and (dropout or isinstance(m, nn.modules.batchnorm._BatchNorm)
                               or float(getattr(m, "drop_prob", 0) or 0) > 0):
                return False
        backbone = getattr(enc, "backbone", None)
        return not (backbone is not None and backbone.training
                    and float(getattr(backbone, "drop_rate", 0) or 0) > 0)

    def _memo(self, device: torch.device) -> ModalityOutput | None:
        """Every item's output of a constant vision branch, computed once (row 0 = padding).

        Frozen mode (`model.finetune=frozen`): the head is cached, and what remains (pooling to
        the pooled vector and to the `vision_grid` map) would otherwise re-read the whole
        feature-map cache and re-pool it at every step, most of an MMSR-V step on CPU. Same
        values: the same per-item operations on the same cached rows. Catalogs whose outputs
        exceed `memo_max_bytes` keep the per-step path."""
        memo = getattr(self, "_memo_out", None)
        if memo is not None:
            if memo.tokens.device != device:
                memo = ModalityOutput(memo.tokens.to(device), memo.mask.to(device),
                                      memo.pooled.to(device))
                self._memo_out = memo
            return memo
        if self.kind != "vision" or not self._is_constant() or getattr(self, "_no_memo", False):
            return None
        n = len(self.cache) - 1
        with torch.no_grad():
            first = pool_grid(self.encoder.forward_top(self.cache.get(
                torch.ones(1, dtype=torch.long)).to(device)), self.grid)
        per_item = (first.tokens[0].numel() + first.pooled[0].numel()) * first.pooled.element_size()
        if per_item * (n + 1) > self.memo_max_bytes:
            self._no_memo = True
            log.info("%s outputs of %d items exceed %d bytes: pooled per step instead",
                     self.encoder.name, n, self.memo_max_bytes)
            return None
        parts = []
        with torch.no_grad():
            for chunk in torch.arange(1, n + 1).split(256):
                parts.append(pool_grid(self.encoder.forward_top(self.cache.get(chunk).to(device)),
                                       self.grid))
        tokens = torch.cat([torch.zeros_like(first.tokens)] + [o.tokens for o in parts])
        pooled = torch.cat([torch.zeros_like(first.pooled)] + [o.pooled for o in parts])
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=device)
        self._memo_out = ModalityOutput(tokens=tokens, mask=mask, pooled=pooled)
        return self._memo_out

    def forward(self, ids: torch.Tensor) -> ModalityOutput:
        device = ids.device
        memo = self._memo(device) if self.cache is not None else None
        if memo is not None:
            # the whole catalog (softmax loss): views, not a 50 MB gather
            rows = _as_span(ids) if self.memo_views else ids
            out = MemoRows(memo, rows)
            if not self.memo_lazy:
                out.tokens, out.mask  # noqa: B018 - read now (the benchmark's reference path)
            return out
        if self.cache is not None:
            hidden = self.cache.get(ids).to(device)
            if self.kind == "text":
                _, mask, width = self._text_rows(ids)
                return self.encoder.forward_top(hidden[:, :width], mask.to(device))
            return pool_grid(self.encoder.forward_top(hidden), self.grid)
        out = self.encoder(*self._args(ids, device))
        return pool_grid(out, self.grid) if self.kind == "vision" else out

    def frozen(self, ids: torch.Tensor) -> torch.Tensor:
        """The frozen lower part's output for `ids` at full token width (what the cache stores)."""
        if self.kind == "text":
            input_ids, mask = self.inputs.rows(ids)
            return self.encoder.forward_frozen(input_ids.to(ids.device), mask.to(ids.device))
        return self.encoder.forward_frozen(self.inputs.rows(ids).to(ids.device))


class MemoRows(ModalityOutput):
    """Some items' rows of a constant branch's memo: the pooled vectors read at once, the tokens
    and their mask only when something reads them (then kept).

    Under BCE the ids are a batch's distinct items, not a run, so reading them gathers; the
    content baselines keep EfficientNet's whole 8 x 8 map (1,177 x 64 x 1,280 floats), and that
    gather was 70% of a CARCA++ step on CPU although its combination module, like every
    vector-level fusion and a single-branch encoder, reads the pooled vector only. The values
    are the memo's either way.
    """

    def __init__(self, memo: ModalityOutput, rows: torch.Tensor | slice) -> None:
        # not the dataclass's __init__: tokens and mask are read on demand
        self.pooled = memo.pooled[rows]
        self._memo, self._rows = memo, rows

    @cached_property
    def tokens(self) -> torch.Tensor:  # type: ignore[override]
        return self._memo.tokens[self._rows]

    @cached_property
    def mask(self) -> torch.Tensor:  # type: ignore[override]
        return self._memo.mask[self._rows]


def _as_span(ids: torch.Tensor) -> torch.Tensor | slice:
    """`ids` itself, or the equal slice when `ids` is a run of consecutive ids (a, a+1, ...).

    The softmax loss asks for every item at every step; indexing the memo with that run copies
    every item's region tokens (1,177 x 9 x 1,280 floats on the cpu catalog, ~65 ms a step on a
    core) although a single-branch encoder or a pooled fusion never reads them. A slice is a
    view of the same values. Nothing downstream writes into a branch's output in place (views
    of the memo would carry such a write into it)."""
    n = len(ids) if ids.dim() == 1 else 0
    if n < 2:
        return ids
    first = int(ids[0])
    if int(ids[-1]) - first != n - 1 or not torch.equal(ids, torch.arange(
            first, first + n, device=ids.device, dtype=ids.dtype)):
        return ids
    return slice(first, first + n)


class MultiModalItemEncoder(ContentItemEncoder):
    """text, vision or both (+ fusion) -> an item vector of the recommender's width.

    Padding (id 0) maps to the zero vector without running any encoder in fast mode.
    """

    def __init__(
        self,
        n_items: int,
        dim: int,
        text: ModalityBranch | None,
        vision: ModalityBranch | None,
        fusion: str = "merge_attn",
        fusion_layers: int | None = 1,
        fusion_heads: int | None = 4,
        dropout: float = 0.1,
        item_encoding: str = "fast",
    ) -> None:
        super().__init__()
        if item_encoding not in ITEM_ENCODINGS:
            raise ValueError(f"unknown model.item_encoding {item_encoding!r}; choose {ITEM_ENCODINGS}")
        if text is None and vision is None:
            raise ValueError("a multi-modal item encoder needs a text or a vision branch")
        self.n_items, self.dim = n_items, dim
        self.text, self.vision = text, vision
        self.item_encoding = item_encoding
        for b in (text, vision):
            if b is not None:
                b.trim = item_encoding == "fast"
        self.fusion = None
        if text is not None and vision is not None:
            self.fusion = create_fusion(
                fusion, text.encoder.out_dim, vision.encoder.out_dim, dim,
                n_layers=fusion_layers, n_heads=fusion_heads, dropout=dropout,
            )
        else:
            branch = text or vision
            self.proj = nn.Sequential(nn.LayerNorm(branch.encoder.out_dim),
                                      nn.Linear(branch.encoder.out_dim, dim), nn.LayerNorm(dim))

    def branches(self) -> list[ModalityBranch]:
        return [b for b in (self.text, self.vision) if b is not None]

    def encoder_parameters(self) -> list[nn.Parameter]:
        return [p for b in self.branches() for p in b.encoder.parameters() if p.requires_grad]

    def encode(self, ids: torch.Tensor) -> torch.Tensor:
        """Vectors for real item ids (no padding handling).

        Fusion and projection outputs are layer-normed, so their norm is about sqrt(dim); the
        sequence model's states are too, and their dot products would start at logits of +-dim,
        saturating the BCE from the first step. Scaling by 1/sqrt(dim) starts item vectors at
        the norm of the ID embeddings (std dim^-1/2), so IDSR and MMSR begin from the same logit
        scale; the norms' learnable gains can still grow it.
        """
        t = self.text(ids) if self.text is not None else None
        v = self.vision(ids) if self.vision is not None else None
        if self.fusion is not None:
            out = self.fusion(t, v)
        else:
            out = self.proj((t if t is not None else v).pooled)
        return out * self.dim**-0.5

    def length_groups(self, ids: torch.Tensor) -> list[torch.Tensor]:
        """`groups_by_length` of the text; off when a BatchNorm is in training mode (its
        statistics would then depend on the grouping) and when there is no text branch."""
        if self.text is None or self._batchnorm_training():
            return super().length_groups(ids)
        return self.groups_by_length(ids, self.text.inputs.attention_mask)

    def _batchnorm_training(self) -> bool:
        return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training
                   for b in self.branches() for m in b.encoder.modules())

    # -- frozen-prefix cache ---------------------------------------------------------------
    def enable_cache(self, mode: str = "auto", batch_size: int = 256,
                     cache_dir: str | Path | None = None, dtype: str = "float32") -> list[str]:
        """Build a frozen-prefix cache for every branch where it is valid; returns their kinds.

        mode="auto" skips branches where the frozen part is not deterministic (full fine-tuning,
        MAE random masking) with a logged reason; mode="require" raises instead. With
        `cache_dir` the tables are shared on disk across runs and notebooks (keyed by the frozen
        weights, the item inputs and the split depth), so the rows of a grid compute each frozen
        prefix once.
        """
        if self.plain:
            raise ValueError("model.item_encoding=plain is the uncached reference; use fast")
        built = []
        for b in self.branches():
            reason = FrozenCache.invalid_reason(b.encoder)
            if reason:
                if mode == "require":
                    raise ValueError(f"cannot cache the frozen part of {b.encoder.name}: {reason}")
                log.info("no frozen-prefix cache for %s: %s", b.encoder.name, reason)
                continue
            b.cache = FrozenCache.build(b, self.n_items, batch_size=batch_size,
                                        cache_dir=cache_dir, dtype=dtype)
            b._memo_out, b._no_memo = None, False
            built.append(b.kind)
        return built


def create_item_encoder(cfg: RunConfig, data: SequenceData) -> MultiModalItemEncoder:
    """The multi-modal item encoder named by `cfg.model.item_encoder` for the items of `data`."""
    m = cfg.model
    kind = registry.canonical("item_encoder", m.item_encoder)
    uses = registry.lookup("item_encoder", kind).meta.get("uses", ())
    if "text" not in uses and "vision" not in uses:
        raise ValueError(f"model.item_encoder={m.item_encoder!r} is not a text/vision encoder")
    text = vision = None
    if "text" in uses:
        enc = create_text_encoder(m.text_encoder, max_tokens=m.text_max_tokens,
                                  pooling=m.text_pooling, finetune=m.finetune,
                                  top_blocks=m.top_blocks)
        text = ModalityBranch(enc, TextInputs(enc, data.item_text), "text")
    if "vision" in uses:
        image_size = _store_image_size(data)
        enc = create_vision_encoder(m.vision_encoder, image_size=image_size, finetune=m.finetune,
                                    top_blocks=m.top_blocks, mask_ratio=m.mask_ratio)
        vision = ModalityBranch(enc, ImageInputs(enc, data), "vision", grid=m.vision_grid)
    return MultiModalItemEncoder(
        data.n_items, m.dim, text, vision, fusion=m.fusion or "merge_attn",
        fusion_layers=m.fusion_layers, fusion_heads=m.fusion_heads, dropout=m.dropout,
        item_encoding=m.item_encoding,
    )


registry.register("item_encoder", "text", aliases=("MMSR-T", "text-only"), label="MMSR-T",
                  uses=("text", "encoders"),
                  description="MMSR-T: the item's text through a text encoder")(create_item_encoder)
registry.register("item_encoder", "vision", aliases=("MMSR-V", "image", "vision-only"),
                  label="MMSR-V", uses=("vision", "encoders"),
                  description="MMSR-V: the item's image through a vision encoder")(
                      create_item_encoder)
registry.register("item_encoder", "mm", aliases=("MMSR", "multimodal", "text+vision"),
                  label="MMSR", uses=("text", "vision", "fusion", "encoders"),
                  description="MMSR: text and vision encoders joined by a fusion module")(
                      create_item_encoder)


def _store_image_size(data: SequenceData) -> int:
    if data.image_path is None:
        raise ValueError(f"data set {data.name!r} has no images; use model.item_encoder=text")
    arr = np.load(data.image_path, mmap_mode="r")
    return int(arr.shape[1])
