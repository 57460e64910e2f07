"""Typed run configuration: one dataclass tree, saved with every result.

Profiles (`smoke`, `cpu`, `paper`) only choose sizes and names; the code path is the same.
Overrides use dotted keys (``train.lr=1e-3``) so the CLI and notebooks share one syntax.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import typing
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
    source: str = "synthetic"  # a registered data source: synthetic | movielens-100k | path
    path: str | None = None  # on-disk data set (format of mmsr_lib.data.format) when source=path
    cache_dir: str = "data"  # where generated/converted data sets are written (not hashed)
    synth: SynthConfig = field(default_factory=SynthConfig)
    min_user_interactions: int = 5
    min_item_interactions: int = 0  # 0 = no item k-core (the paper filters users only)
    max_len: int = 20
    cold_threshold: int = 10  # items with fewer training occurrences are cold
    cold_mode: str = "target"  # target: cold valid/test targets; paper: truncated sub-sequences
    # all: every training position is a target once; last: only the last L+1 items (the paper's
    # code; on MovieLens-100K it trains on 19% of the positions)
    train_windows: str = "all"


@dataclass
class ModelConfig:
    recommender: str = "sequential"  # sequential (item encoder + sequence model) | mostpop | ...
    item_encoder: str | None = "id"  # id (IDSR) | text (MMSR-T) | vision (MMSR-V) | mm (MMSR) | vlp
    sequence: str | None = "sasrec"  # sasrec | gru4rec | nextitnet
    dim: int = 64
    n_layers: int | None = None  # None = the paper's choice per model (2 / 4 / 2)
    n_heads: int | None = 2  # heads of the sequence model (SASRec)
    dropout: float = 0.1
    # multi-modal item encoders (used when item_encoder != "id"; None elsewhere after resolve)
    text_encoder: str | None = "tiny-roberta"
    vision_encoder: str | None = "tiny-mae"
    vlp: str | None = "tiny-flava"
    fusion: str | None = "merge_attn"
    fusion_layers: int | None = 1
    fusion_heads: int | None = 4  # heads of the attention fusions
    finetune: str | None = "top"  # frozen (nothing trains) | top (the paper's top-k) | full
    top_blocks: int | None = None  # None = 2 for transformers, 3 for ResNet stages
    # None: the encoder's own default (50, the paper's; a VLP caps it at its position table)
    text_max_tokens: int | None = None
    text_pooling: str | None = "cls"  # cls | mean
    mask_ratio: float | None = None  # MAE random masking; None = the encoder's default
    item_encoding: str | None = "fast"  # fast | plain (the paper's code path, for benchmarks)
    # image tokens average-pooled to a g x g map before a token fusion (None: every cell); off
    # (resolved to None) for an MAE that masks: its kept patches are a random subset, not a map
    vision_grid: int | None = None
    # VisualBERT's visual input (Table VII): region | grid | patch-emb | patch-vit; None = grid
    visual_input: str | None = None


@dataclass
class TrainConfig:
    epochs: int | None = None  # None = the profile's budget for this kind of run (PROFILES)
    batch_size: int = 128
    lr: float = 1e-3  # "downstream": sequence model, fusion, ID embeddings, projections
    # "top": trainable blocks of pretrained encoders; None = the profile's choice (see resolve)
    encoder_lr: float | None = None
    weight_decay: float = 0.1
    # bce: one random negative per position (the paper); ce: softmax over the whole catalog
    loss: str = "bce"
    encoder_weight_decay: float | None = 0.0
    # linear: decay over `decay_frac` of the epoch budget (the paper); plateau: halve the rates
    # after `plateau` validations without improvement, whatever the budget (train.LRSchedule)
    # None = the profile's (cpu: plateau for BCE), else linear
    schedule: str | None = None
    decay_to: float = 0.1  # the lowest learning-rate factor either schedule reaches
    # share of the epochs over which the linear decay happens (paper: 120/150); None = plateau
    decay_frac: float | None = 0.8
    # plateau: validations without improvement before the rates halve; None = patience // 2
    plateau: int | None = None
    grad_clip: float = 1.0
    eval_every: int = 1
    # validations without improvement of valid NDCG@10 before stopping; None = the profile's
    patience: int | None = None
    # linear schedule: no early stop before the decay has ended (epoch decay_frac x epochs), so
    # every run anneals; None = the profile's (cpu: for BCE), else off
    stop_after_decay: bool | None = None
    seed: int = 42
    # warm start (transfer, Tables IX-X): a run hash or a checkpoint file whose encoders, fusion
    # and sequence model initialise this run; ID-based weights never carry over
    init_from: str | None = None
    # also evaluate the test split after every epoch (notebook 11: selecting on test, wrongly)
    track_test: bool = False
    device: str = "auto"  # auto | cpu | cuda | cuda:N (not hashed: same numbers intended)
    amp: bool = True  # bf16 autocast on CUDA; ignored on CPU
    # deterministic kernels: the same seed gives the same numbers (not hashed; see util.threads)
    deterministic: bool = True
    num_workers: int = 0  # not hashed
    checkpoint_dir: str = "runs"  # not hashed
    feature_cache: str | None = "data/feature_cache"  # frozen-prefix cache folder; not hashed

    def min_epochs(self) -> int:
        """Epochs before patience may end the run: the end of the linear decay under
        `stop_after_decay`, else 0. One rule for the trainer and the planner's estimate."""
        return round((self.epochs or 0) * self.decay_frac) if self.stop_after_decay else 0


