"""VLP item encoders (paper Table VI): a vision-language model in place of TE + VE + fusion.

``model.item_encoder=vlp`` with ``model.vlp=NAME`` (see `mmsr_lib.encoders.vlp_models` for
the five models, what each fine-tunes and how each is split). An item is its text and its
image; the VLP's pooled output is layer-normed and projected to ``model.dim``.

Item encoding, as for the other multi-modal encoders:

- ``fast`` (default): the recommender hands over each distinct item once; groups of similar
  text length are encoded together and each group's text is cut to its longest real text
  (padding is masked everywhere, so this changes nothing but the cost); and for every stream
  whose frozen lower part is deterministic (``finetune="top"``) its output is computed once per
  item and cached (`FrozenCache`, in memory or in the shared on-disk cache), so a step runs
  only the trainable top. Two-stream models cache a text and an image state per item; ViLT and
  VisualBERT cache the joint sequence after their frozen lower blocks. When a stream is not
  cacheable but VisualBERT's visual extractor is (always: it never trains), the extractor's
  features are cached instead.
- ``plain``: every slot of every sequence, padding included, through the whole model at the
  full text width: the reference the fast path is measured against.

In both modes an item's vector depends on that item only (fixed-width tokenisation, masked
attention, frozen parts in eval mode, no batch statistics), never on its batch.

VisualBERT's visual input (Table VII) is chosen by ``model.visual_input``: region, grid (the
default), patch-emb or patch-vit (`mmsr_lib.encoders.regions`). The config field is read with
``getattr(cfg.model, "visual_input", None)``, so this module works before the field exists.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mmsr_lib.data.images import ImageStore
from mmsr_lib.encoders import offline_weights, zoo
from mmsr_lib.encoders.frozen_cache import FrozenCache
from mmsr_lib.encoders.item import ContentItemEncoder
from mmsr_lib.encoders.regions import RegionExtractor, RegionFeatures, VisualExtractor
from mmsr_lib.encoders.vlp_models import IMAGE, JOINT, SPECS, TEXT, VLPBackbone, create_vlp, pack
from mmsr_lib.util import registry

log = logging.getLogger("mmsr.encoders")

ITEM_ENCODINGS = ("fast", "plain")
FEATURES = "features"  # the cache of VisualBERT's extractor output, when the joint one is invalid


class VLPTextInputs:
    """Every item's text tokenised once by the VLP's tokenizer (row 0 = the padding item)."""

    def __init__(self, vlp: VLPBackbone, texts: list[str]) -> None:
        tok = vlp.tokenize(texts)
        self.input_ids = tok["input_ids"]
        self.attention_mask = tok["attention_mask"]
        self.stats = dict(vlp.stats)

    def rows(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = ids.cpu()
        return self.input_ids[idx], self.attention_mask[idx]


class ItemImages:
    """The item -> image-row map and the memory-mapped image store (opened once)."""

    def __init__(self, data: Any) -> None:
        if data.image_path is None:
            raise ValueError(
                f"data set {data.name!r} has no images (no images.npy); a VLP item encoder "
                "needs text and images. Use model.item_encoder=text for text-only data."
            )
        self.store = ImageStore(data.image_path)
        self.rows_of_item = np.asarray(data.item_image)
        # data set identity (TSVs, image store shape, meta incl. generator seed), not the path
        self.fingerprint = data.source_fingerprint

    def image_rows(self, ids: torch.Tensor) -> np.ndarray:
        return self.rows_of_item[ids.cpu().numpy()]

    def images(self, ids: torch.Tensor) -> np.ndarray:
        return self.store.get(self.image_rows(ids))


class _Branch:
    """One cacheable stream seen through `FrozenCache`'s branch interface.

    `FrozenCache` asks a branch for `encoder` (its `name`, `finetune`, `frozen_is_deterministic`,
    `cache_key()` and `parameters()`), `inputs` (hashed into the key: the tokenised texts, or
    the image rows and the store's fingerprint) and `frozen(ids)`: the stream's state at full
    text width. A joint stream is keyed by its texts; its images enter through `cache_key()`.
    """

    def __init__(self, owner: VLPItemEncoder, stream: str) -> None:
        self.owner, self.stream = owner, stream
        vlp = owner.vlp
        if stream == FEATURES:
            extractor = vlp.extractor
            if extractor is None:
                raise ValueError(f"{vlp.name} reads pixels; it has no visual features to cache")
            self.name, self.finetune = f"{vlp.name}/{extractor.name}", extractor.finetune
            self.inputs: Any = owner.images
        else:
            self.name, self.finetune = f"{vlp.name}/{stream}", vlp.finetune
            self.inputs = owner.images if stream == IMAGE else owner.text
        self.kind = stream

    @property
    def encoder(self) -> _Branch:
        return self

    @property
    def frozen_is_deterministic(self) -> bool:
        if self.stream == FEATURES:
            return True
        return self.owner.vlp.stream_reason(self.stream) is None

    def cache_key(self) -> str:
        vlp = self.owner.vlp
        if self.stream == FEATURES:
            key = vlp.extractor.cache_key()
        else:
            key = vlp.stream_key(self.stream)
        if self.stream == JOINT:  # keyed by texts in FrozenCache; the images enter here
            images = self.owner.images
            rows = np.ascontiguousarray(images.rows_of_item).tobytes()
            key += f":{images.fingerprint}:{hashlib.sha256(rows).hexdigest()[:16]}"
        return key

    def parameters(self) -> Iterator[nn.Parameter]:
        return self.owner.vlp.parameters()

    def frozen(self, ids: torch.Tensor) -> torch.Tensor:
        if self.stream == FEATURES:
            feats, mask = self.owner.visual(ids)
            return pack(feats, mask)
        input_ids, mask = self.owner.text.rows(ids)
        visual = self.owner.visual(ids) if self.stream != TEXT else None
        return self.owner.vlp.frozen(self.stream, input_ids.to(ids.device), mask.to(ids.device),
                                     visual)


class VLPItemEncoder(ContentItemEncoder):
    """text + image -> a VLP -> LayerNorm, dropout, Linear, LayerNorm -> [dim].

    Padding (id 0) maps to the zero vector without running the model in fast mode.
    """

    def __init__(self, n_items: int, dim: int, vlp: VLPBackbone, texts: list[str],
                 images: ItemImages, dropout: float = 0.1, item_encoding: str = "fast") -> None:
        super().__init__()
        if item_encoding not in ITEM_ENCODINGS:
            raise ValueError(f"unknown model.item_encoding {item_encoding!r}; choose "
                             f"{ITEM_ENCODINGS}")
        self.n_items, self.dim = n_items, dim
        self.vlp = vlp
        self.item_encoding = item_encoding
        self.text = VLPTextInputs(vlp, texts)
        self.images = images
        self.head = nn.Sequential(nn.LayerNorm(vlp.out_dim), nn.Dropout(dropout),
                                  nn.Linear(vlp.out_dim, dim), nn.LayerNorm(dim))
        self.regions: RegionFeatures | None = None
        if isinstance(vlp.extractor, RegionExtractor):
            self.regions = RegionFeatures(vlp.extractor, images.store)
        self.caches: dict[str, FrozenCache] = {}

    def encoder_parameters(self) -> list[nn.Parameter]:
        return self.vlp.pretrained_parameters()

    # -- inputs ------------------------------------------------------------------------------------
    def visual(self, ids: torch.Tensor) -> Any:
        """What the VLP's image side reads for `ids`: pixels, or VisualBERT's (features, mask)."""
        device = ids.device
        extractor: VisualExtractor | None = self.vlp.extractor
        if extractor is None:
            return self.vlp.pixels(self.images.images(ids)).to(device)
        cache = self.caches.get(FEATURES)
        if cache is not None:
            state = cache.get(ids).to(device)
            return state[..., :-1], state[..., -1] > 0.5
        if self.regions is not None:
            feats, mask = self.regions.get(self.images.image_rows(ids))
            return feats.to(device), mask.to(device)
        feats, mask = extractor.extract(self.images.images(ids))
        return feats.to(device), mask.to(device)

    # -- encoding ----------------------------------------------------------------------------------
    def encode(self, ids: torch.Tensor) -> torch.Tensor:
        """Vectors for real item ids (no padding handling); see `MultiModalItemEncoder.encode`
        for the 1/sqrt(dim) scale (item vectors start at the norm of ID embeddings)."""
        device = ids.device
        input_ids, mask = self.text.rows(ids)
        width = input_ids.shape[1]
        if not self.plain and len(mask):  # drop the columns that are padding in every row
            width = max(1, int(mask.sum(1).max()))
        input_ids, mask = input_ids[:, :width].to(device), mask[:, :width].to(device)
        visual = None
        states = {}
        for stream in self.vlp.streams:
            cache = self.caches.get(stream)
            if cache is not None:
                states[stream] = self.vlp.trim(stream, cache.get(ids).to(device), width)
                continue
            if visual is None and stream != TEXT:
                visual = self.visual(ids)
            states[stream] = self.vlp.frozen(stream, input_ids, mask, visual)
        return self.head(self.vlp.top(states)) * self.dim**-0.5

    def length_groups(self, ids: torch.Tensor) -> list[torch.Tensor]:
        """`groups_by_length` of the text (no batch statistics anywhere, so grouping is exact)."""
        return self.groups_by_length(ids, self.text.attention_mask)

    # -- frozen-prefix caches ------------------------------------------------------------------------
    def branches(self) -> list[_Branch]:
        """The cacheable streams (and VisualBERT's extractor features) as cache branches."""
        out = [_Branch(self, s) for s in self.vlp.streams]
        if self.vlp.extractor is not None:
            out.append(_Branch(self, FEATURES))
        return out

    def enable_cache(self, mode: str = "auto", batch_size: int = 256,
                     cache_dir: str | Path | None = None, dtype: str = "float32") -> list[str]:
        """Cache every stream whose frozen part is deterministic; returns the cached streams.

        mode="auto" logs why a stream is skipped (full fine-tuning, VisualBERT's new visual
        projection); mode="require" raises instead. A VisualBERT stream that cannot be cached
        falls back to caching the extractor's features. `cache_dir` / `dtype` as for
        `FrozenCache.build` (shared across runs on disk).
        """
        if self.plain:
            raise ValueError("model.item_encoding=plain is the uncached reference; use fast")
        built: list[str] = []
        streams = self.branches()
        main = [b for b in streams if b.stream != FEATURES]
        for b in main:
            reason = self.vlp.stream_reason(b.stream)
            if reason:
                if mode == "require":
                    raise ValueError(f"cannot cache the frozen {b.stream} stream of "
                                     f"{self.vlp.name}: {reason}")
                log.info("no frozen-prefix cache for %s: %s", b.name, reason)
                continue
            self.caches[b.stream] = FrozenCache.build(b, self.n_items, batch_size=batch_size,
                                                      cache_dir=cache_dir, dtype=dtype)
            built.append(b.stream)
        if self.vlp.extractor is not None and JOINT not in self.caches:
            feats = next(b for b in streams if b.stream == FEATURES)
            self.caches[FEATURES] = FrozenCache.build(feats, self.n_items, batch_size=batch_size,
                                                      cache_dir=cache_dir, dtype=dtype)
            built.append(FEATURES)
        return built

    def extra_repr(self) -> str:
        return f"vlp={self.vlp.display_name!r}, item_encoding={self.item_encoding}"


# -- building from a run configuration -----------------------------------------------------------------
def _store_image_size(data: Any) -> int:
    if data.image_path is None:
        raise ValueError(f"data set {data.name!r} has no images (no images.npy); a VLP item "
                         "encoder needs text and images. Use model.item_encoder=text")
    return int(np.load(data.image_path, mmap_mode="r").shape[1])


def build_vlp_item_encoder(cfg: Any, data: Any, visual_input: str | None = None
                           ) -> VLPItemEncoder:
    """The item encoder of ``model.item_encoder=vlp`` for the items of `data` (cfg resolved).

    Reads model.vlp, finetune, top_blocks, text_max_tokens (None = min(50, the model's
    positions)), dim, dropout, item_encoding and ``model.visual_input`` (VisualBERT only; the
    `visual_input` argument overrides it).
    """
    m = cfg.model
    if m.vlp is None:
        raise ValueError("model.item_encoder=vlp needs model.vlp (e.g. tiny-flava, flava-full; "
                         f"choices: {registry.names('vlp')})")
    name = registry.canonical("vlp", m.vlp)
    if visual_input is None:
        visual_input = getattr(m, "visual_input", None)
    vlp = create_vlp(name, image_size=_store_image_size(data), finetune=m.finetune or "top",
                     top_blocks=m.top_blocks, max_tokens=m.text_max_tokens,
                     visual_input=visual_input)
    return VLPItemEncoder(data.n_items, m.dim, vlp, data.item_text, ItemImages(data),
                          dropout=m.dropout, item_encoding=m.item_encoding or "fast")


registry.register("item_encoder", "vlp", aliases=("VLP",), label="VLP",
                  uses=("vlp", "encoders"),
                  description="a vision-language model (model.vlp: CLIP, GroupViT, ViLT, "
                              "VisualBERT, FLAVA) as the item encoder")(build_vlp_item_encoder)


def _hub_missing(repo: str) -> str | None:
    return None if zoo.cached_snapshot(repo) is not None else (
        f"{repo!r} is not in the local Hugging Face cache; {zoo.download_hint(repo)}")


def _register_vlps() -> None:
    for spec in SPECS.values():
        if spec.pretrained:
            availability = functools.partial(_hub_missing, spec.repo)
        else:
            availability = functools.partial(offline_weights.available_offline, "minilm-l6")
        registry.add(registry.Entry(
            "vlp", spec.name, functools.partial(create_vlp, spec.name), spec.aliases,
            spec.description, weights="pretrained" if spec.pretrained else "random",
            availability=availability, meta={"family": spec.family, "repo": spec.repo}))


_register_vlps()
