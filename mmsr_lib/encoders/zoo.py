"""The offline model zoo: where every named encoder comes from, without touching the network.

Three sources, never silently swapped for one another:

- the paper's checkpoints (roberta-base, MAE-base, Swin-B, ...): read from the local Hugging Face
  cache (``local_files_only``); when absent, `CheckpointNotFoundError` says how to fetch them;
- real pretrained weights that pip ships (MiniLM-L3/L6, MPNet-base, EfficientNet-Lite0/1/2):
  located and loaded by `mmsr_lib.encoders.offline_weights`;
- the tiny zoo: small random-init configs of each family, labelled "(random init)", so CI and
  laptops run the same code path as the paper profile. Tiny text models reuse MiniLM's real
  WordPiece vocabulary, so they need no download either.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

# names a user can pass; anything else must be a local folder or a cached checkpoint
TEXT_ENCODERS = (
    "bert-base-uncased",
    "roberta-base",
    "google/electra-base-discriminator",
    "minilm-l3",
    "minilm-l6",
    "minilm",
    "mpnet-base",
    "tiny-bert",
    "tiny-roberta",
    "tiny-electra",
)
VISION_ENCODERS = (
    "resnet50",
    "mae-base",
    "swin-base",
    "efficientnet-lite0",
    "efficientnet-lite1",
    "efficientnet-lite2",
    "tiny-resnet",
    "tiny-mae",
    "tiny-swin",
    "tiny-vit",
)
TINY_TEXT = ("tiny-bert", "tiny-roberta", "tiny-electra")
TINY_VISION = ("tiny-resnet", "tiny-mae", "tiny-swin", "tiny-vit")
PAPER_TEXT = ("bert-base-uncased", "roberta-base", "google/electra-base-discriminator")
# short vision names -> (library, checkpoint): timm registry names or Hugging Face repo ids
VISION_ALIASES = {
    "resnet50": ("timm", "resnet50"),
    "swin-base": ("timm", "swin_base_patch4_window7_224"),
    "mae-base": ("hf", "facebook/vit-mae-base"),
}

# "random:<name>": the paper's architecture at full size with random weights, for speed and
# memory benchmarks on a GPU (no checkpoint needed); never for results tables
RANDOM_ARCH_TEXT = ("roberta-base", "bert-base-uncased")
RANDOM_ARCH_VISION = ("mae-base", "vit-base")
RANDOM_PREFIX = "random:"

# metadata file written next to a saved encoder: what the folder holds and how it was made
MMSR_META = "mmsr_encoder.json"


class CheckpointNotFoundError(FileNotFoundError):
    """A named checkpoint is not available offline; the message says how to get it."""


def download_hint(repo_id: str) -> str:
    return (
        f"run `huggingface-cli download {repo_id}` (or `hf download {repo_id}`) on a machine with "
        "internet and copy the Hugging Face cache (~/.cache/huggingface/hub, or $HF_HOME) here, "
        "or pass the path of a local folder that holds the checkpoint"
    )


def cached_snapshot(repo_id: str) -> Path | None:
    """The local folder of a Hugging Face repo in the cache, or None; never uses the network."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None


def require_snapshot(repo_id: str, what: str) -> Path:
    """Like `cached_snapshot`, but a missing checkpoint is an error that names it."""
    path = cached_snapshot(repo_id)
    if path is None:
        raise CheckpointNotFoundError(
            f"{what} {repo_id!r} is not in the local Hugging Face cache and this library never "
            f"downloads at run time; {download_hint(repo_id)}"
        )
    return path


def read_meta(folder: Path) -> dict[str, Any]:
    """The `mmsr_encoder.json` of a saved encoder folder ({} for a plain checkpoint folder)."""
    path = Path(folder) / MMSR_META
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); delete it or save the encoder again") from e


def write_meta(folder: Path, meta: dict[str, Any]) -> None:
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / MMSR_META).write_text(json.dumps(meta, indent=2, sort_keys=True))


def split_tiny_depth(name: str) -> tuple[str, int | None]:
    """`tiny-roberta-12l` -> ("tiny-roberta", 12): a tiny family at another depth.

    Paper-depth encoders made narrow enough for a CPU (the training benchmark uses 12 layers,
    top 2 trainable, like roberta-base and MAE-base) without a new zoo entry per depth.
    """
    m = re.fullmatch(r"(tiny-[a-z]+)-(\d+)l", name)
    if m and int(m.group(2)) >= 1:
        return m.group(1), int(m.group(2))
    return name, None