@dataclass
class EvalConfig:
    ks: tuple[int, ...] = (10, 20, 50)
    batch_size: int = 256  # not hashed: metrics do not depend on it (tested)


# where things are written or how fast they run, never what is computed: left out of the hash
UNHASHED = ("name", "train.checkpoint_dir", "train.num_workers", "train.feature_cache",
            "train.device", "train.deterministic", "data.cache_dir", "eval.batch_size")

_SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "eval": EvalConfig}


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

    # -- identity --------------------------------------------------------------------------
    def resolved(self) -> RunConfig:
        """The configuration a run actually uses: names canonical, automatic fields filled in,
        fields the run does not use set to None, every value validated (`ConfigError` names
        the key, the value and what is allowed). Idempotent."""
        return resolve_config(self)

    def hash(self) -> str:
        """Identity of a run for the results store: the *resolved* configuration without the
        fields in `UNHASHED`, so `fusion=sum` and `fusion=summation` are one run."""
        d = self.resolved().to_dict()
        for key in UNHASHED:
            section, _, leaf = key.rpartition(".")
            (d[section] if section else d).pop(leaf, None)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def override(self, *overrides: str, **kw: Any) -> RunConfig:
        """A copy with dotted overrides applied: ``cfg.override("train.lr=1e-3", model__dim=32)``.

        Strings are parsed into the field's declared type; a value of the wrong type (``2.7``
        for an integer, ``abc`` for a number) or an unknown key raises `ConfigError`.
        """
        new = copy.deepcopy(self)
        for item in overrides:
            if not isinstance(item, str) or "=" not in item:
                raise ConfigError(f"override {item!r} is not of the form section.key=value")
            key, value = item.split("=", 1)
            _set_dotted(new, key.strip(), value.strip(), parse=True)
        for key, value in kw.items():
            _set_dotted(new, key.replace("__", "."), value, parse=False)
        return new


class ConfigError(ValueError):
    """A configuration key or value that cannot be used; the message says what is allowed."""


def _from_dict(cls: type, d: dict[str, Any]) -> Any:
    if not isinstance(d, dict):
        raise ConfigError(f"{cls.__name__} must be given as a mapping, got {type(d).__name__}")
    kwargs = {}
    names = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in d.items():
        if key not in names:
            raise ConfigError(f"unknown config field {cls.__name__}.{key}; valid: {sorted(names)}")
        sub = _NESTED.get((cls.__name__, key))
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


def field_types(cls: type) -> dict[str, Any]:
    """Declared type of every field of a config dataclass (annotations resolved)."""
    return typing.get_type_hints(cls)


