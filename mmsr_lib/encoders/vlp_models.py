"""The five vision-language models of paper Table VI, split for top-k fine-tuning and caching.

Three paradigms (paper Sec. 6.1), each with the blocks the paper fine-tunes:

=============  =======================================  ==============================================
model          paradigm                                 trains under ``finetune="top"``
=============  =======================================  ==============================================
CLIP           two-stream, shallow fusion               top 2 blocks + final norm of each tower
GroupViT       two-stream, shallow fusion               top 2 blocks + final norm of each tower
ViLT           single-stream, deep fusion (patches)     last 4 blocks + final norm + pooler
VisualBERT     single-stream, deep fusion (features)    last 4 blocks + pooler
FLAVA          two-stream + deep fusion                 top 2 blocks of each unimodal encoder, both
                                                        projections into the fusion, all fusion layers
=============  =======================================  ==============================================

For the shallow models the two pooled outputs are concatenated (the item encoder projects them
to the recommender's width); the others hand over their fusion's pooled output. Heads that the
item vector never uses (contrastive projections, logit scale, unused poolers and norms) are
dropped, so every parameter that trains receives a gradient. ``finetune="full"`` trains every
kept parameter (VisualBERT's visual extractor excepted: see `regions`).

Every model is split into *streams* whose frozen lower part is a function of one item alone:

    forward(text, image) == top({stream: frozen(stream, text, image) for stream in streams})

two-stream models have a "text" and an "image" stream, single-stream ones one "joint" stream
(text and image tokens through the lower blocks together). `frozen` packs a token-validity
channel after the hidden states of text and joint streams, so a cached state is
self-contained. `FrozenCache` stores `frozen`'s output per item when it is deterministic.

Sizes: ``tiny-*`` are small random-init configs built from the Hugging Face config classes
(labelled "(random init)"); their text side reads MiniLM's offline WordPiece vocabulary (the
BERT-uncased vocabulary that ViLT, VisualBERT and FLAVA use). CLIP and GroupViT use a BPE
vocabulary that no offline package ships, so tiny-clip / tiny-groupvit build their (random
init) text tower over the WordPiece vocabulary instead, with [CLS] / [SEP] as start / end of
text. The paper-size names load the real checkpoints from the local Hugging Face cache only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmsr_lib.encoders import offline_weights, zoo
from mmsr_lib.encoders.finetune import PartlyFrozen, resolve_top_blocks
from mmsr_lib.encoders.regions import (
    CLIP_MEAN,
    CLIP_STD,
    Pixels,
    VisualExtractor,
    check_visual_input,
    create_visual_extractor,
    pixel_stats,
)
from mmsr_lib.encoders.text import EMPTY_TEXT

log = logging.getLogger("mmsr.encoders")

DEFAULT_MAX_TOKENS = 50  # the paper's title length (capped by a model's position table)
_KEY_VERSION = "vlp-v1"
TEXT, IMAGE, JOINT = "text", "image", "joint"


def pack(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, T, D] states + [B, T] validity -> [B, T, D + 1] (the mask as a last channel)."""
    return torch.cat([hidden, mask.unsqueeze(-1).to(hidden.dtype)], -1)


