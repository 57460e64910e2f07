"""Visual inputs of VisualBERT (paper Table VII): region, grid, patch-emb and patch-ViT features.

VisualBERT has no vision encoder of its own: it reads a sequence of visual feature vectors made
by some other network. The paper compares four such networks:

- ``region``: Faster R-CNN detections (score >= 0.05, at most 49 boxes per image); each box's
  feature is its RoI-aligned 7 x 7 window of the detector's backbone map, averaged (the 2048-wide
  C5 map of ResNet-50-FPN, as bottom-up features are). An image without a box above the
  threshold gets one whole-image box, so every item has at least one visual token;
- ``grid``: the last ResNet-50 feature map, 7 x 7 = 49 cells of 2048;
- ``patch-emb``: CLIP-ViT's patch embedding (class token, positions, pre-norm) without any
  transformer block;
- ``patch-vit``: CLIP-ViT with its transformer blocks (12 for ViT-B/32).

The extractor never trains, in either fine-tuning mode: VisualBERT's recipe feeds it fixed
features, and a fixed extractor is what makes them cacheable. The detector is also expensive
and its box selection (thresholds, NMS) has no gradient, so its outputs are computed once per
image (`RegionFeatures`), in every item-encoding mode, and counted (`detector_images`).

Three sizes, never swapped silently for one another:

- ``tiny`` (random init, for smoke runs): a 3-conv detector on 64 px with one object class (so
  a random detector still proposes boxes above the threshold) and 100 proposals, a ResNet-50 of bottleneck blocks at widths
  16-128 with output stride 8 on 56 px (7 x 7 cells), a 4-block 64-wide CLIP-ViT on 56 px with
  8-px patches (7 x 7 patches);
- ``full`` with ``pretrained=False``: the real architectures from their constructors with
  ``weights=None`` (random init, labelled so; for speed and memory benchmarks);
- ``full`` with ``pretrained=True`` (the paper profile): COCO Faster R-CNN R50-FPN from the local
  torch hub cache, timm's ResNet-50 and openai/clip-vit-base-patch32 from the local Hugging Face
  cache. A missing file raises `CheckpointNotFoundError` that says how to get it; nothing is
  downloaded at run time.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmsr_lib.encoders import zoo
from mmsr_lib.encoders.finetune import frozen_weights_digest

log = logging.getLogger("mmsr.encoders")

VISUAL_INPUTS = ("region", "grid", "patch-emb", "patch-vit")
EXTRACTOR_SIZES = ("tiny", "full")
MAX_REGIONS = 49  # the paper: "select 49 regions from each image"
SCORE_THRESHOLD = 0.05  # the paper's detection threshold
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_REPO = "openai/clip-vit-base-patch32"
_KEY_VERSION = "visual-v1"


def check_visual_input(value: str) -> str:
    """A `model.visual_input` value, checked early with the choices in the message."""
    if value not in VISUAL_INPUTS:
        raise ValueError(f"unknown model.visual_input {value!r}; choose one of {VISUAL_INPUTS}")
    return value


class Pixels:
    """uint8 images [N, H, W, 3] -> normalised float pixels [N, 3, R, R] at a model's resolution.

    What the Hugging Face / timm image processors do for square images (resize, scale, normalise);
    the stored images are square, so their centre crop is the identity.
    """

    def __init__(self, size: int, mean: tuple[float, ...], std: tuple[float, ...],
                 interpolation: str = "bicubic") -> None:
        self.size = int(size)
        self.mean = tuple(float(x) for x in mean)
        self.std = tuple(float(x) for x in std)
        self.interpolation = interpolation

    def __call__(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        x = images if torch.is_tensor(images) else torch.from_numpy(np.ascontiguousarray(images))
        if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != torch.uint8:
            raise ValueError(f"expected uint8 RGB images [N, H, W, 3], got {x.dtype} "
                             f"{tuple(x.shape)}")
        x = x.permute(0, 3, 1, 2).float() / 255.0
        if tuple(x.shape[-2:]) != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode=self.interpolation,
                              align_corners=False, antialias=True).clamp_(0.0, 1.0)
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return ((x - mean) / std).contiguous()

    def identity(self) -> dict[str, Any]:
        return {"size": self.size, "mean": self.mean, "std": self.std,
                "interpolation": self.interpolation}


class VisualExtractor(nn.Module):
    """A frozen network that turns images into VisualBERT's visual tokens.

    `extract(images uint8) -> (features [B, n_tokens, out_dim], mask [B, n_tokens] bool)`.
    Its parameters never train and it stays in eval mode whatever its parent does.
    """

    kind: str
    name: str
    display_name: str
    pretrained: bool
    out_dim: int
    n_tokens: int
    pixels: Pixels
    # what FrozenCache.invalid_reason reads: the extractor never trains, so it is always cacheable
    finetune = "none"
    frozen_is_deterministic = True

    def _freeze(self) -> None:
        for p in self.parameters():
            p.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> VisualExtractor:
        return super().train(False)  # frozen: dropout off, BatchNorm on running statistics

    @torch.no_grad()
    def extract(self, images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        device = next(self.parameters()).device
        feats = self.features(self.pixels(images).to(device))
        return feats, torch.ones(feats.shape[:2], dtype=torch.bool, device=feats.device)

    def features(self, pixels: torch.Tensor) -> torch.Tensor:  # pragma: no cover - per kind
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        return {}

    def cache_key(self) -> str:
        """Changes whenever the features of an image could change (weights, sizes, settings)."""
        identity = {"version": _KEY_VERSION, "kind": self.kind, "name": self.name,
                    "weights": frozen_weights_digest(self, []), "pixels": self.pixels.identity(),
                    **self.settings()}
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]
        return f"visual:{self.kind}:{digest}"

    def extra_repr(self) -> str:
        return f"name={self.display_name!r}, tokens={self.n_tokens}, dim={self.out_dim}"


# -- grid: a ResNet-50 feature map ----------------------------------------------------------------
class GridExtractor(VisualExtractor):
    """The cells of ResNet-50's last feature map (7 x 7 = 49 at 224 px)."""

    kind = "grid"

    def __init__(self, size: str = "tiny", pretrained: bool = False) -> None:
        super().__init__()
        import timm

        if size == "tiny":
            if pretrained:
                raise ValueError("the tiny grid extractor has no pretrained weights")
            # ResNet-50's bottleneck blocks at small widths; output stride 8 on 56 px = 7 x 7
            self.net = timm.create_model("resnet50", pretrained=False, num_classes=0,
                                         layers=(1, 1, 1, 1), channels=(16, 32, 64, 128),
                                         output_stride=8)
            self.name, res = "tiny-resnet50-grid", 56
            self.display_name = "ResNet-50 bottleneck grid, 16-128 wide, 7x7 (random init)"
            mean, std = IMAGENET_MEAN, IMAGENET_STD
        elif pretrained:
            from mmsr_lib.encoders.vision import create_vision_encoder

            # the vision zoo's resnet50: timm weights from the local HF cache, or a clear error
            enc = create_vision_encoder("resnet50", finetune="top", top_blocks=0)
            self.net = enc.backbone
            self.name, res = "resnet50", enc.image_size
            self.display_name = f"{enc.display_name} grid"
            mean = tuple(enc.pixel_mean.flatten().tolist())
            std = tuple(enc.pixel_std.flatten().tolist())
        else:
            self.net = timm.create_model("resnet50", pretrained=False, num_classes=0)
            self.name, res = "resnet50", 224
            self.display_name = "ResNet-50 grid (random init)"
            mean, std = IMAGENET_MEAN, IMAGENET_STD
        self.pretrained = pretrained
        self.pixels = Pixels(res, mean, std, interpolation="bilinear")
        with torch.no_grad():
            probe = self.net.forward_features(torch.zeros(1, 3, res, res))
        self.out_dim, self.n_tokens = int(probe.shape[1]), int(probe.shape[2] * probe.shape[3])
        self._freeze()

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.net.forward_features(pixels).flatten(2).transpose(1, 2)


