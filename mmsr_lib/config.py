"""Typed run configuration: one dataclass tree, saved with every result.

Profiles (`smoke`, `cpu`, `paper`) only choose sizes and names; the code path is the same.
Overrides use dotted keys (``train.lr=1e-3``) so the CLI and notebooks share one syntax.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

PROFILES = ("smoke", "cpu", "paper")


@dataclass
class SynthConfig:
    """Knobs of the embedded synthetic catalog (see ``mmsr_lib.data.synthetic``)."""

    n_users: int = 3000
    n_items: int = 1200
    mean_seq_len: float = 18.0
    image_size: int = 64
    seed: int = 0
    domain: str = "source"  # "source" or "target": same attribute space, different items/users
    popularity_alpha: float = 1.1  # Zipf exponent of the item popularity prior
    cold_share: float = 0.3  # share of items drawn from the long tail (rarely interacted)
    drift: float = 0.15  # chance per step that a user's current interest drifts
    complement: float = 0.3  # chance the next item comes from a complementary category
    text_dropout: float = 0.15  # chance an attribute word is omitted from the text
    noise: float = 0.08  # pixel noise in rendered images
    # item pictures: "rendered" shapes, or "fashion-mnist": real garment photos of the category's
    # class, tinted and patterned (needs Debian's dataset-fashion-mnist; see data/fashion_mnist.py)
    images: str = "rendered"


@dataclass
class DataConfig:
    source: str = "synthetic"  # synthetic | path | movielens-100k
    path: str | None = None  # on-disk data set (format of mmsr_lib.data.format) when source=path
    cache_dir: str = "data"  # where generated/converted data sets are written
    synth: SynthConfig = field(default_factory=SynthConfig)
    min_user_interactions: int = 5
    min_item_interactions: int = 0  # 0 = no item k-core (the paper filters users only)
    max_len: int = 20
    cold_threshold: int = 10  # items with fewer training occurrences are cold
    cold_mode: str = "target"  # target: cold valid/test targets; paper: truncated sub-sequences


@dataclass
class ModelConfig:
    item_encoder: str = "id"  # id | text | vision | mm | vlp
    sequence: str = "sasrec"  # sasrec | gru4rec | nextitnet
    dim: int = 64
    n_layers: int | None = None  # None = the paper's choice per model (2 / 4 / 2)
    n_heads: int = 2
    dropout: float = 0.1
    # multi-modal item encoders (used when item_encoder != "id")
    text_encoder: str = "tiny-roberta"
    vision_encoder: str = "tiny-mae"
    vlp: str = "tiny-flava"
    fusion: str = "merge_attn"
    fusion_layers: int = 1
    finetune: str = "top"  # top | full
    top_blocks: int | None = None  # None = 2 for transformers, 3 for ResNet stages
    text_max_tokens: int = 50
    text_pooling: str = "cls"  # cls | mean
    mask_ratio: float | None = None  # MAE random masking; None = the encoder's default
    item_encoding: str = "fast"  # fast | plain (reference mode, issue 4)


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3  # "downstream": sequence model, fusion, ID embeddings, projections
    encoder_lr: float = 1e-4  # "top": trainable blocks of pretrained encoders
    weight_decay: float = 0.1
    encoder_weight_decay: float = 0.0
    decay_to: float = 0.1  # final learning-rate factor of the linear decay
    decay_frac: float = 0.8  # share of the epochs over which the decay happens (paper: 120/150)
    grad_clip: float = 1.0
    eval_every: int = 1
    patience: int = 5  # validations without improvement of valid NDCG@10 before stopping
    seed: int = 42
    device: str = "auto"  # auto | cpu | cuda
    amp: bool = True  # bf16 autocast on CUDA; ignored on CPU
    num_workers: int = 0
    checkpoint_dir: str = "runs"


@dataclass
class EvalConfig:
    ks: tuple[int, ...] = (10, 20, 50)
    batch_size: int = 256


@dataclass
class RunConfig:
    name: str = "run"
    profile: str = "cpu"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    # -- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        return _from_dict(cls, d)

    def hash(self) -> str:
        """Identity of a run for the results store: everything except the display name."""
        d = self.to_dict()
        d.pop("name", None)
        d["train"].pop("checkpoint_dir", None)
        d["train"].pop("num_workers", None)
        d["data"].pop("cache_dir", None)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def override(self, *overrides: str, **kw: Any) -> RunConfig:
        """A copy with dotted overrides applied: ``cfg.override("train.lr=1e-3", model__dim=32)``."""
        new = copy.deepcopy(self)
        for item in overrides:
            if "=" not in item:
                raise ValueError(f"override {item!r} is not of the form section.key=value")
            key, value = item.split("=", 1)
            _set_dotted(new, key.strip(), value.strip(), parse=True)
        for key, value in kw.items():
            _set_dotted(new, key.replace("__", "."), value, parse=False)
        return new


def _from_dict(cls: type, d: dict[str, Any]) -> Any:
    kwargs = {}
    names = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in d.items():
        if key not in names:
            raise KeyError(f"unknown config field {cls.__name__}.{key}; valid: {sorted(names)}")
        sub = _dataclass_type(cls, key)
        if sub is not None and isinstance(value, dict):
            value = _from_dict(sub, value)
        elif key == "ks" and isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)


_NESTED = {
    ("RunConfig", "data"): DataConfig,
    ("RunConfig", "model"): ModelConfig,
    ("RunConfig", "train"): TrainConfig,
    ("RunConfig", "eval"): EvalConfig,
    ("DataConfig", "synth"): SynthConfig,
}


def _dataclass_type(cls: type, key: str) -> type | None:
    return _NESTED.get((cls.__name__, key))


def _parse_value(text: str, current: Any) -> Any:
    """Parse an override string into the type of the field it replaces."""
    if text.lower() in ("none", "null"):
        return None
    if isinstance(current, bool):
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected a boolean, got {text!r}")
    if isinstance(current, tuple):
        return tuple(int(x) for x in text.strip("()[]").split(",") if x.strip())
    if isinstance(current, int):
        return int(float(text)) if text.replace(".", "", 1).isdigit() else int(text)
    if isinstance(current, float):
        return float(text)
    if current is None:
        for conv in (int, float):
            try:
                return conv(text)
            except ValueError:
                pass
    return text


def _set_dotted(cfg: Any, key: str, value: Any, parse: bool) -> None:
    parts = key.split(".")
    obj = cfg
    for p in parts[:-1]:
        if not hasattr(obj, p):
            raise KeyError(f"unknown config section {p!r} in override {key!r}")
        obj = getattr(obj, p)
    leaf = parts[-1]
    if not dataclasses.is_dataclass(obj) or leaf not in {f.name for f in dataclasses.fields(obj)}:
        valid = [f.name for f in dataclasses.fields(obj)] if dataclasses.is_dataclass(obj) else []
        raise KeyError(f"unknown config field {key!r}; valid here: {valid}")
    if parse and isinstance(value, str):
        value = _parse_value(value, getattr(obj, leaf))
    setattr(obj, leaf, value)


def default_profile() -> str:
    """The profile named by ``MMSR_PROFILE``, else ``cpu``."""
    p = os.environ.get("MMSR_PROFILE", "cpu")
    if p not in PROFILES:
        raise ValueError(f"MMSR_PROFILE={p!r} is not one of {PROFILES}")
    return p


def profile_config(profile: str | None = None, **kw: Any) -> RunConfig:
    """The base configuration of a profile; keyword overrides use ``section__key=value``."""
    profile = profile or default_profile()
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {PROFILES}")
    cfg = RunConfig(profile=profile)
    if profile == "smoke":
        cfg.data.synth = SynthConfig(n_users=300, n_items=200, mean_seq_len=12.0, image_size=32)
        cfg.model.dim = 32
        cfg.train.epochs = 3
        cfg.train.batch_size = 64
        cfg.train.patience = 2
    elif profile == "cpu":
        cfg.data.synth = SynthConfig()
        cfg.model.dim = 64
        cfg.train.epochs = 30
        cfg.train.batch_size = 128
    else:  # paper: the paper's sizes and hyperparameters; data must be prepared on disk
        cfg.data.source = "path"
        cfg.model.dim = 768
        cfg.model.text_encoder = "roberta-base"
        cfg.model.vision_encoder = "mae-base"
        cfg.model.vlp = "flava-full"
        cfg.model.dropout = 0.1
        cfg.train.epochs = 150
        cfg.train.batch_size = 64
        cfg.train.lr = 1e-4
        cfg.train.encoder_lr = 1e-4
        cfg.train.patience = 10
    return cfg.override(**kw) if kw else cfg