def unpack(state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of `pack`: (states [B, T, D], mask [B, T] long)."""
    return state[..., :-1], (state[..., -1] > 0.5).long()


class VLPBackbone(PartlyFrozen):
    """What every VLP gives the item encoder: tokenisation, per-stream frozen parts, the top.

    Subclasses set `backbone` (an `nn.ModuleDict` of the parts that are used), the tower splits,
    and implement `frozen`, `top`, `_trainable` and `_top_prefixes`.
    """

    family: str = ""
    streams: tuple[str, ...] = ()
    default_top: int = 2
    out_dim: int

    def _init_common(self, *, name: str, display_name: str, pretrained: bool, tokenizer: Any,
                     max_tokens: int | None, max_positions: int, pixels: Pixels | None) -> None:
        self.name, self.display_name, self.pretrained = name, display_name, pretrained
        self.tokenizer = tokenizer
        self.max_tokens = _check_max_tokens(max_tokens, max_positions, name)
        self.pixels = pixels
        self.stats = {"texts": 0, "empty_text": 0, "truncated": 0}
        self._tokenizer_digest: str | None = None
        self._fresh: list[nn.Module] = []  # new, randomly initialised parts (never "pretrained")
        self.extractor: VisualExtractor | None = None  # VisualBERT's frozen visual-token maker

    # -- fine-tuning -------------------------------------------------------------------------------
    def _apply_finetune(self, finetune: str) -> None:
        """requires_grad and eval mode per the paper's rule (`_trainable`); fresh parts train."""
        modules, params = self._trainable()
        self._setup_finetune(self.backbone, modules + self._fresh, finetune)
        for p in params:
            p.requires_grad_(True)

    def set_finetune(self, finetune: str) -> None:
        self._apply_finetune(finetune)

    def _trainable(self) -> tuple[list[nn.Module], list[nn.Parameter]]:  # pragma: no cover
        raise NotImplementedError

    def pretrained_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters that came with the checkpoint (the "top" learning rate)."""
        fresh = {id(p) for m in self._fresh for p in m.parameters()}
        return [p for p in self.backbone.parameters() if p.requires_grad and id(p) not in fresh]

    # -- tokenisation -------------------------------------------------------------------------------
    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """input_ids / attention_mask [N, max_tokens]; rows independent of each other.

        The conventions of `TextEncoder.tokenize`: missing or blank text becomes "[empty]",
        longer texts are truncated (special tokens included); both are counted in `stats`.
        """
        if isinstance(texts, str):
            raise TypeError("tokenize expects a list of texts; wrap a single text as [text]")
        clean, empty = [], 0
        for i, t in enumerate(texts):
            if t is None or (isinstance(t, float) and math.isnan(t)):
                t = ""
            if not isinstance(t, str):
                raise TypeError(f"text #{i} is a {type(t).__name__} ({t!r}), expected str")
            if not t.strip():
                t, empty = EMPTY_TEXT, empty + 1
            clean.append(t)
        if not clean:
            z = torch.zeros(0, self.max_tokens, dtype=torch.long)
            return {"input_ids": z, "attention_mask": z.clone()}
        full = self.tokenizer(clean, add_special_tokens=True, truncation=False, verbose=False)
        truncated = sum(len(ids) > self.max_tokens for ids in full["input_ids"])
        enc = self.tokenizer(clean, padding="max_length", truncation=True,
                             max_length=self.max_tokens, return_tensors="pt",
                             return_token_type_ids=False)
        self.stats["texts"] += len(clean)
        self.stats["empty_text"] += empty
        self.stats["truncated"] += truncated
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def tokenizer_digest(self) -> str:
        if self._tokenizer_digest is None:
            backend = getattr(self.tokenizer, "backend_tokenizer", None)
            spec = backend.to_str() if backend is not None else json.dumps(
                sorted(self.tokenizer.get_vocab().items()))
            h = hashlib.sha256(type(self.tokenizer).__name__.encode())
            h.update(spec.encode())
            self._tokenizer_digest = h.hexdigest()[:16]
        return self._tokenizer_digest

    # -- the split forward ---------------------------------------------------------------------------
    def frozen(self, stream: str, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               visual: Any) -> torch.Tensor:  # pragma: no cover - per family
        """The frozen lower part of `stream` for one batch of items."""
        raise NotImplementedError

    def top(self, states: dict[str, torch.Tensor]) -> torch.Tensor:  # pragma: no cover
        """The trainable part on the frozen states: one pooled vector [B, out_dim] per item."""
        raise NotImplementedError

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                visual: Any) -> torch.Tensor:
        return self.top({s: self.frozen(s, input_ids, attention_mask, visual)
                         for s in self.streams})

    def trim(self, stream: str, state: torch.Tensor, width: int) -> torch.Tensor:
        """A full-width frozen state with its text cut to `width` tokens (text comes first)."""
        if stream == TEXT:
            return state[:, :width]
        if stream == JOINT:
            return torch.cat([state[:, :width], state[:, self.max_tokens:]], 1)
        return state

    def stream_reason(self, stream: str) -> str | None:
        """Why `stream`'s frozen output cannot be cached (None when it can)."""
        if self.finetune == "full":
            return "finetune='full' trains every block, so nothing is frozen"
        return None

    # -- identity -----------------------------------------------------------------------------------
    def stream_key(self, stream: str) -> str:
        """Changes whenever the frozen output of `stream` for an item could change."""
        parts: dict[str, Any] = {"stream": stream, "family": type(self).__name__,
                                 "splits": self.splits()}
        if stream in (TEXT, JOINT):
            parts.update(tokenizer=self.tokenizer_digest(), max_tokens=self.max_tokens,
                         empty=EMPTY_TEXT)
        if stream in (IMAGE, JOINT):
            if self.pixels is not None:
                parts["pixels"] = self.pixels.identity()
            if self.extractor is not None:
                parts["extractor"] = self.extractor.cache_key()
        return self._cache_key("vlp", _KEY_VERSION, parts)

    def splits(self) -> dict[str, list[int]]:  # pragma: no cover - per family
        """{tower: [first trainable block, number of blocks]}."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        towers = ", ".join(f"{k} {n - s}/{n}" for k, (s, n) in self.splits().items())
        return (f"name={self.display_name!r}, family={self.family!r}, finetune={self.finetune}, "
                f"trainable blocks: {towers}, max_tokens={self.max_tokens}")


def _check_max_tokens(max_tokens: int | None, limit: int, name: str) -> int:
    """None = the paper's 50 capped by the model's position table; a value must fit it."""
    if max_tokens is None:
        return min(DEFAULT_MAX_TOKENS, limit)
    if not isinstance(max_tokens, int) or not 2 < max_tokens <= limit:
        raise ValueError(
            f"model.text_max_tokens={max_tokens!r} must be an int in 3..{limit} for {name} (its "
            f"position table holds {limit} tokens, special tokens included); set it lower, or "
            f"leave it None for min({DEFAULT_MAX_TOKENS}, {limit})"
        )
    return max_tokens


def _causal(config: Any, layers: nn.ModuleList, h: torch.Tensor, mask: torch.Tensor
            ) -> torch.Tensor:
    """CLIP-style text blocks: causal attention over the real tokens (as CLIPTextModel runs)."""
    from transformers.masking_utils import create_causal_mask

    m = create_causal_mask(config=config, inputs_embeds=h, attention_mask=mask, cache=None)
    for layer in layers:
        h = layer(h, m, is_causal=True)
    return h


def _bidirectional(config: Any, layers: nn.ModuleList, h: torch.Tensor,
                   mask: torch.Tensor | None, **kw: Any) -> torch.Tensor:
    """BERT/ViT-style blocks (tuple outputs) with a padding mask (None: every token is real)."""
    from transformers.masking_utils import create_bidirectional_mask

    if mask is None:
        m = None
    else:
        probe = h[:, :1] if kw.get("allow_is_bidirectional_skip") is False else h
        m = create_bidirectional_mask(config=config, inputs_embeds=probe, attention_mask=mask,
                                      **kw)
    for layer in layers:
        out = layer(h, m)
        h = out[0] if isinstance(out, tuple) else out
    return h


# -- two-stream, shallow fusion: CLIP and GroupViT ----------------------------------------------------
class _ShallowTwoStream(VLPBackbone):
    """A CLIP-style causal text tower + a vision tower; pooled outputs concatenated."""

    streams = (TEXT, IMAGE)
    family = "two-stream, shallow fusion"
    default_top = 2

    def _setup_text(self, model: nn.Module, tokenizer: Any, pixels: Pixels, *, name: str,
                    display_name: str, pretrained: bool, max_tokens: int | None,
                    top_blocks: int | None) -> None:
        """The common part of the two-tower models: identity, tokenizer, pixels, and the text
        tower split into frozen and top blocks (`self.backbone` starts here)."""
        text_model = model.text_model
        self._init_common(name=name, display_name=display_name, pretrained=pretrained,
                          tokenizer=tokenizer, max_tokens=max_tokens,
                          max_positions=int(text_model.config.max_position_embeddings),
                          pixels=pixels)
        self.backbone = nn.ModuleDict()
        self.text_config = text_model.config
        self.backbone["text_embeddings"] = text_model.embeddings
        self.backbone["text_layers"] = text_model.encoder.layers
        self.backbone["text_norm"] = text_model.final_layer_norm
        n = len(text_model.encoder.layers)
        self.text_split = n - resolve_top_blocks(top_blocks, n, self.default_top,
                                                 f"{self.name} text tower")

    def _text_frozen(self, input_ids: torch.Tensor, attention_mask: torch.Tensor
                     ) -> torch.Tensor:
        b = self.backbone
        h = b["text_embeddings"](input_ids=input_ids)
        h = _causal(self.text_config, b["text_layers"][: self.text_split], h, attention_mask)
        return pack(h, attention_mask)

    def _text_top(self, state: torch.Tensor) -> torch.Tensor:
        """Top blocks, final norm, the state of the end-of-text token (the last real one, as
        CLIP's `eos_token_id` / argmax pooling picks for well-formed tokenised text)."""
        b = self.backbone
        h, mask = unpack(state)
        h = _causal(self.text_config, b["text_layers"][self.text_split :], h, mask)
        h = b["text_norm"](h)
        last = (mask.sum(1) - 1).clamp_min(0)
        return h[torch.arange(len(h), device=h.device), last]

    def top(self, states: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([self._text_top(states[TEXT]), self._image_top(states[IMAGE])], -1)

    def _image_top(self, state: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def _text_trainable(self) -> list[nn.Module]:
        return [*self.backbone["text_layers"][self.text_split :], self.backbone["text_norm"]]

    def _text_prefixes(self) -> list[str]:
        n = len(self.backbone["text_layers"])
        return [f"text_layers.{i}." for i in range(self.text_split, n)] + ["text_norm."]


class ClipVLP(_ShallowTwoStream):
    """CLIP: pooled text (end-of-text token) and image (class token) states, concatenated."""

    def __init__(self, model: nn.Module, tokenizer: Any, pixels: Pixels, *, name: str,
                 display_name: str, pretrained: bool, max_tokens: int | None = None,
                 finetune: str = "top", top_blocks: int | None = None) -> None:
        super().__init__()
        text_cfg = model.text_model.config
        self._setup_text(model, tokenizer, pixels, name=name, display_name=display_name,
                         pretrained=pretrained, max_tokens=max_tokens, top_blocks=top_blocks)
        vm = model.vision_model
        self.backbone["image_embeddings"] = vm.embeddings
        self.backbone["image_pre_norm"] = vm.pre_layrnorm
        self.backbone["image_layers"] = vm.encoder.layers
        self.backbone["image_norm"] = vm.post_layernorm
        n = len(vm.encoder.layers)
        self.image_split = n - resolve_top_blocks(top_blocks, n, self.default_top,
                                                  f"{name} vision tower")
        self.out_dim = int(text_cfg.hidden_size) + int(vm.config.hidden_size)
        self._apply_finetune(finetune)

    def frozen(self, stream: str, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               visual: Any) -> torch.Tensor:
        if stream == TEXT:
            return self._text_frozen(input_ids, attention_mask)
        b = self.backbone
        h = b["image_pre_norm"](b["image_embeddings"](visual))
        for layer in b["image_layers"][: self.image_split]:
            h = layer(h, None)
        return h

    def _image_top(self, state: torch.Tensor) -> torch.Tensor:
        h = state
        for layer in self.backbone["image_layers"][self.image_split :]:
            h = layer(h, None)
        return self.backbone["image_norm"](h[:, 0])

    def _trainable(self) -> tuple[list[nn.Module], list[nn.Parameter]]:
        b = self.backbone
        return [*self._text_trainable(), *b["image_layers"][self.image_split :],
                b["image_norm"]], []

    def _top_prefixes(self) -> list[str]:
        n = len(self.backbone["image_layers"])
        return self._text_prefixes() + [f"image_layers.{i}." for i in range(self.image_split, n)] \
            + ["image_norm."]

    def splits(self) -> dict[str, list[int]]:
        return {"text": [self.text_split, len(self.backbone["text_layers"])],
                "image": [self.image_split, len(self.backbone["image_layers"])]}


class GroupViTVLP(_ShallowTwoStream):
    """GroupViT: CLIP-style text tower + the grouping vision transformer (mean of its groups).

    The vision blocks are counted across stages; a stage's grouping block (token assignment)
    and the next stage's group tokens run after the stage's last block, so they train exactly
    when that block does. The frozen state at a block boundary is the stage's [tokens, group
    tokens] sequence.
    """

    def __init__(self, model: nn.Module, tokenizer: Any, pixels: Pixels, *, name: str,
                 display_name: str, pretrained: bool, max_tokens: int | None = None,
                 finetune: str = "top", top_blocks: int | None = None) -> None:
        super().__init__()
        text_cfg = model.text_model.config
        self._setup_text(model, tokenizer, pixels, name=name, display_name=display_name,
                         pretrained=pretrained, max_tokens=max_tokens, top_blocks=top_blocks)
        vm = model.vision_model
        self.backbone["image_embeddings"] = vm.embeddings
        self.backbone["image_stages"] = vm.encoder.stages
        self.backbone["image_norm"] = vm.layernorm
        self.blocks = [(s, j) for s, st in enumerate(vm.encoder.stages) for j in range(st.depth)]
        if any(st.depth == 0 for st in vm.encoder.stages):
            raise ValueError(f"{name}: a GroupViT stage without blocks cannot be split")
        n = len(self.blocks)
        self.image_split = n - resolve_top_blocks(top_blocks, n, self.default_top,
                                                  f"{name} vision tower")
        self.out_dim = int(text_cfg.hidden_size) + int(vm.config.hidden_size)
        self._apply_finetune(finetune)

    def _run_image(self, h: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        """Blocks lo..hi-1 (global order) on the state before block lo."""
        stages = self.backbone["image_stages"]
        if lo == 0 and hi > 0:
            h = self._enter(0, h, None)
        for b in range(lo, hi):
            s, j = self.blocks[b]
            h = stages[s].layers[j](h, attention_mask=None)
            if j == stages[s].depth - 1:  # the stage ends: group, then enter the next stage
                x, group = stages[s].split_x(h)
                if stages[s].downsample is not None:
                    x, _ = stages[s].downsample(x, group)
                h = self._enter(s + 1, x, group) if s + 1 < len(stages) else x
        return h

    def _enter(self, s: int, x: torch.Tensor, prev_group: torch.Tensor | None) -> torch.Tensor:
        """Stage s's input: the tokens with its group tokens appended (as GroupViTStage does)."""
        stage = self.backbone["image_stages"][s]
        if not stage.with_group_token:
            return x
        group = stage.group_token.expand(x.size(0), -1, -1)
        if stage.group_projector is not None:
            group = group + stage.group_projector(prev_group)
        return stage.concat_x(x, group)

    def frozen(self, stream: str, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               visual: Any) -> torch.Tensor:
        if stream == TEXT:
            return self._text_frozen(input_ids, attention_mask)
        return self._run_image(self.backbone["image_embeddings"](visual), 0, self.image_split)

    def _image_top(self, state: torch.Tensor) -> torch.Tensor:
        h = self._run_image(state, self.image_split, len(self.blocks))
        return self.backbone["image_norm"](h).mean(1)

    def _transitions(self) -> list[int]:
        """Stages whose grouping runs in the top part (their last block trains)."""
        last = {s: i for i, (s, _) in enumerate(self.blocks)}
        return [s for s, i in last.items() if i >= self.image_split]

    def _trainable(self) -> tuple[list[nn.Module], list[nn.Parameter]]:
        stages = self.backbone["image_stages"]
        modules = self._text_trainable()
        modules += [stages[s].layers[j] for s, j in self.blocks[self.image_split :]]
        params = []
        for s in self._transitions():
            if stages[s].downsample is not None:
                modules.append(stages[s].downsample)
            if s + 1 < len(stages) and stages[s + 1].with_group_token:
                params.append(stages[s + 1].group_token)
                if stages[s + 1].group_projector is not None:
                    modules.append(stages[s + 1].group_projector)
        if self.image_split == 0 and stages[0].with_group_token:
            params.append(stages[0].group_token)
        return [*modules, self.backbone["image_norm"]], params

    def _top_prefixes(self) -> list[str]:
        stages = self.backbone["image_stages"]
        out = self._text_prefixes() + ["image_norm."]
        out += [f"image_stages.{s}.layers.{j}." for s, j in self.blocks[self.image_split :]]
        for s in self._transitions():
            out.append(f"image_stages.{s}.downsample.")
            if s + 1 < len(stages):
                out += [f"image_stages.{s + 1}.group_token", f"image_stages.{s + 1}.group_proj"]
        if self.image_split == 0:
            out.append("image_stages.0.group_token")
        return out

    def splits(self) -> dict[str, list[int]]:
        return {"text": [self.text_split, len(self.backbone["text_layers"])],
                "image": [self.image_split, len(self.blocks)]}


# -- single-stream, deep fusion: ViLT and VisualBERT -------------------------------------------------
class _SingleStream(VLPBackbone):
    """Text tokens and visual tokens through one transformer; the last 4 blocks train."""

    streams = (JOINT,)
    family = "single-stream, deep fusion"
    default_top = 4

    def _setup_layers(self, layers: nn.ModuleList, top_blocks: int | None) -> None:
        self.backbone["layers"] = layers
        n = len(layers)
        self.split = n - resolve_top_blocks(top_blocks, n, self.default_top, self.name)

    def splits(self) -> dict[str, list[int]]:
        return {"joint": [self.split, len(self.backbone["layers"])]}


class ViltVLP(_SingleStream):
    """ViLT: word embeddings and 32-px patch embeddings in one ViT; pooled [CLS] (its pooler)."""

    def __init__(self, model: nn.Module, tokenizer: Any, pixels: Pixels, *, name: str,
                 display_name: str, pretrained: bool, max_tokens: int | None = None,
                 finetune: str = "top", top_blocks: int | None = None) -> None:
        super().__init__()
        cfg = model.config
        self.config = cfg
        self._init_common(name=name, display_name=display_name, pretrained=pretrained,
                          tokenizer=tokenizer, max_tokens=max_tokens,
                          max_positions=int(cfg.max_position_embeddings), pixels=pixels)
        if pixels.size != cfg.image_size:
            raise ValueError(f"{name} is built for {cfg.image_size}-px images, not {pixels.size}")
        self.backbone = nn.ModuleDict({"embeddings": model.embeddings, "norm": model.layernorm,
                                       "pooler": model.pooler})
        self._setup_layers(model.encoder.layer, top_blocks)
        self.out_dim = int(cfg.hidden_size)
        self._apply_finetune(finetune)

    def _embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ViltEmbeddings for full square images, patches in raster order.

        ViltEmbeddings.visual_embed draws a random permutation of the patches (torch.multinomial
        without replacement) even when it keeps them all; attention does not depend on the order,
        so keeping raster order computes the same function without consuming the RNG.
        """
        emb = self.backbone["embeddings"]
        text = emb.text_embeddings(input_ids=input_ids)
        text = text + emb.token_type_embeddings(torch.zeros_like(input_ids))
        x = emb.patch_embeddings(pixels).flatten(2).transpose(1, 2)
        cls = emb.cls_token.expand(len(x), -1, -1)
        image = emb.dropout(torch.cat([cls, x], 1) + emb.position_embeddings)
        image = image + emb.token_type_embeddings(
            torch.ones(image.shape[:2], dtype=torch.long, device=image.device))
        mask = torch.cat([attention_mask, attention_mask.new_ones(image.shape[:2])], 1)
        return torch.cat([text, image], 1), mask

    def frozen(self, stream: str, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               visual: Any) -> torch.Tensor:
        h, mask = self._embed(input_ids, attention_mask, visual)
        h = _bidirectional(self.config, self.backbone["layers"][: self.split], h, mask)
        return pack(h, mask)

    def top(self, states: dict[str, torch.Tensor]) -> torch.Tensor:
        h, mask = unpack(states[JOINT])
        h = _bidirectional(self.config, self.backbone["layers"][self.split :], h, mask)
        return self.backbone["pooler"](self.backbone["norm"](h))

    def _trainable(self) -> tuple[list[nn.Module], list[nn.Parameter]]:
        b = self.backbone
        return [*b["layers"][self.split :], b["norm"], b["pooler"]], []

    def _top_prefixes(self) -> list[str]:
        n = len(self.backbone["layers"])
        return [f"layers.{i}." for i in range(self.split, n)] + ["norm.", "pooler."]


class VisualBertVLP(_SingleStream):
    """VisualBERT: BERT over [text tokens, visual feature tokens]; pooled [CLS] (its pooler).

    The visual tokens come from a frozen extractor (`regions`), region / grid / patch-emb /
    patch-ViT. When its width differs from the checkpoint's `visual_embedding_dim` (CLIP-ViT's
    768 vs the detector's 2048), a new visual projection is made (random init, labelled, trained
    in every mode at the downstream learning rate); the lower blocks then see a changing input,
    so only the extractor's output is cached.
    """

    def __init__(self, model: nn.Module, tokenizer: Any, extractor: VisualExtractor, *,
                 name: str, display_name: str, pretrained: bool, max_tokens: int | None = None,
                 finetune: str = "top", top_blocks: int | None = None) -> None:
        super().__init__()
        cfg = model.config
        self.config = cfg
        if getattr(cfg, "bypass_transformer", False):
            raise ValueError(f"{name}: VisualBERT with bypass_transformer=True is not supported")
        self._init_common(name=name, display_name=display_name, pretrained=pretrained,
                          tokenizer=tokenizer, max_tokens=max_tokens,
                          max_positions=int(cfg.max_position_embeddings), pixels=None)
        self.extractor = extractor
        emb = model.embeddings
        if emb.visual_projection.in_features != extractor.out_dim:
            emb.visual_projection = nn.Linear(extractor.out_dim, int(cfg.hidden_size))
            self._fresh.append(emb.visual_projection)
            log.info("%s: new visual projection %d -> %d for %s (random init, trained)", name,
                     extractor.out_dim, cfg.hidden_size, extractor.display_name)
        self.backbone = nn.ModuleDict({"embeddings": emb, "pooler": model.pooler})
        self._setup_layers(model.encoder.layer, top_blocks)
        self.out_dim = int(cfg.hidden_size)
        self._apply_finetune(finetune)

    @property
    def visual_input(self) -> str:
        return self.extractor.kind

    def stream_reason(self, stream: str) -> str | None:
        if self._fresh:
            return ("its new visual projection trains, so the lower blocks' input changes; "
                    "only the extractor's features are cached")
        return super().stream_reason(stream)

    def frozen(self, stream: str, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               visual: Any) -> torch.Tensor:
        feats, vmask = visual
        h = self.backbone["embeddings"](input_ids=input_ids, visual_embeds=feats)
        mask = torch.cat([attention_mask, vmask.to(attention_mask.dtype)], 1)
        h = _bidirectional(self.config, self.backbone["layers"][: self.split], h, mask,
                           allow_is_bidirectional_skip=False)
        return pack(h, mask)

    def top(self, states: dict[str, torch.Tensor]) -> torch.Tensor:
        h, mask = unpack(states[JOINT])
        h = _bidirectional(self.config, self.backbone["layers"][self.split :], h, mask,
                           allow_is_bidirectional_skip=False)
        return self.backbone["pooler"](h)

    def _trainable(self) -> tuple[list[nn.Module], list[nn.Parameter]]:
        return [*self.backbone["layers"][self.split :], self.backbone["pooler"]], []

    def _top_prefixes(self) -> list[str]:
        n = len(self.backbone["layers"])
        fresh = ["embeddings.visual_projection."] if self._fresh else []
        return [f"layers.{i}." for i in range(self.split, n)] + ["pooler."] + fresh


# -- two-stream + deep fusion: FLAVA -----------------------------------------------------------------
class FlavaVLP(VLPBackbone):
    """FLAVA: text and image encoders, then a multimodal encoder over both (its pooled [CLS]).

    As FlavaModel does, the fusion reads the unimodal encoders' last hidden states before their
    final norms, so those norms, the unimodal poolers and the image mask token (for masked image
    modelling) are not used (and not kept).
    """

    streams = (TEXT, IMAGE)
    family = "two-stream, deep fusion"
    default_top = 2

    def __init__(self, model: nn.Module, tokenizer: Any, pixels: Pixels, *, name: str,
                 display_name: str, pretrained: bool, max_tokens: int | None = None,
                 finetune: str = "top", top_blocks: int | None = None) -> None:
        super().__init__()
        tm, im = model.text_model, model.image_model
        im.embeddings.mask_token = None  # for masked image modelling only: never used here
        self.text_config = tm.config
        self._init_common(name=name, display_name=display_name, pretrained=pretrained,
                          tokenizer=tokenizer, max_tokens=max_tokens,
                          max_positions=int(tm.config.max_position_embeddings), pixels=pixels)
        self.backbone = nn.ModuleDict({
            "text_embeddings": tm.embeddings, "text_layers": tm.encoder.layer,
            "image_embeddings": im.embeddings, "image_layers": im.encoder.layer,
            "text_to_mm": model.text_to_mm_projection,
            "image_to_mm": model.image_to_mm_projection, "multimodal": model.multimodal_model,
        })
        nt, ni = len(tm.encoder.layer), len(im.encoder.layer)
        self.text_split = nt - resolve_top_blocks(top_blocks, nt, 2, f"{name} text encoder")
        self.image_split = ni - resolve_top_blocks(top_blocks, ni, 2, f"{name} image encoder")
        if model.multimodal_model.pooler is None:
            raise ValueError(f"{name}: the multimodal encoder has no pooler")
        self.out_dim = int(model.multimodal_model.config.hidden_size)
        self._apply_finetune(finetune)

    def frozen(self, stream: str, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               visual: Any) -> torch.Tensor:
        b = self.backbone
        if stream == TEXT:
            h = b["text_embeddings"](input_ids=input_ids)
            h = _bidirectional(self.text_config, b["text_layers"][: self.text_split], h,
                               attention_mask)
            return pack(h, attention_mask)
        h = b["image_embeddings"](visual)
        return _bidirectional(None, b["image_layers"][: self.image_split], h, None)

    def top(self, states: dict[str, torch.Tensor]) -> torch.Tensor:
        b = self.backbone
        text, mask = unpack(states[TEXT])
        text = _bidirectional(self.text_config, b["text_layers"][self.text_split :], text, mask)
        image = _bidirectional(None, b["image_layers"][self.image_split :], states[IMAGE], None)
        fused = torch.cat([b["image_to_mm"](image), b["text_to_mm"](text)], 1)
        n_image = image.shape[1] + int(b["multimodal"].use_cls_token)
        mm_mask = torch.cat([mask.new_ones(len(mask), n_image), mask], 1)
        return b["multimodal"](fused, attention_mask=mm_mask).pooler_output

    def _trainable(self) -> tuple[list[nn.Module], list[nn.Parameter]]:
        b = self.backbone
        return [*b["text_layers"][self.text_split :], *b["image_layers"][self.image_split :],
                b["text_to_mm"], b["image_to_mm"], b["multimodal"]], []

    def _top_prefixes(self) -> list[str]:
        b = self.backbone
        return [f"text_layers.{i}." for i in range(self.text_split, len(b["text_layers"]))] + \
            [f"image_layers.{i}." for i in range(self.image_split, len(b["image_layers"]))] + \
            ["text_to_mm.", "image_to_mm.", "multimodal."]

    def splits(self) -> dict[str, list[int]]:
        b = self.backbone
        return {"text": [self.text_split, len(b["text_layers"])],
                "image": [self.image_split, len(b["image_layers"])]}


# -- construction ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class VLPSpec:
    """One registered VLP: its family, where its weights come from, and how to describe it."""

    name: str
    family: str  # clip | groupvit | vilt | visualbert | flava
    repo: str | None  # the Hugging Face checkpoint; None = tiny random-init config
    aliases: tuple[str, ...]
    description: str

    @property
    def pretrained(self) -> bool:
        return self.repo is not None


_TINY_DOC = "64 wide, 2 heads, 8-px patches at the store's image size (random init)"
SPECS: dict[str, VLPSpec] = {s.name: s for s in (
    VLPSpec("tiny-clip", "clip", None, (),
            f"CLIP, 4 + 4 blocks, {_TINY_DOC}; text over MiniLM's WordPiece vocabulary (no "
            "offline BPE vocabulary)"),
    VLPSpec("tiny-groupvit", "groupvit", None, (),
            f"GroupViT, 4 text blocks + 2 + 2 grouped vision blocks (8 group tokens -> 4 "
            f"groups), {_TINY_DOC}; text over MiniLM's WordPiece vocabulary"),
    VLPSpec("tiny-vilt", "vilt", None, (),
            f"ViLT, 6 blocks, 40 text positions like ViLT's, {_TINY_DOC}"),
    VLPSpec("tiny-visualbert", "visualbert", None, (),
            "VisualBERT, 6 blocks x 64, 2 heads (random init), fed by a tiny random-init visual "
            "extractor (model.visual_input: grid by default, region, patch-emb, patch-vit)"),
    VLPSpec("tiny-flava", "flava", None, (),
            f"FLAVA, 4 text + 4 image blocks + 2 fusion blocks, {_TINY_DOC}"),
    VLPSpec("clip-vit-base-patch32", "clip", "openai/clip-vit-base-patch32",
            ("CLIP", "openai/clip-vit-base-patch32"),
            "CLIP ViT-B/32 (openai/clip-vit-base-patch32, local HF cache)"),
    VLPSpec("groupvit-gcc-yfcc", "groupvit", "nvidia/groupvit-gcc-yfcc",
            ("GroupViT", "nvidia/groupvit-gcc-yfcc"),
            "GroupViT (nvidia/groupvit-gcc-yfcc, local HF cache)"),
    VLPSpec("vilt-b32-mlm", "vilt", "dandelin/vilt-b32-mlm", ("ViLT", "dandelin/vilt-b32-mlm"),
            "ViLT-B/32 (dandelin/vilt-b32-mlm, local HF cache); at most 40 text tokens"),
    VLPSpec("visualbert-vqa-coco-pre", "visualbert", "uclanlp/visualbert-vqa-coco-pre",
            ("VisualBERT", "uclanlp/visualbert-vqa-coco-pre"),
            "VisualBERT (uclanlp/visualbert-vqa-coco-pre, local HF cache) with a pretrained "
            "extractor: ResNet-50 grid (default), COCO Faster R-CNN regions or CLIP-ViT patches"),
    VLPSpec("flava-full", "flava", "facebook/flava-full", ("FLAVA", "facebook/flava-full"),
            "FLAVA (facebook/flava-full, local HF cache)"),
)}


def _minilm_tokenizer(name: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(
        offline_weights.minilm_dir(f"VLP {name!r} (MiniLM's WordPiece vocabulary)"),
        local_files_only=True)


def _snapshot_tokenizer(folder: Path, name: str) -> Any:
    """The checkpoint's own tokenizer; VisualBERT's checkpoint has none and uses BERT-uncased's
    WordPiece vocabulary, which is MiniLM's (shipped offline)."""
    from transformers import AutoTokenizer

    # without vocabulary files AutoTokenizer returns an empty tokenizer (special tokens only)
    if not any((Path(folder) / f).is_file() for f in _VOCAB_FILES):
        log.info("%s: no tokenizer in the checkpoint; using the BERT-uncased WordPiece "
                 "vocabulary (MiniLM's, offline)", name)
        return _minilm_tokenizer(name)
    return AutoTokenizer.from_pretrained(folder, local_files_only=True)


_VOCAB_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "sentencepiece.bpe.model",
                "spiece.model")


def _check_vocab(model: nn.Module, tok: Any, name: str) -> None:
    """The tokenizer's ids must index the model's word table, and it must be a real one."""
    cfg = model.config
    size = int((getattr(cfg, "text_config", None) or cfg).vocab_size)
    if not 1000 <= len(tok) <= size:
        raise ValueError(f"{name}: its tokenizer has {len(tok)} tokens but the model's word "
                         f"table has {size}; the checkpoint folder's tokenizer files are "
                         "incomplete or belong to another model")


def _clip_text(tok: Any) -> dict[str, Any]:
    return dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                num_attention_heads=2, max_position_embeddings=77, pad_token_id=tok.pad_token_id,
                bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id)


def _tiny_model(family: str, tok: Any, image_size: int, visual_dim: int = 0) -> nn.Module:
    """A random-init Hugging Face model of `family`, 64 wide, for `image_size`-px images."""
    from transformers import (
        CLIPConfig,
        CLIPModel,
        FlavaConfig,
        FlavaModel,
        GroupViTConfig,
        GroupViTModel,
        ViltConfig,
        ViltModel,
        VisualBertConfig,
        VisualBertModel,
    )

    if family != "visualbert" and (image_size <= 0 or image_size % 8):
        raise ValueError(f"the tiny VLPs use 8-px patches; the image store's size {image_size} "
                         "is not a positive multiple of 8 (re-import the data at e.g. 32 or 64)")
    block = dict(hidden_size=64, intermediate_size=128, num_attention_heads=2)
    vision = dict(**block, image_size=image_size, patch_size=8)
    if family == "clip":
        return CLIPModel(CLIPConfig(text_config=_clip_text(tok),
                                    vision_config=dict(**vision, num_hidden_layers=4),
                                    projection_dim=64))
    if family == "groupvit":
        return GroupViTModel(GroupViTConfig(
            text_config=_clip_text(tok),
            vision_config=dict(**vision, depths=[2, 2], num_hidden_layers=4,
                               num_group_tokens=[8, 0], num_output_groups=[4, 4]),
            projection_dim=64, projection_intermediate_dim=128))
    bert = dict(**block, vocab_size=len(tok), pad_token_id=tok.pad_token_id)
    if family == "vilt":
        return ViltModel(ViltConfig(**bert, num_hidden_layers=6, image_size=image_size,
                                    patch_size=8, max_position_embeddings=40,
                                    max_image_length=-1))
    if family == "visualbert":
        return VisualBertModel(VisualBertConfig(**bert, num_hidden_layers=6,
                                                visual_embedding_dim=visual_dim))
    if family == "flava":
        return FlavaModel(FlavaConfig(
            text_config=dict(**bert, num_hidden_layers=4),
            image_config=dict(**vision, num_hidden_layers=4),
            multimodal_config=dict(**block, num_hidden_layers=2),
            hidden_size=64, projection_dim=64, init_codebook=False))
    raise ValueError(f"unknown VLP family {family!r}")


_PRETRAINED_CLASSES = {"clip": "CLIPModel", "groupvit": "GroupViTModel", "vilt": "ViltModel",
                       "visualbert": "VisualBertModel", "flava": "FlavaModel"}
_DEFAULT_STATS = {"clip": (CLIP_MEAN, CLIP_STD), "groupvit": (CLIP_MEAN, CLIP_STD),
                  "vilt": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
                  "flava": (CLIP_MEAN, CLIP_STD)}
_CLASSES: dict[str, Callable[..., VLPBackbone]] = {
    "clip": ClipVLP, "groupvit": GroupViTVLP, "vilt": ViltVLP, "flava": FlavaVLP}


def _image_size(model: nn.Module, family: str) -> int:
    cfg = model.config
    sub = getattr(cfg, "vision_config", None) or getattr(cfg, "image_config", None) or cfg
    return int(sub.image_size)


def create_vlp(
    name: str,
    *,
    image_size: int = 224,
    finetune: str = "top",
    top_blocks: int | None = None,
    max_tokens: int | None = None,
    visual_input: str | None = None,
) -> VLPBackbone:
    """A VLP of `SPECS` by canonical name.

    image_size: the stored images' size (tiny models are built for it; checkpoints keep their
    own resolution and images are resized). visual_input: VisualBERT's visual tokens (None =
    grid); other VLPs read pixels and refuse it. Never downloads: a checkpoint missing from the
    local Hugging Face cache raises `CheckpointNotFoundError` naming the repo and how to get it.
    """
    if name not in SPECS:
        raise ValueError(f"unknown VLP {name!r}; choose one of {list(SPECS)}")
    spec = SPECS[name]
    if visual_input is not None and spec.family != "visualbert":
        raise ValueError(f"model.visual_input={visual_input!r} applies to VisualBERT only; "
                         f"{name} reads the image pixels itself. Leave it None")
    kw = dict(max_tokens=max_tokens, finetune=finetune, top_blocks=top_blocks)
    if spec.pretrained:
        import transformers

        folder = zoo.require_snapshot(spec.repo, f"VLP {name!r}: checkpoint")
        cls = getattr(transformers, _PRETRAINED_CLASSES[spec.family])
        model = cls.from_pretrained(folder, local_files_only=True)
        tok = _snapshot_tokenizer(folder, name)
        _check_vocab(model, tok, name)
        display = f"{spec.repo} (pretrained)"
    else:
        folder, tok, display = None, _minilm_tokenizer(name), f"{name} (random init)"
    if spec.family == "visualbert":
        kind = check_visual_input(visual_input or "grid")
        extractor = create_visual_extractor(kind, "full" if spec.pretrained else "tiny",
                                            pretrained=spec.pretrained)
        if not spec.pretrained:
            model = _tiny_model("visualbert", tok, image_size, extractor.out_dim)
        return VisualBertVLP(model, tok, extractor, name=name, pretrained=spec.pretrained,
                             display_name=f"{display}, {kind}: {extractor.display_name}", **kw)
    if not spec.pretrained:
        model = _tiny_model(spec.family, tok, image_size)
    mean, std = _DEFAULT_STATS[spec.family]
    if folder is not None:
        mean, std = pixel_stats(folder, mean, std)
    pixels = Pixels(_image_size(model, spec.family), mean, std)
    return _CLASSES[spec.family](model, tok, pixels, name=name, display_name=display,
                                 pretrained=spec.pretrained, **kw)