# -- patch-emb / patch-vit: CLIP-ViT ---------------------------------------------------------------
def tiny_clip_vision_config(image_size: int, layers: int = 4, patch_size: int = 8) -> Any:
    """A 64-wide CLIP ViT (2 heads, MLP 128) for `image_size` px with `patch_size` px patches."""
    from transformers import CLIPVisionConfig

    if image_size % patch_size:
        raise ValueError(f"image size {image_size} is not a multiple of the patch size "
                         f"{patch_size}")
    return CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                            num_attention_heads=2, image_size=image_size, patch_size=patch_size,
                            projection_dim=64)


def load_clip_model(repo: str, what: str) -> tuple[Any, Path]:
    """A CLIPModel from the local Hugging Face cache only (CheckpointNotFoundError if absent)."""
    from transformers import CLIPModel

    folder = zoo.require_snapshot(repo, what)
    return CLIPModel.from_pretrained(folder, local_files_only=True), folder


def pixel_stats(folder: Path, mean: tuple, std: tuple) -> tuple[tuple, tuple]:
    """image_mean / image_std of a checkpoint's preprocessor_config.json, else the defaults."""
    proc = Path(folder) / "preprocessor_config.json"
    if proc.is_file():
        p = json.loads(proc.read_text())
        return tuple(p.get("image_mean", mean)), tuple(p.get("image_std", std))
    return mean, std