def _parse_value(text: str, declared: Any, key: str) -> Any:
    """Parse an override string into the field's declared type, strictly (no silent rounding)."""
    optional = type(None) in typing.get_args(declared)
    base = _base_type(declared)
    low = text.strip().lower()
    if low in ("none", "null", "auto") and optional:
        return None
    if base is bool:
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key}={text!r}: expected a boolean (true/false)")
    if base is int:
        return _parse_int(text, key)
    if base is float:
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"{key}={text!r}: expected a number") from None
        return value
    if base is tuple:
        return tuple(_parse_int(x, key) for x in text.strip("()[]").split(",") if x.strip())
    if low in ("none", "null") and not optional:
        raise ConfigError(f"{key} cannot be None")
    return text


def _parse_int(text: str, key: str) -> int:
    t = text.strip()
    try:
        return int(t)
    except ValueError:
        pass
    try:
        value = float(t)
    except ValueError:
        raise ConfigError(f"{key}={text!r}: expected an integer") from None
    if not math.isfinite(value) or value != int(value):
        raise ConfigError(f"{key}={text!r}: expected an integer, not a fraction")
    return int(value)


def _set_dotted(cfg: Any, key: str, value: Any, parse: bool) -> None:
    parts = key.split(".")
    obj = cfg
    for p in parts[:-1]:
        if not dataclasses.is_dataclass(obj) or p not in {f.name for f in dataclasses.fields(obj)}:
            raise ConfigError(f"unknown config section {p!r} in override {key!r}; sections: "
                              f"{sorted(_SECTIONS)}")
        obj = getattr(obj, p)
    leaf = parts[-1]
    fields = {f.name for f in dataclasses.fields(obj)} if dataclasses.is_dataclass(obj) else set()
    if leaf not in fields:
        raise ConfigError(f"unknown config field {key!r}; valid here: {sorted(fields)}")
    current = getattr(obj, leaf)
    if dataclasses.is_dataclass(current):
        sub = sorted(f.name for f in dataclasses.fields(current))
        raise ConfigError(f"{key!r} is a section, not a value; set one of its fields, e.g. "
                          f"{key}.{sub[0]}=... (fields: {sub})")
    if parse and isinstance(value, str):
        value = _parse_value(value, field_types(type(obj))[leaf], key)
    setattr(obj, leaf, value)


def default_profile() -> str:
    """The profile named by ``MMSR_PROFILE``, else ``cpu``."""
    p = os.environ.get("MMSR_PROFILE", "cpu")
    if p not in PROFILES:
        raise ConfigError(f"MMSR_PROFILE={p!r} is not one of {PROFILES}")
    return p


