"""Text encoders (paper Sec. 3.1): BERT, RoBERTa, ELECTRA, MiniLM and any BERT-style HF encoder.

An item's text is tokenised once to a fixed width (`max_tokens`, special tokens included), so a
row never depends on the other texts of its batch: the tokenised catalog can be stored and the
frozen part's output cached per item. The encoder is split in two at a block boundary:

    forward(x) == forward_top(forward_frozen(x), mask)

`forward_frozen` is the embeddings plus the lower blocks (frozen under top-k fine-tuning) and
`forward_top` the trainable top blocks plus pooling; `FrozenCache` stores the former per item.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import logging
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmsr_lib.encoders import offline_weights, zoo
from mmsr_lib.encoders.base import ModalityOutput
from mmsr_lib.encoders.finetune import (
    PartlyFrozen,
    resolve_top_blocks,
)
from mmsr_lib.util import registry

log = logging.getLogger("mmsr.encoders")

POOLINGS = ("cls", "mean")
EMPTY_TEXT = "[empty]"  # what an item without text is encoded as (counted in stats["empty_text"])
DEFAULT_TOP_BLOCKS = 2
_KEY_VERSION = "text-v1"
# model types whose position ids start after the padding id (RoBERTa-style)
_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert", "longformer", "mpnet")


class TextEncoder(PartlyFrozen):
    """A BERT-style Hugging Face encoder (embeddings + ``encoder.layer``) split for top-k tuning.

    tokens: the last hidden states [B, T, D]; mask: the attention mask; pooled: the [CLS] state
    ("cls") or the mean over real tokens ("mean"). No pretraining head is kept (BERT's pooler was
    trained for next-sentence prediction and RoBERTa's is untrained, so both are dropped).
    """

    def __init__(
        self,
        backbone: nn.Module,
        tokenizer: Any,
        *,
        name: str,
        display_name: str,
        pretrained: bool,
        max_tokens: int = 50,
        pooling: str = "cls",
        finetune: str = "top",
        top_blocks: int | None = None,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown model.text_pooling {pooling!r}; choose one of {POOLINGS}")
        cfg = backbone.config
        layers = getattr(getattr(backbone, "encoder", None), "layer", None)
        if not hasattr(backbone, "embeddings") or not isinstance(layers, nn.ModuleList):
            raise ValueError(
                f"text encoder {name!r} ({type(backbone).__name__}, model_type "
                f"{getattr(cfg, 'model_type', '?')!r}) does not have the BERT-style layout "
                "(embeddings + encoder.layer) that top-k fine-tuning splits; use a BERT, RoBERTa, "
                "ELECTRA, XLM-R or MiniLM checkpoint"
            )
        if getattr(backbone, "pooler", None) is not None:
            backbone.pooler = None
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.name, self.display_name, self.pretrained = name, display_name, pretrained
        self.pooling = pooling
        self.max_tokens = self._check_max_tokens(max_tokens)
        self.out_dim = int(cfg.hidden_size)
        self.n_blocks = len(layers)
        self.top_blocks = 0 if finetune == "frozen" else resolve_top_blocks(
            top_blocks, self.n_blocks, DEFAULT_TOP_BLOCKS, name)
        self.split = self.n_blocks - self.top_blocks
        self.stats = {"texts": 0, "empty_text": 0, "truncated": 0}
        self._tokenizer_digest: str | None = None
        self._setup_finetune(backbone, list(layers[self.split :]), finetune)

    # -- tokenisation --------------------------------------------------------------------------
    def _check_max_tokens(self, max_tokens: int) -> int:
        cfg = self.backbone.config
        limit = int(cfg.max_position_embeddings)
        if cfg.model_type in _OFFSET_POSITIONS:
            limit -= int(cfg.pad_token_id) + 1
        if not isinstance(max_tokens, int) or not 2 < max_tokens <= limit:
            raise ValueError(
                f"model.text_max_tokens={max_tokens!r} must be an int in 3..{limit} for "
                f"{self.name} (it counts the special tokens; the paper uses 50)"
            )
        return max_tokens

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """input_ids / attention_mask [N, max_tokens], each row independent of the others.

        Missing or blank text (None, NaN, "") becomes the placeholder "[empty]"; longer texts are
        truncated to `max_tokens` (special tokens included). Both are counted in `self.stats`.
        """
        if isinstance(texts, str):
            raise TypeError("tokenize expects a list of texts; wrap a single text as [text]")
        clean = []
        empty = 0
        for i, t in enumerate(texts):
            if t is None or (isinstance(t, float) and math.isnan(t)):
                t = ""
            if not isinstance(t, str):
                raise TypeError(
                    f"text #{i} is a {type(t).__name__} ({t!r}), expected str; convert the "
                    "item texts to strings (missing text may be None or '')"
                )
            if not t.strip():
                t, empty = EMPTY_TEXT, empty + 1
            clean.append(t)
        n = len(clean)
        if n == 0:
            z = torch.zeros(0, self.max_tokens, dtype=torch.long)
            return {"input_ids": z, "attention_mask": z.clone()}
        full = self.tokenizer(clean, add_special_tokens=True, truncation=False, verbose=False)
        truncated = sum(len(ids) > self.max_tokens for ids in full["input_ids"])
        enc = self.tokenizer(
            clean, padding="max_length", truncation=True, max_length=self.max_tokens,
            return_tensors="pt", return_token_type_ids=False,
        )
        self.stats["texts"] += n
        self.stats["empty_text"] += empty
        self.stats["truncated"] += truncated
        if empty or truncated:
            log.info("%s: %d of %d texts empty (-> %r), %d truncated to %d tokens",
                     self.name, empty, n, EMPTY_TEXT, truncated, self.max_tokens)
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    # -- the split forward -----------------------------------------------------------------------
    def _layers(self) -> nn.ModuleList:
        return self.backbone.encoder.layer

    def _attention_mask(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        from transformers.masking_utils import create_bidirectional_mask

        return create_bidirectional_mask(
            config=self.backbone.config, inputs_embeds=hidden, attention_mask=attention_mask
        )

    def forward_frozen(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Hidden states [B, T, D] after the embeddings and the lower (frozen) blocks."""
        hidden = self.backbone.embeddings(input_ids=input_ids)
        project = getattr(self.backbone, "embeddings_project", None)  # ELECTRA
        if project is not None:
            hidden = project(hidden)
        mask = self._attention_mask(hidden, attention_mask)
        return self._run_layers(self._layers()[: self.split], hidden, mask)

    def _run_layers(self, layers: nn.ModuleList, hidden: torch.Tensor, mask: Any) -> torch.Tensor:
        """Run `layers` in turn. MPNet's blocks also take the relative position bias that its
        encoder computes from the sequence length, and return a tuple."""
        encoder = self.backbone.encoder
        bias = encoder.compute_position_bias(hidden) if hasattr(
            encoder, "compute_position_bias") else None
        for layer in layers:
            out = layer(hidden, mask) if bias is None else layer(hidden, mask, position_bias=bias)
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden

    def forward_top(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> ModalityOutput:
        """The trainable top blocks on `forward_frozen`'s output, then pooling."""
        mask = self._attention_mask(hidden, attention_mask)
        hidden = self._run_layers(self._layers()[self.split :], hidden, mask)
        valid = attention_mask.bool()
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            w = valid.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * w).sum(1) / w.sum(1).clamp_min(1.0)
        return ModalityOutput(tokens=hidden, mask=valid, pooled=pooled)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> ModalityOutput:
        return self.forward_top(self.forward_frozen(input_ids, attention_mask), attention_mask)

    # -- identity of the frozen part ---------------------------------------------------------------
    def cache_key(self) -> str:
        """Changes whenever the frozen part's output for a text could change."""
        return self._cache_key("text", _KEY_VERSION, {
            "tokenizer": self.tokenizer_digest(),
            "max_tokens": self.max_tokens,
            "empty": EMPTY_TEXT,
            "split": [self.split, self.n_blocks],
        })

    def _top_prefixes(self) -> list[str]:
        return [f"encoder.layer.{i}." for i in range(self.split, self.n_blocks)]

    def tokenizer_digest(self) -> str:
        if self._tokenizer_digest is None:
            backend = getattr(self.tokenizer, "backend_tokenizer", None)
            spec = backend.to_str() if backend is not None else json.dumps(
                sorted(self.tokenizer.get_vocab().items())
            )
            h = hashlib.sha256(type(self.tokenizer).__name__.encode())
            h.update(spec.encode())
            self._tokenizer_digest = h.hexdigest()[:16]
        return self._tokenizer_digest

    # -- persistence ---------------------------------------------------------------------------------
    def save_pretrained(self, path: str | Path) -> Path:
        """A folder that `create_text_encoder(path)` loads back (HF model + tokenizer + metadata)."""
        path = Path(path)
        self.backbone.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        zoo.write_meta(path, {"kind": "text", "name": self.name,
                              "display_name": self.display_name, "pretrained": self.pretrained})
        return path

    def extra_repr(self) -> str:
        return (f"name={self.display_name!r}, max_tokens={self.max_tokens}, pooling={self.pooling}, "
                f"finetune={self.finetune}, top_blocks={self.top_blocks}/{self.n_blocks}")


# -- construction ---------------------------------------------------------------------------------
def load_text_folder(
    path: str | Path,
    name: str,
    *,
    display_name: str | None = None,
    pretrained: bool | None = None,
    **kwargs: Any,
) -> TextEncoder:
    """Any local Hugging Face encoder folder (config + weights + tokenizer), offline."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{path} has no config.json; a text encoder folder needs a Hugging Face config, "
            "weights and tokenizer (as written by `save_pretrained`)"
        )
    meta = zoo.read_meta(path)
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    extra = {}
    model_cls = MODEL_MAPPING.get(type(config), None)
    if model_cls is not None and "add_pooling_layer" in inspect.signature(model_cls).parameters:
        # the pooler is dropped after loading; building it only when the checkpoint has it keeps
        # the load free of missing/unexpected-key reports
        extra["add_pooling_layer"] = _checkpoint_has_pooler(path)
    backbone = AutoModel.from_pretrained(path, config=config, local_files_only=True, **extra)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as e:
        raise FileNotFoundError(
            f"{path} has no usable tokenizer ({e}); save the tokenizer next to the model "
            "(tokenizer.save_pretrained(path))"
        ) from e
    pretrained = meta.get("pretrained", True) if pretrained is None else pretrained
    label = "pretrained" if pretrained else "random init"
    display = display_name or meta.get("display_name") or f"{name} ({label})"
    return TextEncoder(backbone, tokenizer, name=meta.get("name", name), display_name=display,
                       pretrained=pretrained, **kwargs)


def create_text_encoder(
    name: str,
    max_tokens: int = 50,
    pooling: str = "cls",
    finetune: str = "top",
    top_blocks: int | None = None,
) -> TextEncoder:
    """A text encoder by name (see `TEXT_ENCODERS`), local folder, or cached HF checkpoint.

    Never downloads: a checkpoint missing from the local Hugging Face cache raises
    `CheckpointNotFoundError` with the command that fetches it.
    """
    kw = dict(max_tokens=max_tokens, pooling=pooling, finetune=finetune, top_blocks=top_blocks)
    base, depth = zoo.split_tiny_depth(name)
    if base in zoo.TINY_TEXT:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(
            offline_weights.minilm_dir(f"text encoder {name!r} (MiniLM's vocabulary)"),
            local_files_only=True)
        backbone = zoo.tiny_text_backbone(base, tokenizer, layers=depth or 4)
        return TextEncoder(backbone, tokenizer, name=name, display_name=f"{name} (random init)",
                           pretrained=False, **kw)
    if name.startswith(zoo.RANDOM_PREFIX):
        from transformers import AutoTokenizer

        arch = name[len(zoo.RANDOM_PREFIX):]
        tokenizer = AutoTokenizer.from_pretrained(
            offline_weights.minilm_dir(f"text encoder {name!r} (MiniLM's vocabulary)"),
            local_files_only=True)
        backbone = zoo.random_arch_text_backbone(arch, tokenizer)
        return TextEncoder(backbone, tokenizer, name=name,
                           display_name=f"{arch} architecture (random init, benchmark only)",
                           pretrained=False, **kw)
    offline = offline_weights.canonical(name)
    if offline in offline_weights.TEXT_MODELS:  # real pretrained weights shipped by pip
        backbone, tokenizer = offline_weights.load_text(offline)
        return TextEncoder(backbone, tokenizer, name=offline, pretrained=True,
                           display_name=offline_weights.OFFLINE_MODELS[offline].display_name, **kw)
    if Path(name).expanduser().is_dir():
        return load_text_folder(Path(name).expanduser(), name, **kw)
    if name in zoo.PAPER_TEXT:
        return load_text_folder(zoo.require_snapshot(name, "text encoder"), name,
                                pretrained=True, **kw)
    snapshot = zoo.cached_snapshot(name) if _looks_like_repo_id(name) else None
    if snapshot is None:
        raise ValueError(
            f"unknown text encoder {name!r}: not one of {list(zoo.TEXT_ENCODERS)}, not a local "
            "folder, and not a Hugging Face model in the local cache (any local path or Hugging "
            f"Face name in the local cache works). If it is a Hub model, {zoo.download_hint(name)}"
        )
    return load_text_folder(snapshot, name, pretrained=True, **kw)


def _checkpoint_has_pooler(path: Path) -> bool:
    """Whether the weights in `path` include a pooler (True when it cannot be told cheaply)."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        return any(_is_pooler(k) for k in json.loads(index.read_text())["weight_map"])
    single = path / "model.safetensors"
    if single.is_file():
        from safetensors import safe_open

        with safe_open(str(single), framework="pt") as f:
            return any(_is_pooler(k) for k in f.keys())
    return True


def _is_pooler(key: str) -> bool:
    return f".{key}".find(".pooler.") >= 0  # "pooler.dense.weight" or "bert.pooler.dense.weight"


def _looks_like_repo_id(name: str) -> bool:
    parts = name.split("/")
    return 1 <= len(parts) <= 2 and all(p and not p.startswith(".") for p in parts)


# -- registry ----------------------------------------------------------------------------------
# Every name `create_text_encoder` understands, registered with what it is and whether its
# weights are here; open-ended names (depth variants, folders, cached Hub ids) via a resolver.
_PAPER_TEXT_ALIASES = {"bert-base-uncased": ("BERT", "bert"), "roberta-base": ("RoBERTa",),
                       "google/electra-base-discriminator": ("ELECTRA", "electra-base")}


def _hub_missing(repo: str) -> str | None:
    return None if zoo.cached_snapshot(repo) is not None else (
        f"{repo!r} is not in the local Hugging Face cache; {zoo.download_hint(repo)}")


def _register_text() -> None:
    for name in zoo.TINY_TEXT:
        registry.add(registry.Entry(
            "text_encoder", name, functools.partial(create_text_encoder, name),
            description=f"{name.removeprefix('tiny-').upper()} architecture, 4 layers x 64 "
                        "(random init; MiniLM's vocabulary)", weights="random",
            availability=lambda: offline_weights.available_offline("minilm-l6")))
    for repo in zoo.PAPER_TEXT:
        registry.add(registry.Entry(
            "text_encoder", repo, functools.partial(create_text_encoder, repo),
            _PAPER_TEXT_ALIASES.get(repo, ()), f"{repo}: the paper's checkpoint (local HF cache)",
            weights="pretrained", availability=functools.partial(_hub_missing, repo)))
    for name in offline_weights.TEXT_MODELS:
        spec = offline_weights.OFFLINE_MODELS[name]
        aliases = tuple(a for a, target in offline_weights.ALIASES.items() if target == name)
        registry.add(registry.Entry(
            "text_encoder", name, functools.partial(create_text_encoder, name), aliases,
            spec.display_name, weights="pretrained",
            availability=functools.partial(offline_weights.available_offline, name)))


def _resolve_text(name: str) -> registry.Entry | None:
    """tiny-<family>-<n>l, random:<arch>, a local folder, or a Hub id in the local cache."""
    base, depth = zoo.split_tiny_depth(name)
    weights, description = "pretrained", "a Hugging Face encoder"
    if base in zoo.TINY_TEXT and depth is not None:
        weights, description = "random", f"{base} with {depth} layers (random init)"
    elif name.startswith(zoo.RANDOM_PREFIX) and \
            name[len(zoo.RANDOM_PREFIX):] in zoo.RANDOM_ARCH_TEXT:
        weights, description = "random", "paper-size architecture, random init (benchmarks)"
    elif Path(name).expanduser().is_dir():
        weights = "pretrained" if zoo.read_meta(Path(name).expanduser()).get(
            "pretrained", True) else "random"
        description = f"the local folder {name}"
    elif not (_looks_like_repo_id(name) and zoo.cached_snapshot(name) is not None):
        return None
    return registry.Entry("text_encoder", name, functools.partial(create_text_encoder, name),
                          description=description, weights=weights)


_register_text()
registry.add_resolver("text_encoder", _resolve_text)