# -- tiny text zoo -------------------------------------------------------------------------------
def tiny_text_backbone(name: str, tokenizer: Any, layers: int = 4) -> torch.nn.Module:
    """A random-init 64-wide BERT / RoBERTa / ELECTRA (4 layers unless asked) over MiniLM's
    WordPiece vocab."""
    from transformers import (
        BertConfig,
        BertModel,
        ElectraConfig,
        ElectraModel,
        RobertaConfig,
        RobertaModel,
    )

    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=128,
        pad_token_id=tokenizer.pad_token_id,
    )
    if name == "tiny-bert":
        return BertModel(BertConfig(max_position_embeddings=512, **common), add_pooling_layer=False)
    if name == "tiny-roberta":
        # RoBERTa numbers positions from pad_token_id + 1, hence the extra rows
        cfg = RobertaConfig(
            max_position_embeddings=512 + tokenizer.pad_token_id + 1,
            type_vocab_size=1,
            bos_token_id=tokenizer.cls_token_id,
            eos_token_id=tokenizer.sep_token_id,
            **common,
        )
        return RobertaModel(cfg, add_pooling_layer=False)
    if name == "tiny-electra":
        # ELECTRA's factorised embeddings: a narrower table projected up to the hidden size
        return ElectraModel(ElectraConfig(embedding_size=32, max_position_embeddings=512, **common))
    raise ValueError(f"unknown tiny text model {name!r}; choose one of {TINY_TEXT}")


def random_arch_text_backbone(arch: str, tokenizer: Any) -> torch.nn.Module:
    """roberta-base / bert-base-uncased dimensions (768 wide, 12 layers, 12 heads), random init,
    over MiniLM's offline vocabulary (a smaller embedding table than the real models')."""
    from transformers import BertConfig, BertModel, RobertaConfig, RobertaModel

    common = dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    if arch == "roberta-base":
        cfg = RobertaConfig(max_position_embeddings=514, type_vocab_size=1,
                            bos_token_id=tokenizer.cls_token_id,
                            eos_token_id=tokenizer.sep_token_id, **common)
        return RobertaModel(cfg, add_pooling_layer=False)
    if arch == "bert-base-uncased":
        return BertModel(BertConfig(**common), add_pooling_layer=False)
    raise ValueError(f"no random architecture {arch!r}; choose one of {RANDOM_ARCH_TEXT}")


# -- tiny vision zoo -----------------------------------------------------------------------------
def tiny_timm_spec(name: str, image_size: int, layers: int | None = None) -> tuple[str, dict[str, Any]]:
    """(timm architecture, kwargs) of a random-init tiny vision model at `image_size` pixels."""
    if name == "tiny-resnet":
        # ResNet-50's Bottleneck blocks, one per stage except three in the last (the paper's top-3)
        return "resnet50", dict(layers=(1, 1, 1, 3), channels=(16, 32, 64, 128))
    if name == "tiny-swin":
        _require_multiple(name, image_size, 8, "patch 4 x one 2x patch merge")
        return "swin_tiny_patch4_window7_224", dict(
            img_size=image_size, patch_size=4, window_size=4, embed_dim=32,
            depths=(2, 2), num_heads=(2, 4), mlp_ratio=2.0,
        )
    if name == "tiny-vit":
        _require_multiple(name, image_size, 8, "patch size 8")
        return "vit_tiny_patch16_224", dict(
            img_size=image_size, patch_size=8, embed_dim=64, depth=layers or 4, num_heads=2,
            mlp_ratio=2.0,
        )
    raise ValueError(f"{name!r} is not a timm tiny model; choose one of {TINY_VISION}")


def tiny_mae_config(image_size: int, mask_ratio: float, layers: int = 4) -> Any:
    """ViTMAE encoder config: 64 wide, 4 layers (unless asked), 2 heads, 8-pixel patches."""
    from transformers import ViTMAEConfig

    _require_multiple("tiny-mae", image_size, 8, "patch size 8")
    return ViTMAEConfig(
        hidden_size=64, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=128,
        image_size=image_size, patch_size=8, mask_ratio=float(mask_ratio),
        decoder_hidden_size=64, decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
        decoder_intermediate_size=128,
    )


def _require_multiple(name: str, image_size: int, k: int, why: str) -> None:
    if image_size <= 0 or image_size % k:
        raise ValueError(
            f"{name} needs an image size that is a positive multiple of {k} ({why}); got "
            f"{image_size}. Pick e.g. {max(k, round(image_size / k) * k)}"
        )


# -- checkpoints of the same architecture under other names ----------------------------------------
def map_by_position(
    source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], origin: str
) -> dict[str, torch.Tensor]:
    """Rename `source` tensors to `target`'s names by position, checking every shape.

    Used where two implementations of one architecture store the same tensors in the same order
    under different names (EfficientNet-PyTorch's ``_blocks.0._depthwise_conv`` vs timm's
    ``blocks.0.0.conv_dw``). Any count or shape mismatch is an error, never a partial load.
    """
    if len(source) != len(target):
        raise ValueError(
            f"{origin}: {len(source)} tensors but the target model has {len(target)}; the "
            "checkpoint is for a different architecture"
        )
    out = {}
    for i, ((s_name, s), (t_name, t)) in enumerate(zip(source.items(), target.items(), strict=True)):
        if tuple(s.shape) != tuple(t.shape):
            raise ValueError(
                f"{origin}: tensor #{i} {s_name} has shape {tuple(s.shape)} but the target's "
                f"{t_name} has {tuple(t.shape)}; the checkpoint is for a different architecture"
            )
        out[t_name] = s
    return out
