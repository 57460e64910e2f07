"""Vision encoders (paper Sec. 3.2): grid features (ResNet, EfficientNet), patches (ViT, Swin, MAE).

Like the text encoders they are split at a block boundary so that

    forward(pixels) == forward_top(forward_frozen(pixels))

where the frozen lower part (stem + lower blocks) can be cached per item and only the top blocks
train. Tokens are the grid cells of the last feature map (CNNs) or the patch tokens (ViT, Swin,
MAE); `pooled` is the model's own pooling (global average, or the class token where the model
uses one; the mean of the visible patches for MAE, as MAE fine-tuning does).

MAE masking (Table XIV): in training each step draws a fresh random mask (torch's global RNG,
so a seeded run is reproducible); in eval the mask comes from one fixed noise vector (seed 0),
the same for every image, so the item table does not depend on batch composition and two
evaluations agree. With mask_ratio > 0 the frozen part is therefore not cacheable for training
(`frozen_is_deterministic` is False); with mask_ratio = 0 no patch is dropped and the patch order
is kept, so it is.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmsr_lib.encoders import offline_weights, zoo
from mmsr_lib.encoders.base import ModalityOutput
from mmsr_lib.encoders.finetune import (
    PartlyFrozen,
    resolve_top_blocks,
)
from mmsr_lib.util import registry

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_MAE_MASK_RATIO = 0.75  # the paper's default (Table XIV)
_KEY_VERSION = "vision-v1"


class VisionEncoder(PartlyFrozen):
    """Shared part of every vision encoder: preprocessing, the split forward, identity, saving.

    image_size: the model's input resolution (what `preprocess` produces); source_image_size: the
    image size the encoder was created for (the image store's), part of `cache_key()`.
    """

    name: str
    display_name: str
    out_dim: int
    image_size: int
    pretrained: bool
    top_blocks: int
    n_blocks: int

    def _init_common(
        self, *, name: str, display_name: str, pretrained: bool, image_size: int,
        source_image_size: int, mean: tuple[float, ...], std: tuple[float, ...],
        interpolation: str = "bilinear",
    ) -> None:
        self.name, self.display_name, self.pretrained = name, display_name, pretrained
        self.image_size, self.source_image_size = int(image_size), int(source_image_size)
        self.interpolation = "bicubic" if interpolation == "bicubic" else "bilinear"
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    # -- preprocessing ------------------------------------------------------------------------------
    @torch.no_grad()
    def preprocess(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 [N, H, W, 3] (or [N, 3, H, W]) -> float [N, 3, R, R], normalised for the model.

        Grayscale ([N, H, W] or one channel) is repeated to RGB, RGBA is composited on white, and
        any other size is resized (bilinear/bicubic with antialiasing, aspect not kept) to the
        model's R = `image_size`. Floats must already be in [0, 1].
        """
        if torch.is_tensor(images):
            x = images
        else:
            arr = np.asarray(images)
            x = torch.from_numpy(arr if arr.flags.writeable else arr.copy())
        if x.ndim == 3:
            x = x.unsqueeze(-1)  # a batch of grayscale images
        if x.ndim != 4:
            raise ValueError(
                f"images must be [N, H, W, C] (or [N, C, H, W] / [N, H, W]); got shape "
                f"{tuple(x.shape)}"
            )
        if x.shape[-1] in (1, 3, 4):
            x = x.permute(0, 3, 1, 2)
        elif x.shape[1] not in (1, 3, 4):
            raise ValueError(
                f"images of shape {tuple(x.shape)} have no channel axis of size 1, 3 or 4; "
                "pass RGB images as uint8 [N, H, W, 3]"
            )
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        elif x.is_floating_point():
            x = x.float()
            if x.numel() and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
                raise ValueError(
                    f"float images must lie in [0, 1]; got values in [{float(x.min()):.3g}, "
                    f"{float(x.max()):.3g}]. Pass uint8 for 0..255 pixels"
                )
        else:
            raise TypeError(f"images must be uint8 or float in [0, 1], not {x.dtype}")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] == 4:
            alpha = x[:, 3:]
            x = x[:, :3] * alpha + (1.0 - alpha)
        r = self.image_size
        if tuple(x.shape[-2:]) != (r, r):
            x = F.interpolate(x, size=(r, r), mode=self.interpolation, align_corners=False,
                              antialias=True).clamp_(0.0, 1.0)
        mean, std = self.pixel_mean.to(x.device), self.pixel_std.to(x.device)
        return ((x - mean) / std).contiguous()

    def _check_pixels(self, pixels: torch.Tensor) -> None:
        r = self.image_size
        if pixels.ndim != 4 or pixels.shape[1] != 3 or tuple(pixels.shape[-2:]) != (r, r):
            raise ValueError(
                f"{self.name} expects preprocessed pixels [B, 3, {r}, {r}], got "
                f"{tuple(pixels.shape)}; call encoder.preprocess(images) first"
            )

    # -- the split forward -----------------------------------------------------------------------
    def forward_frozen(self, pixels: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def forward_top(self, hidden: torch.Tensor) -> ModalityOutput:  # pragma: no cover
        raise NotImplementedError

    def forward(self, pixels: torch.Tensor) -> ModalityOutput:
        return self.forward_top(self.forward_frozen(pixels))

    # -- identity --------------------------------------------------------------------------------------
    def _key_parts(self) -> dict[str, Any]:
        return {}

    def _top_prefixes(self) -> list[str]:  # pragma: no cover - per family
        raise NotImplementedError

    def cache_key(self) -> str:
        """Changes whenever the frozen part's output for an image could change."""
        return self._cache_key("vision", _KEY_VERSION, {
            "image_size": self.image_size,
            "source_image_size": self.source_image_size,
            "mean": self.pixel_mean.flatten().tolist(),
            "std": self.pixel_std.flatten().tolist(),
            "interpolation": self.interpolation,
            "split": [self.n_blocks - self.top_blocks, self.n_blocks],
            **self._key_parts(),
        })

    def _meta(self) -> dict[str, Any]:
        return {"kind": "vision", "name": self.name, "display_name": self.display_name,
                "pretrained": self.pretrained}

    def extra_repr(self) -> str:
        return (f"name={self.display_name!r}, image_size={self.image_size}, "
                f"finetune={self.finetune}, top_blocks={self.top_blocks}/{self.n_blocks}")


# -- timm backbones ---------------------------------------------------------------------------------
@dataclass
class TimmLayout:
    """How to run one timm architecture block by block.

    family: the registered `TimmFamily` adapter (its stem and head); an object without state,
    so a deep copy of the encoder stays self-contained.
    units: (state-dict prefix, module, is_block) in forward order; only `is_block` units count
    for `top_blocks` (Swin's patch merging, ConvNeXt's downsampling sit between blocks).
    layout: "nchw" feature maps, "nhwc" (Swin) or "nlc" token sequences (ViT).
    """

    family: TimmFamily
    units: list[tuple[str, nn.Module, bool]]
    head_modules: list[nn.Module]
    head_prefixes: list[str]
    layout: str
    default_top: int
    prefix_tokens: int = 0


class TimmFamily:
    """One timm architecture family split for top-k fine-tuning: which class it handles, its
    blocks (`layout`), what `forward_features` does before them (`stem`) and after them
    (`head`). A new family is one small registered subclass (kind "timm_family")."""

    name: str = "other"

    def matches(self, model: nn.Module) -> bool:  # pragma: no cover - interface
        raise NotImplementedError

    def layout(self, model: nn.Module) -> TimmLayout:  # pragma: no cover - interface
        raise NotImplementedError

    def stem(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return x

    def head(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return x


def _family(cls: type[TimmFamily]) -> type[TimmFamily]:
    """Register a family adapter (an instance: adapters hold no state)."""
    registry.add(registry.Entry("timm_family", cls.name, cls, description=cls.__doc__ or ""))
    return cls


@_family
class ResNetFamily(TimmFamily):
    """ResNet: four stages of bottleneck blocks; the top 3 blocks train by default."""

    name = "resnet"

    def matches(self, model: nn.Module) -> bool:
        from timm.models.resnet import ResNet

        return isinstance(model, ResNet)

    def layout(self, m: nn.Module) -> TimmLayout:
        units = [(f"layer{s}.{j}.", b, True) for s in range(1, 5)
                 for j, b in enumerate(getattr(m, f"layer{s}"))]
        return TimmLayout(self, units, [], [], "nchw", default_top=3)

    def stem(self, m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return m.maxpool(m.act1(m.bn1(m.conv1(x))))


@_family
class EfficientNetFamily(TimmFamily):
    """EfficientNet / MobileNetV2 / MNASNet: inverted-residual stages, a 1x1 conv head."""

    name = "efficientnet"

    def matches(self, model: nn.Module) -> bool:
        from timm.models.efficientnet import EfficientNet

        return isinstance(model, EfficientNet)

    def layout(self, m: nn.Module) -> TimmLayout:
        units = [(f"blocks.{s}.{j}.", b, True) for s, stage in enumerate(m.blocks)
                 for j, b in enumerate(stage)]
        return TimmLayout(self, units, [m.conv_head, m.bn2], ["conv_head.", "bn2."], "nchw",
                          default_top=3)

    def stem(self, m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return m.bn1(m.conv_stem(x))

    def head(self, m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return m.bn2(m.conv_head(x))


@_family
class ViTFamily(TimmFamily):
    """VisionTransformer (ViT, DeiT): patch embedding + position embedding, blocks, final norm.

    The stem calls timm's `_pos_embed` (private): `test_encoders.py` pins that stem + blocks +
    head equals timm's own `forward_features`, so a timm release that changes it fails there."""

    name = "vit"

    def matches(self, model: nn.Module) -> bool:
        from timm.models.vision_transformer import VisionTransformer

        return isinstance(model, VisionTransformer)

    def layout(self, m: nn.Module) -> TimmLayout:
        units = [(f"blocks.{i}.", b, True) for i, b in enumerate(m.blocks)]
        heads = [x for x in (m.norm, m.fc_norm, getattr(m, "attn_pool", None)) if x is not None]
        return TimmLayout(self, units, heads, ["norm.", "fc_norm.", "attn_pool."], "nlc",
                          default_top=2, prefix_tokens=int(m.num_prefix_tokens))

    def stem(self, m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return m.norm_pre(m.patch_drop(m._pos_embed(m.patch_embed(x))))

    def head(self, m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return m.norm(x)


@_family
class SwinFamily(TimmFamily):
    """Swin Transformer: stages of windowed blocks with patch merging between them."""

    name = "swin"

    def matches(self, model: nn.Module) -> bool:
        from timm.models.swin_transformer import SwinTransformer

        return isinstance(model, SwinTransformer)

    def layout(self, m: nn.Module) -> TimmLayout:
        units = []
        for s, stage in enumerate(m.layers):
            units.append((f"layers.{s}.downsample.", stage.downsample, False))
            units += [(f"layers.{s}.blocks.{j}.", b, True) for j, b in enumerate(stage.blocks)]
        return TimmLayout(self, units, [m.norm, m.head], ["norm.", "head."], "nhwc",
                          default_top=2)

    def stem(self, m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return m.patch_embed(x)

    def head(self, m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return m.norm(x)


@_family
class ConvNeXtFamily(TimmFamily):
    """ConvNeXt: stages of depthwise-conv blocks with downsampling between them."""

    name = "convnext"

    def matches(self, model: nn.Module) -> bool:
        from timm.models.convnext import ConvNeXt

        return isinstance(model, ConvNeXt)

    def layout(self, m: nn.Module) -> TimmLayout:
        units = []
        for s, stage in enumerate(m.stages):
            units.append((f"stages.{s}.downsample.", stage.downsample, False))
            units += [(f"stages.{s}.blocks.{j}.", b, True) for j, b in enumerate(stage.blocks)]
        return TimmLayout(self, units, [m.norm_pre, m.head], ["norm_pre.", "head."], "nchw",
                          default_top=3)

    def stem(self, m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return m.stem(x)

    def head(self, m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return m.norm_pre(x)


class WholeModel(TimmFamily):
    """Any other timm class: no known blocks, so it only trains whole (finetune=full) and its
    `forward_features` runs in the head; nothing frozen, nothing to cache."""

    name = "other"

    def layout(self, m: nn.Module) -> TimmLayout:
        return TimmLayout(self, [], [m], [""], "auto", default_top=0)

    def head(self, m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return m.forward_features(x)


def timm_layout(model: nn.Module) -> TimmLayout | None:
    """The block layout of a timm model from the registered family that handles its class;
    None when no family does."""
    for entry in registry.entries("timm_family"):
        family = entry.factory()
        if family.matches(model):
            return family.layout(model)
    return None


class TimmVisionEncoder(VisionEncoder):
    """Any timm model: tokens from its `forward_features` map, pooled by its own head."""

    def __init__(
        self, backbone: nn.Module, *, name: str, display_name: str, pretrained: bool,
        image_size: int, source_image_size: int, finetune: str = "top",
        top_blocks: int | None = None,
    ) -> None:
        super().__init__()
        backbone.reset_classifier(0)  # features only; no classifier parameters to carry
        cfg = getattr(backbone, "pretrained_cfg", {}) or {}
        self._init_common(
            name=name, display_name=display_name, pretrained=pretrained, image_size=image_size,
            source_image_size=source_image_size, mean=tuple(cfg.get("mean", IMAGENET_MEAN)),
            std=tuple(cfg.get("std", IMAGENET_STD)),
            interpolation=cfg.get("interpolation", "bilinear"),
        )
        self.backbone = backbone
        self.out_dim = int(backbone.num_features)
        layout = timm_layout(backbone)
        if layout is None:
            if finetune != "full":
                raise ValueError(
                    f"vision encoder {name!r} ({type(backbone).__name__}) has no known block "
                    "layout for top-k fine-tuning (supported: ResNet, EfficientNet incl. MobileNetV2/"
                    "MNASNet, VisionTransformer incl. DeiT, SwinTransformer, ConvNeXt); use "
                    "model.finetune=full"
                )
            # the whole network is the "top": nothing frozen, nothing to cache
            layout = WholeModel().layout(backbone)
        self.layout = layout
        self.n_blocks = sum(is_block for _, _, is_block in layout.units)
        self.top_blocks = 0 if finetune == "frozen" else resolve_top_blocks(
            top_blocks, self.n_blocks, layout.default_top, name)
        self.split_unit = self._split_unit()
        # frozen: the head (EfficientNet's 1x1 conv + BN, ViT's norm) is frozen and cached too
        self.head_frozen = finetune == "frozen"
        trainable = [] if self.head_frozen else \
            [mod for _, mod, _ in layout.units[self.split_unit :]] + layout.head_modules
        self._setup_finetune(backbone, trainable, finetune)

    def _split_unit(self) -> int:
        """Index of the first unit that trains: the k-th block from the end (or past the end)."""
        if self.top_blocks == 0:
            return len(self.layout.units)
        seen = 0
        for i in range(len(self.layout.units) - 1, -1, -1):
            seen += self.layout.units[i][2]
            if seen == self.top_blocks:
                return i
        return 0

    def forward_frozen(self, pixels: torch.Tensor) -> torch.Tensor:
        """Feature map / tokens after the stem and the lower (frozen) blocks."""
        self._check_pixels(pixels)
        x = self._stem(pixels)
        for _, unit, _ in self.layout.units[: self.split_unit]:
            x = unit(x)
        return self._head(x) if self.head_frozen else x

    def forward_top(self, hidden: torch.Tensor) -> ModalityOutput:
        x = hidden
        for _, unit, _ in self.layout.units[self.split_unit :]:
            x = unit(x)
        if not self.head_frozen:
            x = self._head(x)
        pooled = self.backbone.forward_head(x, pre_logits=True)
        tokens = self._tokens(x)
        if pooled.shape[-1] != tokens.shape[-1]:
            # heads that widen after pooling (MobileNetV3's 1x1 conv head): keep one width
            pooled = tokens.mean(1)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return ModalityOutput(tokens=tokens, mask=mask, pooled=pooled)

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.layout.family.stem(self.backbone, x)

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        return self.layout.family.head(self.backbone, x)

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        layout = self.layout.layout
        if layout == "auto":  # unknown timm class: guess from the feature shape
            layout = "nlc" if x.ndim == 3 else "nchw"
            if x.ndim == 4 and getattr(self.backbone, "output_fmt", "NCHW") == "NHWC":
                layout = "nhwc"
        if layout == "nchw":
            return x.flatten(2).transpose(1, 2)
        if layout == "nhwc":
            return x.flatten(1, 2)
        return x[:, self.layout.prefix_tokens :]

    def _top_prefixes(self) -> list[str]:
        head = [] if self.head_frozen else self.layout.head_prefixes
        return [p for p, _, _ in self.layout.units[self.split_unit :]] + head

    def save_pretrained(self, path: str | Path) -> Path:
        """timm's own folder format (config.json + model.safetensors) plus our metadata."""
        from timm.models import save_for_hf

        path = Path(path)
        save_for_hf(self.backbone, str(path), safe_serialization=True)
        zoo.write_meta(path, {**self._meta(), "family": "timm"})
        return path


# -- Hugging Face ViTMAE -------------------------------------------------------------------------------
class MAEVisionEncoder(VisionEncoder):
    """The MAE encoder (HF ``ViTMAEModel``): visible patch tokens, mean-pooled."""

    def __init__(
        self, backbone: nn.Module, *, name: str, display_name: str, pretrained: bool,
        source_image_size: int, finetune: str = "top", top_blocks: int | None = None,
        mask_ratio: float | None = None, mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        cfg = backbone.config
        ratio = float(cfg.mask_ratio if mask_ratio is None else mask_ratio)
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"model.mask_ratio={mask_ratio!r} must be in [0, 1)")
        cfg.mask_ratio = ratio  # read by ViTMAEEmbeddings.random_masking
        size = cfg.image_size if isinstance(cfg.image_size, int) else cfg.image_size[0]
        self._init_common(name=name, display_name=display_name, pretrained=pretrained,
                          image_size=size, source_image_size=source_image_size, mean=mean, std=std)
        self.backbone = backbone
        self.mask_ratio = ratio
        self.out_dim = int(cfg.hidden_size)
        self.n_blocks = len(backbone.layers)
        self.top_blocks = 0 if finetune == "frozen" else resolve_top_blocks(
            top_blocks, self.n_blocks, 2, name)
        self.split = self.n_blocks - self.top_blocks
        self.head_frozen = finetune == "frozen"
        n_patches = backbone.embeddings.patch_embeddings.num_patches
        gen = torch.Generator().manual_seed(0)
        self.register_buffer("eval_noise", torch.rand(1, n_patches, generator=gen), persistent=False)
        self.register_buffer("keep_order", torch.arange(n_patches, dtype=torch.float32)[None],
                             persistent=False)
        trainable = [] if self.head_frozen else \
            list(backbone.layers[self.split :]) + [backbone.layernorm]
        self._setup_finetune(backbone, trainable, finetune)

    @property
    def frozen_is_deterministic(self) -> bool:
        # random masking happens in the embeddings, below every block: with mask_ratio > 0 a
        # training step sees a new mask, so a per-item cache of the frozen part would be wrong
        return self.finetune in ("top", "frozen") and self.mask_ratio == 0.0

    def _noise(self, batch: int) -> torch.Tensor:
        if self.mask_ratio == 0.0:
            return self.keep_order.expand(batch, -1)
        if self.training:
            return torch.rand(batch, self.eval_noise.shape[1], device=self.eval_noise.device)
        return self.eval_noise.expand(batch, -1)

    def forward_frozen(self, pixels: torch.Tensor) -> torch.Tensor:
        """[CLS] + visible patch states after the embeddings (with masking) and lower blocks."""
        self._check_pixels(pixels)
        hidden, _, _ = self.backbone.embeddings(pixels, noise=self._noise(pixels.shape[0]))
        for layer in self.backbone.layers[: self.split]:
            hidden = layer(hidden, None)
        return self.backbone.layernorm(hidden) if self.head_frozen else hidden

    def forward_top(self, hidden: torch.Tensor) -> ModalityOutput:
        for layer in self.backbone.layers[self.split :]:
            hidden = layer(hidden, None)
        if not self.head_frozen:
            hidden = self.backbone.layernorm(hidden)
        tokens = hidden[:, 1:]
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return ModalityOutput(tokens=tokens, mask=mask, pooled=tokens.mean(1))

    def _key_parts(self) -> dict[str, Any]:
        return {"mask_ratio": self.mask_ratio}

    def _top_prefixes(self) -> list[str]:
        head = [] if self.head_frozen else ["layernorm."]
        return [f"layers.{i}." for i in range(self.split, self.n_blocks)] + head

    def save_pretrained(self, path: str | Path) -> Path:
        path = Path(path)
        self.backbone.save_pretrained(path)
        zoo.write_meta(path, {**self._meta(), "family": "vit_mae",
                              "mean": self.pixel_mean.flatten().tolist(),
                              "std": self.pixel_std.flatten().tolist()})
        return path


# -- construction -----------------------------------------------------------------------------------
def _load_timm_folder(path: Path) -> nn.Module:
    import timm

    return timm.create_model(f"local-dir:{path}", pretrained=True)


def _load_mae_folder(path: Path) -> nn.Module:
    from transformers import ViTMAEModel

    return ViTMAEModel.from_pretrained(path, local_files_only=True)


def load_vision_folder(
    path: str | Path, name: str, *, image_size: int = 224, finetune: str = "top",
    top_blocks: int | None = None, mask_ratio: float | None = None,
    pretrained: bool | None = None, display_name: str | None = None,
) -> VisionEncoder:
    """A local folder: timm format (config.json with "architecture") or a HF ViTMAE folder."""
    path = Path(path)
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(
            f"{path} has no config.json; a vision encoder folder is either timm's format "
            "(config.json + model.safetensors, as `save_pretrained` writes) or a HF ViTMAE folder"
        )
    cfg = json.loads(cfg_file.read_text())
    meta = zoo.read_meta(path)
    pretrained = meta.get("pretrained", True) if pretrained is None else pretrained
    label = "pretrained" if pretrained else "random init"
    display = display_name or meta.get("display_name") or f"{name} ({label})"
    name = meta.get("name", name)
    if "architecture" in cfg:
        if mask_ratio is not None:
            raise ValueError(f"model.mask_ratio applies to MAE encoders only; {path} holds the "
                             f"timm model {cfg['architecture']!r}. Leave it None")
        return TimmVisionEncoder(
            _load_timm_folder(path), name=name, display_name=display, pretrained=pretrained,
            image_size=_timm_input_size(cfg, image_size, pretrained), source_image_size=image_size,
            finetune=finetune, top_blocks=top_blocks,
        )
    if cfg.get("model_type") == "vit_mae":
        mean, std = _hf_pixel_stats(path, meta)
        return MAEVisionEncoder(
            _load_mae_folder(path), name=name, display_name=display, pretrained=pretrained,
            source_image_size=image_size, finetune=finetune, top_blocks=top_blocks,
            mask_ratio=mask_ratio, mean=mean, std=std,
        )
    raise ValueError(
        f"{cfg_file} describes neither a timm model (no 'architecture') nor a ViTMAE model "
        f"(model_type {cfg.get('model_type')!r}); supported vision folders: timm, vit_mae"
    )


def _timm_input_size(cfg: dict[str, Any], image_size: int, pretrained: bool) -> int:
    """Pretrained weights run at their native resolution; random-init ones at `image_size`."""
    args = cfg.get("model_args", {})
    if "img_size" in args:  # ViT / Swin are built for one size
        size = args["img_size"]
        return int(size if isinstance(size, int) else size[0])
    if not pretrained:
        return image_size
    return int(cfg.get("pretrained_cfg", {}).get("input_size", (3, 224, 224))[-1])


def _hf_pixel_stats(path: Path, meta: dict[str, Any]) -> tuple[tuple, tuple]:
    if "mean" in meta and "std" in meta:
        return tuple(meta["mean"]), tuple(meta["std"])
    proc = path / "preprocessor_config.json"
    if proc.is_file():
        p = json.loads(proc.read_text())
        return tuple(p.get("image_mean", IMAGENET_MEAN)), tuple(p.get("image_std", IMAGENET_STD))
    return IMAGENET_MEAN, IMAGENET_STD


def _tiny(name: str, image_size: int, **kw: Any) -> VisionEncoder:
    label = f"{name} (random init)"
    base, depth = zoo.split_tiny_depth(name)
    if base == "tiny-mae":
        from transformers import ViTMAEModel

        ratio = DEFAULT_MAE_MASK_RATIO if kw.get("mask_ratio") is None else kw["mask_ratio"]
        backbone = ViTMAEModel(zoo.tiny_mae_config(image_size, ratio, layers=depth or 4))
        return MAEVisionEncoder(backbone, name=name, display_name=label, pretrained=False,
                                source_image_size=image_size, **kw)
    import timm

    if depth is not None and base != "tiny-vit":
        raise ValueError(f"a depth suffix works for tiny-mae and tiny-vit, not {name!r}")
    arch, args = zoo.tiny_timm_spec(base, image_size, layers=depth)
    backbone = timm.create_model(arch, pretrained=False, num_classes=0, **args)
    kw.pop("mask_ratio", None)
    return TimmVisionEncoder(backbone, name=name, display_name=label, pretrained=False,
                             image_size=image_size, source_image_size=image_size, **kw)


def _random_arch(name: str, image_size: int, **kw: Any) -> VisionEncoder:
    """MAE-base / ViT-base dimensions (768 wide, 12 layers, 16-pixel patches at 224), random
    init: the paper's vision architecture for GPU speed benchmarks without a checkpoint."""
    arch = name[len(zoo.RANDOM_PREFIX):]
    label = f"{arch} architecture (random init, benchmark only)"
    if arch == "mae-base":
        from transformers import ViTMAEConfig, ViTMAEModel

        ratio = DEFAULT_MAE_MASK_RATIO if kw.get("mask_ratio") is None else kw["mask_ratio"]
        backbone = ViTMAEModel(ViTMAEConfig(mask_ratio=float(ratio)))
        return MAEVisionEncoder(backbone, name=name, display_name=label, pretrained=False,
                                source_image_size=image_size, **kw)
    if arch == "vit-base":
        import timm

        kw.pop("mask_ratio", None)
        backbone = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0)
        return TimmVisionEncoder(backbone, name=name, display_name=label, pretrained=False,
                                 image_size=224, source_image_size=image_size, **kw)
    raise ValueError(f"no random architecture {arch!r}; choose one of {zoo.RANDOM_ARCH_VISION}")


def default_mask_ratio(name: str) -> float | None:
    """The random-masking ratio encoder `name` uses when model.mask_ratio is None, or None when
    it never masks. A masking MAE returns a random subset of its patches, not a map of the
    image, so a grid over its tokens means nothing (`config` reads it from the registry entry's
    meta and resolves vision_grid to None)."""
    if zoo.split_tiny_depth(name)[0] == "tiny-mae" or name in (
            "mae-base", zoo.RANDOM_PREFIX + "mae-base"):
        return DEFAULT_MAE_MASK_RATIO  # also the facebook/vit-mae-base checkpoint's
    cfg_file = Path(name).expanduser() / "config.json"
    if cfg_file.is_file():
        cfg = json.loads(cfg_file.read_text())
        if cfg.get("model_type") == "vit_mae":
            return float(cfg.get("mask_ratio", DEFAULT_MAE_MASK_RATIO))
    return None


def create_vision_encoder(
    name: str,
    image_size: int = 224,
    finetune: str = "top",
    top_blocks: int | None = None,
    mask_ratio: float | None = None,
) -> VisionEncoder:
    """A vision encoder by name (see `VISION_ENCODERS`), local folder, or any timm model name.

    `image_size` is the size of the stored images: tiny random-init models are built for it;
    pretrained models keep their native resolution and `preprocess` resizes to it. Never
    downloads: a checkpoint missing from the local cache raises `CheckpointNotFoundError`.
    """
    if not isinstance(image_size, int) or image_size <= 0:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    if mask_ratio is not None and default_mask_ratio(name) is None \
            and not Path(name).expanduser().is_dir():
        raise ValueError(f"model.mask_ratio applies to MAE encoders only, not to {name!r}; "
                         "leave it None")
    kw = dict(finetune=finetune, top_blocks=top_blocks, mask_ratio=mask_ratio)
    if zoo.split_tiny_depth(name)[0] in zoo.TINY_VISION:
        return _tiny(name, image_size, **kw)
    if name.startswith(zoo.RANDOM_PREFIX):
        return _random_arch(name, image_size, **kw)
    if offline_weights.canonical(name) in offline_weights.VISION_MODELS:  # weights shipped by pip
        spec = offline_weights.OFFLINE_MODELS[offline_weights.canonical(name)]
        return TimmVisionEncoder(
            offline_weights.load_vision(spec.name), name=spec.name, pretrained=True,
            display_name=spec.display_name, image_size=spec.image_size,
            source_image_size=image_size, finetune=finetune, top_blocks=top_blocks,
        )
    if Path(name).expanduser().is_dir():
        return load_vision_folder(Path(name).expanduser(), name, image_size=image_size, **kw)
    kind, ref = zoo.VISION_ALIASES.get(name, ("timm", name))
    if kind == "hf":
        folder = zoo.require_snapshot(ref, f"vision encoder {name!r}: checkpoint")
        return load_vision_folder(folder, name, image_size=image_size, pretrained=True,
                                  display_name=f"{name} (pretrained)", **kw)
    return _pretrained_timm(name, ref, image_size, finetune, top_blocks)


def _pretrained_timm(
    name: str, arch: str, image_size: int, finetune: str, top_blocks: int | None
) -> VisionEncoder:
    """A timm registry name: its default pretrained weights, from the local HF cache only."""
    import timm
    from timm.models import get_pretrained_cfg

    base = arch.split(".")[0]
    if not timm.is_model(base):
        raise ValueError(
            f"unknown vision encoder {name!r}: not one of {list(zoo.VISION_ENCODERS)}, not a "
            "local folder, and not a timm model name (any timm model name works, e.g. "
            "'convnext_tiny'; see timm.list_models())"
        )
    cfg = get_pretrained_cfg(arch)
    repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not repo:
        raise zoo.CheckpointNotFoundError(
            f"timm model {arch!r} has no pretrained weights on the Hugging Face Hub that could be "
            "cached; save a trained copy with TimmVisionEncoder.save_pretrained and pass its folder"
        )
    folder = zoo.require_snapshot(repo, f"vision encoder {name!r}: timm checkpoint")
    return load_vision_folder(folder, name, image_size=image_size, finetune=finetune,
                              top_blocks=top_blocks, pretrained=True,
                              display_name=f"{name} (pretrained, {repo})")


# -- registry ----------------------------------------------------------------------------------
_PAPER_VISION_ALIASES = {"resnet50": ("ResNet", "resnet-50"), "mae-base": ("MAE", "vit-mae-base"),
                         "swin-base": ("Swin", "swin-b")}
_TINY_VISION_DOCS = {
    "tiny-resnet": "ResNet-50 bottleneck stages, 16-128 channels",
    "tiny-mae": "ViT-MAE encoder, 4 layers x 64, 8-px patches",
    "tiny-swin": "Swin, 2 stages, 32 wide, 4-px patches",
    "tiny-vit": "ViT, 4 layers x 64, 8-px patches",
}


def _vision_hub_missing(name: str) -> str | None:
    kind, ref = zoo.VISION_ALIASES[name]
    if kind == "hf":
        repo = ref
    else:
        from timm.models import get_pretrained_cfg

        repo = getattr(get_pretrained_cfg(ref), "hf_hub_id", None)
    if repo and zoo.cached_snapshot(repo) is not None:
        return None
    return f"{name!r} is not in the local Hugging Face cache; {zoo.download_hint(repo or ref)}"


def _register_vision() -> None:
    for name in zoo.TINY_VISION:
        registry.add(registry.Entry(
            "vision_encoder", name, functools.partial(create_vision_encoder, name),
            description=f"{_TINY_VISION_DOCS[name]} (random init)", weights="random",
            meta=_masking_meta(name)))
    for name in zoo.VISION_ALIASES:
        registry.add(registry.Entry(
            "vision_encoder", name, functools.partial(create_vision_encoder, name),
            _PAPER_VISION_ALIASES.get(name, ()), f"{name}: the paper's checkpoint (local HF "
            "cache)", weights="pretrained",
            availability=functools.partial(_vision_hub_missing, name), meta=_masking_meta(name)))
    for name in offline_weights.VISION_MODELS:
        spec = offline_weights.OFFLINE_MODELS[name]
        registry.add(registry.Entry(
            "vision_encoder", name, functools.partial(create_vision_encoder, name),
            description=spec.display_name, weights="pretrained",
            availability=functools.partial(offline_weights.available_offline, name)))


def _resolve_vision(name: str) -> registry.Entry | None:
    """tiny-<family>-<n>l, random:<arch>, a local folder, or any timm model name."""
    base, depth = zoo.split_tiny_depth(name)
    if base in zoo.TINY_VISION and depth is not None:
        weights, description = "random", f"{base} with {depth} layers (random init)"
    elif name.startswith(zoo.RANDOM_PREFIX) and \
            name[len(zoo.RANDOM_PREFIX):] in zoo.RANDOM_ARCH_VISION:
        weights, description = "random", "paper-size architecture, random init (benchmarks)"
    elif Path(name).expanduser().is_dir():
        weights = "pretrained" if zoo.read_meta(Path(name).expanduser()).get(
            "pretrained", True) else "random"
        description = f"the local folder {name}"
    else:
        import timm

        if not timm.is_model(name.split(".")[0]):
            return None
        weights, description = "pretrained", f"timm model {name} (weights from the local cache)"
    return registry.Entry("vision_encoder", name, functools.partial(create_vision_encoder, name),
                          description=description, weights=weights, meta=_masking_meta(name))


def _masking_meta(name: str) -> dict[str, float]:
    """Registry meta ``default_mask_ratio`` for an encoder that masks patches (`config` turns
    model.vision_grid off for it without importing this module)."""
    ratio = default_mask_ratio(name)
    return {} if ratio is None else {"default_mask_ratio": ratio}


_register_vision()
registry.add_resolver("vision_encoder", _resolve_vision)