# -- the profile table ---------------------------------------------------------------------------
# Every setting a profile changes, in one place. `BASE` applies to the whole profile; `BY_KIND`
# fills fields left None (automatic) per kind of item encoder at resolve time, and `BY_LOSS`
# per training objective (it wins over `BY_KIND`), so
# `mmsr train --profile cpu --set model.item_encoder=text` is exactly a notebook's MMSR-T row.
# Budgets converge: patience is at least 10% of the epoch budget, so a run that stops early had
# its best epoch in the first 90% of the budget (converged); a run that hits the budget is
# reported as converged only if its best epoch came early enough (`train.FitResult.converged`).
# Every compared row follows the same rule. Seeds: the grids train every row once per seed.
PROFILE_TABLE: dict[str, dict[str, Any]] = {
    "smoke": {
        # CI plumbing, not numbers: a step's cost is mostly encoding the ~200 items a batch
        # touches (the whole catalog), whatever the batch size, so 128 (3 steps an epoch instead
        # of 5) nearly halves a content row (notebook 02's smoke test: 81 s -> 53 / 74 s, README)
        "BASE": {
            "data.synth": dict(n_users=300, n_items=200, mean_seq_len=12.0, image_size=32),
            "model.dim": 32, "train.batch_size": 128, "train.patience": 2,
        },
        "BY_KIND": {"*": {"train.epochs": 3}},
        # random-init encoders train their top blocks at the downstream rate: the paper's smaller
        # rate protects pretrained weights, and there are none to protect
        "encoder_lr": {"pretrained": 1e-4, "random": "lr"},
        "seeds": (42,),
    },
    "cpu": {
        # real pretrained encoders that pip ships, frozen (their output cached; fine-tuning even
        # one 384-wide block costs ~70 s per epoch on a core), mean-pooled as the sentence
        # encoders were trained; every row under one stopping rule (patience 20 of 200). Loss,
        # learning rate and dropout are ID SASRec's, chosen on validation only (`mmsr tune`,
        # docs/results_cpu.md): softmax cross-entropy, lr 3e-3, dropout 0.3 won on both the
        # synthetic catalog (valid NDCG@10 19.29 vs 14.36 at the earlier 1e-3 / 0.1, 13.64 with
        # BCE) and MovieLens-100K (12.77 vs 11.23). GRU4Rec and NextItNet chose their own learning
        # rate and dropout the same way, per data set: the notebooks' grids add it to every row
        # (`workbook.grids.SEQUENCE_SETTINGS`; kept out of this table so that the choice
        # changes the hash of those rows only, not the code fingerprint of every stored run)
        "BASE": {"model.dim": 64, "train.batch_size": 128, "model.text_encoder": "minilm-l6",
                 "model.vision_encoder": "efficientnet-lite1", "model.finetune": "frozen",
                 "model.text_pooling": "mean", "train.loss": "ce", "train.lr": 3e-3,
                 "model.dropout": 0.3,
                 # a fusion over 3x3 image regions instead of every cell (64-81 for the
                 # Lite1/Lite2 maps): a tenth of the cost of a CPU step (multimodal.pool_grid)
                 "model.vision_grid": 3},
        "BY_KIND": {"*": {"train.epochs": 200, "train.patience": 20}},
        # BCE with one negative learns from one sampled item per position, not the catalog: in
        # 200 epochs 3 of Table V's first 15 synthetic runs (ID SASRec 42, VQRec 42 and 44) were
        # still improving (best epoch 188-199); at 400 the linear decay, tied to the budget, let
        # patience stop NextItNet before it annealed. So BCE runs take the `plateau` schedule
        # (rates halved after patience/2 = 20 stalled epochs, to 10%), chosen on validation over
        # the linear decay at 400 and over plateau after 10 stalls (docs/results_cpu.md,
        # notebook 04). It does not depend on the budget, so the cap is only a ceiling: 800 lets
        # the slowest row (VQRec, still improving at 394 of 400 under either schedule) converge
        # without changing any row that stops earlier.
        "BY_LOSS": {"bce": {"train.epochs": 800, "train.patience": 40,
                            "train.schedule": "plateau"}},
        "encoder_lr": {"pretrained": 1e-4, "random": "lr"},
        "seeds": (42, 43, 44),
    },
    "paper": {
        "BASE": {
            "data.source": "path", "model.dim": 768, "model.text_encoder": "roberta-base",
            "model.vision_encoder": "mae-base", "model.vlp": "flava-full", "model.dropout": 0.1,
            "train.batch_size": 64, "train.lr": 1e-4, "train.patience": 15,
        },
        "BY_KIND": {"*": {"train.epochs": 150}},
        "encoder_lr": {"pretrained": 1e-4, "random": 1e-4},
        "seeds": (42,),
    },
}