class PatchExtractor(VisualExtractor):
    """CLIP-ViT tokens: after the patch embedding only (patch-emb) or after every block."""

    def __init__(self, kind: str, size: str = "tiny", pretrained: bool = False) -> None:
        super().__init__()
        if kind not in ("patch-emb", "patch-vit"):
            raise ValueError(f"PatchExtractor kind {kind!r}; choose patch-emb or patch-vit")
        self.kind = kind
        from transformers import CLIPVisionConfig, CLIPVisionModel

        mean, std = CLIP_MEAN, CLIP_STD
        if size == "tiny":
            if pretrained:
                raise ValueError("the tiny patch extractor has no pretrained weights")
            self.vit = CLIPVisionModel(tiny_clip_vision_config(56))
            self.name = "tiny-clip-vit"
            label = "CLIP-ViT 4 blocks x 64, 8-px patches, 56 px (random init)"
        elif pretrained:
            clip, folder = load_clip_model(CLIP_REPO, f"visual input {kind!r}: checkpoint")
            self.vit = clip.vision_model
            mean, std = pixel_stats(folder, mean, std)
            self.name, label = CLIP_REPO, f"{CLIP_REPO} (pretrained)"
        else:
            self.vit = CLIPVisionModel(CLIPVisionConfig(patch_size=32))
            self.name, label = "clip-vit-base-patch32", "CLIP ViT-B/32 (random init)"
        cfg = self.vit.config
        blocks = len(self.vit.encoder.layers)
        what = "patch embedding only" if kind == "patch-emb" else f"{blocks} blocks"
        self.display_name = f"{label}, {what}"
        self.pretrained = pretrained
        self.pixels = Pixels(cfg.image_size, mean, std)
        self.out_dim = int(cfg.hidden_size)
        self.n_tokens = (cfg.image_size // cfg.patch_size) ** 2 + 1
        self._freeze()

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        h = self.vit.pre_layrnorm(self.vit.embeddings(pixels))
        if self.kind == "patch-vit":
            for layer in self.vit.encoder.layers:
                h = layer(h, None)
        return h


# -- region: Faster R-CNN ---------------------------------------------------------------------------
class _TinyDetectorBackbone(nn.Sequential):
    """Three stride-2 convolutions (stride 8, 64 channels): a detector backbone for smoke runs."""

    out_channels = 64

    def __init__(self) -> None:
        super().__init__(
            nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(inplace=True),
        )


def detector_weights_file() -> Path:
    """Where torchvision keeps the COCO Faster R-CNN R50-FPN weights (the torch hub cache)."""
    from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights

    url = FasterRCNN_ResNet50_FPN_Weights.COCO_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def _detector_weights() -> dict[str, torch.Tensor]:
    """The COCO Faster R-CNN R50-FPN state dict from the local torch hub cache (never fetched)."""
    file = detector_weights_file()
    if not file.is_file():
        raise zoo.CheckpointNotFoundError(
            f"visual input 'region': the COCO Faster R-CNN weights {file.name} are not in the "
            f"local torch hub cache ({file.parent}) and this library never downloads at run "
            "time; on a machine with internet run `python -c \"import torchvision; torchvision."
            "models.detection.fasterrcnn_resnet50_fpn(weights='COCO_V1')\"` and copy "
            f"{file.name} into {file.parent} here (or set $TORCH_HOME)"
        )
    return torch.load(file, map_location="cpu", weights_only=True)


class RegionExtractor(VisualExtractor):
    """Faster R-CNN boxes (score >= 0.05, at most 49) and their RoI-aligned backbone features."""

    kind = "region"

    def __init__(self, size: str = "tiny", pretrained: bool = False,
                 score_threshold: float = SCORE_THRESHOLD, max_regions: int = MAX_REGIONS) -> None:
        super().__init__()
        from torchvision.models.detection import FasterRCNN, fasterrcnn_resnet50_fpn
        from torchvision.models.detection.anchor_utils import AnchorGenerator
        from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
        from torchvision.ops import MultiScaleRoIAlign

        self.score_threshold, self.max_regions = float(score_threshold), int(max_regions)
        common = dict(box_score_thresh=self.score_threshold,
                      box_detections_per_img=self.max_regions)
        if size == "tiny":
            if pretrained:
                raise ValueError("the tiny detector has no pretrained weights")
            backbone = _TinyDetectorBackbone()
            # one object class (+ background): class-agnostic boxes, as bottom-up proposals are;
            # with 91 random classes no score would ever reach the 0.05 threshold
            self.detector = FasterRCNN(
                backbone, num_classes=None, min_size=64, max_size=64,
                rpn_anchor_generator=AnchorGenerator(((8, 16, 32),), ((0.5, 1.0, 2.0),)),
                box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2),
                box_head=TwoMLPHead(64 * 7 * 7, 128), box_predictor=FastRCNNPredictor(128, 2),
                rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=100,  # 1000 at full size
                **common,
            )
            self.name = "tiny-faster-rcnn"
            self.display_name = "Faster R-CNN, 3-conv backbone, 1 class, 64 px (random init)"
            self.out_dim = backbone.out_channels
        else:
            weights = _detector_weights() if pretrained else None  # fails before building
            self.detector = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, **common)
            if weights is not None:
                self.detector.load_state_dict(weights)
            self.name = "fasterrcnn_resnet50_fpn"
            self.display_name = ("Faster R-CNN R50-FPN " +
                                 ("(COCO, pretrained)" if pretrained else "(random init)"))
            self.out_dim = 2048  # the C5 map that the boxes are pooled from
        self.pretrained = pretrained
        self.n_tokens = self.max_regions
        # the detector resizes and normalises itself (`detector.transform`); recorded for the key
        t = self.detector.transform
        self.pixels = Pixels(int(t.min_size[0]), tuple(t.image_mean), tuple(t.image_std),
                             interpolation=f"bilinear, max {t.max_size}")
        self.detector_images = 0  # images run through the detector (each once, see RegionFeatures)
        self.detector_calls = 0
        self._freeze()

    def settings(self) -> dict[str, Any]:
        return {"score_threshold": self.score_threshold, "max_regions": self.max_regions}

    def _roi_map(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(map the boxes are pooled from, the detector's feature maps)."""
        backbone = self.detector.backbone
        if hasattr(backbone, "body"):  # ResNet-FPN: pool from C5 (2048 channels)
            body = backbone.body(x)
            return body[list(body)[-1]], backbone.fpn(body)
        out = backbone(x)
        return out, OrderedDict([("0", out)])

    @torch.no_grad()
    def extract(self, images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(features [B, max_regions, out_dim], mask [B, max_regions]); counts the images."""
        from torchvision.ops import roi_align

        device = next(self.parameters()).device
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
        det = self.detector
        batch, _ = det.transform(list(x.to(device)))
        source, maps = self._roi_map(batch.tensors)
        proposals, _ = det.rpn(batch, maps)
        detections, _ = det.roi_heads(maps, proposals, batch.image_sizes)
        self.detector_images += len(x)
        self.detector_calls += 1
        scale = source.shape[-1] / batch.tensors.shape[-1]
        feats = torch.zeros(len(x), self.max_regions, source.shape[1], device=device)
        mask = torch.zeros(len(x), self.max_regions, dtype=torch.bool, device=device)
        for i, (d, (h, w)) in enumerate(zip(detections, batch.image_sizes, strict=True)):
            boxes = d["boxes"][: self.max_regions]
            if len(boxes) == 0:  # nothing above the threshold: the whole image is the region
                boxes = torch.tensor([[0.0, 0.0, float(w), float(h)]], device=device)
            pooled = roi_align(source[i : i + 1], [boxes], output_size=7, spatial_scale=scale,
                               sampling_ratio=2, aligned=True)
            feats[i, : len(boxes)] = pooled.mean((2, 3))
            mask[i, : len(boxes)] = True
        return feats, mask


class RegionFeatures:
    """Region features of every image in the store, each computed once, on first use.

    Keyed by image row (row -1, the placeholder of an item without an image, is one more image).
    Lives in memory for the life of the item encoder, in plain and fast item encoding alike: the
    detector is an input pipeline, not a part of the trained model.
    """

    def __init__(self, extractor: RegionExtractor, store: Any, batch_size: int = 32) -> None:
        self.extractor = extractor
        self.store = store
        self.batch_size = batch_size
        n = len(store) + 1  # slot 0 = row -1
        self.done = np.zeros(n, dtype=bool)
        self.features = torch.zeros(n, extractor.max_regions, extractor.out_dim)
        self.mask = torch.zeros(n, extractor.max_regions, dtype=torch.bool)

    def get(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, mask) of image `rows` (CPU tensors), running the detector on new ones."""
        slots = np.asarray(rows, dtype=np.int64) + 1
        todo = np.unique(slots[~self.done[slots]])
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            feats, mask = self.extractor.extract(self.store.get(chunk - 1))
            self.features[chunk] = feats.cpu()
            self.mask[chunk] = mask.cpu()
            self.done[chunk] = True
        idx = torch.from_numpy(slots)
        return self.features[idx], self.mask[idx]


def create_visual_extractor(kind: str, size: str = "tiny", pretrained: bool = False
                            ) -> VisualExtractor:
    """The frozen extractor of one of `VISUAL_INPUTS`, tiny (random init) or full size."""
    check_visual_input(kind)
    if size not in EXTRACTOR_SIZES:
        raise ValueError(f"extractor size {size!r}; choose one of {EXTRACTOR_SIZES}")
    if kind == "region":
        return RegionExtractor(size, pretrained)
    if kind == "grid":
        return GridExtractor(size, pretrained)
    return PatchExtractor(kind, size, pretrained)