def profile_seeds(profile: str) -> tuple[int, ...]:
    """The seeds a grid trains every row with on `profile` (cpu: three, smoke and paper: one)."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose one of {PROFILES}")
    return tuple(PROFILE_TABLE[profile]["seeds"])


def profile_config(profile: str | None = None, **kw: Any) -> RunConfig:
    """The base configuration of a profile (see `PROFILE_TABLE`); keyword overrides use
    ``section__key=value``. Automatic fields stay None until `RunConfig.resolved`."""
    profile = profile or default_profile()
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose one of {PROFILES}")
    cfg = RunConfig(profile=profile)
    for key, value in PROFILE_TABLE[profile]["BASE"].items():
        if key == "data.synth":
            cfg.data.synth = SynthConfig(**value)
        else:
            _set_dotted(cfg, key, value, parse=False)
    return cfg.override(**kw) if kw else cfg


# -- resolve: canonical names, automatic fields, unused fields, validation -------------------------
# model fields each item-encoder kind reads (the registry entry's `uses` says which groups)
_GROUP_FIELDS = {
    "text": ("text_encoder", "text_pooling"),
    "tokens": ("text_max_tokens",),  # read by text encoders and vision-language models
    "vision": ("vision_encoder", "mask_ratio", "vision_grid"),
    "fusion": ("fusion", "fusion_layers", "fusion_heads"),
    "vlp": ("vlp", "visual_input"),
    "encoders": ("finetune", "top_blocks", "item_encoding"),
}
_SEQUENCE_FIELDS = ("sequence", "n_layers", "n_heads")
TEXT_TOKENS = 50  # the paper's text length (special tokens included)


def resolve_config(cfg: RunConfig) -> RunConfig:
    """See `RunConfig.resolved`. Components are looked up in `mmsr_lib.util.registry`."""
    from mmsr_lib.util import registry

    out = copy.deepcopy(cfg)
    if out.profile not in PROFILES:
        raise ConfigError(f"profile={out.profile!r}; choose one of {PROFILES}")
    m, t = out.model, out.train
    _check_types(out)
    def lookup(kind: str, key: str, value: Any) -> Any:
        try:
            return registry.lookup(kind, value)
        except registry.UnknownComponentError as err:
            raise ConfigError(f"{key}={value!r}: {err}") from None

    out.data.source = lookup("data_source", "data.source", out.data.source).name
    rec = lookup("recommender", "model.recommender", m.recommender)
    m.recommender = rec.name
    uses = set(rec.meta.get("uses", ()))
    if "item_encoder" in uses:
        enc = lookup("item_encoder", "model.item_encoder", m.item_encoder)
        m.item_encoder = enc.name
        uses |= set(enc.meta.get("uses", ()))
    else:
        m.item_encoder = None
    if "sequence" in uses:
        m.sequence = lookup("sequence", "model.sequence", m.sequence).name
    if "text" in uses:
        m.text_encoder = lookup("text_encoder", "model.text_encoder", m.text_encoder).name
    if "vision" in uses:
        vision = lookup("vision_encoder", "model.vision_encoder", m.vision_encoder)
        m.vision_encoder = vision.name
        default = vision.meta.get("default_mask_ratio")  # MAE-family encoders only
        if default is not None and (default if m.mask_ratio is None else m.mask_ratio) > 0:
            m.vision_grid = None  # a masking MAE's tokens are a random subset, not a map
    if "vlp" in uses:
        m.vlp = lookup("vlp", "model.vlp", m.vlp).name
    if "fusion" in uses:
        fusion = lookup("fusion", "model.fusion", m.fusion)
        m.fusion = fusion.name
        depth = fusion.meta.get("depth")
        if depth is not None:
            m.fusion_layers = depth
        if not fusion.meta.get("attention", False):  # coarse fusions have no layers/heads
            m.fusion_layers = m.fusion_heads = None
    if "text" in uses or "vlp" in uses:
        uses.add("tokens")
    if "text" in uses and m.text_max_tokens is None:
        m.text_max_tokens = TEXT_TOKENS
    # fields this run does not read are None, so they can neither differ between equal runs
    # nor look as if they mattered
    for group, names in _GROUP_FIELDS.items():
        if group not in uses:
            for name in names:
                setattr(m, name, None)
    if "sequence" not in uses:
        for name in _SEQUENCE_FIELDS:
            setattr(m, name, None)
    if rec.meta.get("trainable", True) is False:
        t.seed = 0  # nothing random is drawn: every seed of a grid is the same run
    objectives = rec.meta.get("objectives", ("bce",))
    if rec.meta.get("trainable", True) and t.loss not in objectives:
        raise ConfigError(f"train.loss={t.loss!r} is not available for model.recommender="
                          f"{m.recommender!r}; it trains with {list(objectives)}")
    kind = m.item_encoder or m.recommender
    table = PROFILE_TABLE[out.profile]
    for key, value in {**table["BY_KIND"].get("*", {}), **table["BY_KIND"].get(kind, {}),
                       **table.get("BY_LOSS", {}).get(t.loss, {})}.items():
        section, leaf = key.split(".")
        if getattr(getattr(out, section), leaf) is None:
            setattr(getattr(out, section), leaf, value)
    if t.schedule is None:
        t.schedule = "linear"
    # each schedule's own knobs; the other's are None (not used, so not part of the identity)
    if t.schedule == "plateau":
        t.decay_frac = t.stop_after_decay = None
        if t.plateau is None and t.patience is not None:
            t.plateau = max(1, t.patience // 2)
    elif t.schedule == "linear":
        t.plateau = None
        if t.decay_frac is None:  # a resolved plateau config switched back to linear
            t.decay_frac = TrainConfig.decay_frac
        t.stop_after_decay = bool(t.stop_after_decay)
    if m.finetune == "frozen":  # nothing of the encoders trains: no depth, no encoder rate
        m.top_blocks = None
    if "encoders" in uses and m.finetune != "frozen":
        if t.encoder_lr is None:
            pretrained = _any_pretrained(m, uses, registry)
            rule = table["encoder_lr"]["pretrained" if pretrained else "random"]
            t.encoder_lr = t.lr if rule == "lr" else rule
    else:
        t.encoder_lr = None
        t.encoder_weight_decay = None
    validate(out)
    return out


def _any_pretrained(m: ModelConfig, uses: set[str], registry: Any) -> bool:
    names = [("text_encoder", m.text_encoder), ("vision_encoder", m.vision_encoder),
             ("vlp", m.vlp)]
    group = {"text_encoder": "text", "vision_encoder": "vision", "vlp": "vlp"}
    for kind, name in names:
        if group[kind] in uses and name is not None \
                and registry.lookup(kind, name).weights != "random":
            return True
    return False


def _check_types(cfg: RunConfig) -> None:
    """Every field holds its declared type: an int is not a float or a bool, a float is finite."""
    for section_name, section in (("", cfg), *((s, getattr(cfg, s)) for s in _SECTIONS),
                                  ("data.synth", cfg.data.synth)):
        types = field_types(type(section))
        for f in dataclasses.fields(section):
            value = getattr(section, f.name)
            if dataclasses.is_dataclass(value):
                continue
            key = f"{section_name}.{f.name}" if section_name else f.name
            _check_type(key, value, types[f.name])


def _base_type(declared: Any) -> Any:
    """`int` for ``int | None``, `tuple` for ``tuple[int, ...]``: the type a value must have."""
    if typing.get_origin(declared) is tuple:
        return tuple
    args = typing.get_args(declared)
    base = next((a for a in args if a is not type(None)), declared) if args else declared
    return typing.get_origin(base) or base


def _check_type(key: str, value: Any, declared: Any) -> None:
    if value is None:
        if type(None) in typing.get_args(declared):
            return
        raise ConfigError(f"{key} is None; it needs a value")
    origin = _base_type(declared)
    ok = {
        bool: lambda v: isinstance(v, bool),
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
        and math.isfinite(v),
        str: lambda v: isinstance(v, str),
        tuple: lambda v: isinstance(v, (tuple, list)) and all(
            isinstance(x, int) and not isinstance(x, bool) for x in v),
    }.get(origin)
    if ok is not None and not ok(value):
        what = {int: "an integer", float: "a finite number", bool: "true or false",
                str: "a string", tuple: "a list of integers"}[origin]
        raise ConfigError(f"{key}={value!r} must be {what}")


def _in(key: str, value: Any, allowed: tuple) -> None:
    if value is not None and value not in allowed:
        raise ConfigError(f"{key}={value!r}; choose one of {list(allowed)}")


def _range(key: str, value: Any, lo: float | None = None, hi: float | None = None,
           lo_open: bool = False, hi_open: bool = False, why: str = "") -> None:
    if value is None:
        return
    bad = (lo is not None and (value <= lo if lo_open else value < lo)) or \
          (hi is not None and (value >= hi if hi_open else value > hi))
    if bad:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        span = f"{left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}"
        raise ConfigError(f"{key}={value!r} is out of range; allowed {span}" +
                          (f" ({why})" if why else ""))


def validate(cfg: RunConfig) -> None:
    """Ranges and choices of every field; raises `ConfigError` naming key, value and rule."""
    _check_types(cfg)
    d, m, t, e = cfg.data, cfg.model, cfg.train, cfg.eval
    _range("data.max_len", d.max_len, 1)
    _range("data.min_user_interactions", d.min_user_interactions, 3,
           why="leave-one-out needs a training item plus a validation and a test item")
    _range("data.min_item_interactions", d.min_item_interactions, 0)
    _range("data.cold_threshold", d.cold_threshold, 1)
    _in("data.cold_mode", d.cold_mode, ("target", "paper"))
    _in("data.train_windows", d.train_windows, ("all", "last"))
    _range("model.dim", m.dim, 1)
    _range("model.n_layers", m.n_layers, 1)
    _range("model.n_heads", m.n_heads, 1)
    _range("model.dropout", m.dropout, 0.0, 1.0, hi_open=True)
    _range("model.fusion_layers", m.fusion_layers, 1)
    _range("model.fusion_heads", m.fusion_heads, 1)
    _in("model.finetune", m.finetune, ("frozen", "top", "full"))
    _range("model.top_blocks", m.top_blocks, 0)
    _range("model.text_max_tokens", m.text_max_tokens, 3, why="it counts the special tokens")
    _in("model.text_pooling", m.text_pooling, ("cls", "mean"))
    _range("model.mask_ratio", m.mask_ratio, 0.0, 1.0, hi_open=True)
    _range("model.vision_grid", m.vision_grid, 1)
    _in("model.item_encoding", m.item_encoding, ("fast", "plain"))
    _in("model.visual_input", m.visual_input, ("region", "grid", "patch-emb", "patch-vit"))
    _range("train.epochs", t.epochs, 1)
    _range("train.batch_size", t.batch_size, 1)
    _range("train.lr", t.lr, 0.0, lo_open=True)
    _range("train.encoder_lr", t.encoder_lr, 0.0, lo_open=True)
    _range("train.weight_decay", t.weight_decay, 0.0)
    _range("train.encoder_weight_decay", t.encoder_weight_decay, 0.0)
    _range("train.decay_to", t.decay_to, 0.0, 1.0, lo_open=True)
    _in("train.schedule", t.schedule, ("linear", "plateau"))
    _range("train.decay_frac", t.decay_frac, 0.0, 1.0, lo_open=True)
    _range("train.plateau", t.plateau, 1)
    _range("train.grad_clip", t.grad_clip, 0.0, why="0 turns clipping off")
    _range("train.eval_every", t.eval_every, 1)
    _range("train.patience", t.patience, 1)
    if t.schedule == "plateau" and None not in (t.plateau, t.patience) and t.plateau > t.patience:
        raise ConfigError(f"train.plateau={t.plateau} must not exceed train.patience={t.patience}:"
                          " the rates would never drop before early stopping ends the run")
    _range("train.num_workers", t.num_workers, 0)
    if not (t.device in ("auto", "cpu", "cuda") or (t.device.startswith("cuda:")
                                                    and t.device[5:].isdigit())):
        raise ConfigError(f"train.device={t.device!r}; choose auto, cpu, cuda or cuda:N")
    if not e.ks or any(k < 1 for k in e.ks):
        raise ConfigError(f"eval.ks={e.ks!r} must be positive cut-offs such as 10,20,50")
    _range("eval.batch_size", e.batch_size, 1)
    s = d.synth
    _range("data.synth.n_users", s.n_users, 1)
    _range("data.synth.n_items", s.n_items, 1)
    _range("data.synth.mean_seq_len", s.mean_seq_len, 0.0, lo_open=True)
    _range("data.synth.image_size", s.image_size, 8)
    _in("data.synth.images", s.images, ("rendered", "fashion-mnist"))
