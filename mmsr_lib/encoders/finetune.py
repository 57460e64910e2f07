"""Top-k fine-tuning: which parameters of a pretrained encoder train, and which part stays frozen.

The paper fine-tunes only the top two transformer blocks of every encoder (the top three
bottleneck blocks of ResNet-50) plus the final norms/projections; `finetune="full"` trains
everything (Table XI). Two things must hold for the frozen lower part, and both are easy to get
wrong (the paper's own code froze the *top* layers):

- its parameters have ``requires_grad=False``, so the optimiser never sees them;
- it stays in eval mode when a parent module calls ``.train()``: dropout off and BatchNorm using
  its running statistics, so its output for an item is a constant. That constancy is what lets
  `FrozenCache` compute it once per item.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Sequence

import torch
from torch import nn

# frozen: nothing of the encoder trains (its whole output is cached; the cpu profile's choice);
# top: the paper's top-k blocks; full: everything (Table XI)
FINETUNE_MODES = ("frozen", "top", "full")


def check_finetune(finetune: str) -> str:
    """Validate a `model.finetune` value early, with the accepted choices in the message."""
    if finetune not in FINETUNE_MODES:
        raise ValueError(f"unknown model.finetune {finetune!r}; choose one of {FINETUNE_MODES}")
    return finetune


def resolve_top_blocks(top_blocks: int | None, n_blocks: int, default: int, what: str) -> int:
    """`top_blocks` (None = the family default) checked against the number of blocks there are."""
    k = default if top_blocks is None else top_blocks
    k = min(k, n_blocks) if top_blocks is None else k
    if not 0 <= k <= n_blocks:
        raise ValueError(
            f"model.top_blocks={top_blocks} is out of range for {what}, which has {n_blocks} "
            f"blocks; use a value in 0..{n_blocks} (0 trains only the final norm/projection)"
        )
    return k


def trainable_parameter_names(module: nn.Module) -> list[str]:
    """Names of the parameters of `module` that the optimiser will update (requires_grad)."""
    return [name for name, p in module.named_parameters() if p.requires_grad]


def frozen_modules(root: nn.Module, trainable: Sequence[nn.Module]) -> list[nn.Module]:
    """The largest submodules of `root` that contain none of the `trainable` modules.

    Putting exactly these in eval mode switches off dropout/BatchNorm updates below the top
    without touching the trainable blocks (which may be nested inside the same containers).
    """
    wanted = {id(m) for m in trainable}
    if id(root) in wanted:
        return []
    holders: set[str] = set()  # names of the modules that contain a trainable module
    for name, m in root.named_modules():
        if id(m) in wanted:
            parts = name.split(".")
            holders.update(".".join(parts[:i]) for i in range(len(parts)))
    out: list[nn.Module] = []

    def walk(m: nn.Module, prefix: str) -> None:
        for child_name, child in m.named_children():
            name = f"{prefix}.{child_name}" if prefix else child_name
            if id(child) in wanted:
                continue
            if name in holders:
                walk(child, name)
            else:
                out.append(child)

    walk(root, "")
    return out


def set_finetune(
    root: nn.Module,
    trainable: Sequence[nn.Module],
    finetune: str,
    fixed: Collection[str] = (),
) -> list[nn.Module]:
    """Apply a fine-tuning mode to `root`; returns the modules that must stay in eval mode.

    top: only parameters inside `trainable` (the top blocks plus final norms/projections) train.
    frozen: nothing trains (callers pass no trainable modules). full: every parameter trains. `fixed` names parameters that never train in either mode
    because the architecture defines them as constants (e.g. MAE's sin-cos position table).
    """
    check_finetune(finetune)
    inside = {id(p) for m in trainable for p in m.parameters()}
    for name, p in root.named_parameters():
        train = finetune == "full" or id(p) in inside
        p.requires_grad_(train and name not in fixed)
    if finetune == "full":
        return []
    frozen = frozen_modules(root, trainable)
    for m in frozen:
        m.eval()
    return frozen


class PartlyFrozen(nn.Module):
    """Base of the text and vision encoders: remembers its frozen part and keeps it in eval mode.

    Subclasses call `_setup_finetune` once the backbone and its top modules are known.
    """

    finetune: str

    def _setup_finetune(
        self, backbone: nn.Module, trainable: Sequence[nn.Module], finetune: str
    ) -> None:
        if not hasattr(self, "_fixed_params"):
            # constants of the architecture, recorded before any mode flips requires_grad
            self._fixed_params = {n for n, p in backbone.named_parameters() if not p.requires_grad}
        self._ft_backbone = [backbone]  # a list: not registered twice as a submodule
        self._ft_trainable = list(trainable)
        self.finetune = check_finetune(finetune)
        self._eval_modules = set_finetune(backbone, trainable, finetune, self._fixed_params)
        self.train(self.training)

    def set_finetune(self, finetune: str) -> None:
        """Switch between "top" and "full" after construction (changes `cache_key()`)."""
        self._setup_finetune(self._ft_backbone[0], self._ft_trainable, finetune)

    @property
    def frozen_is_deterministic(self) -> bool:
        """True when the frozen part's output for an item never changes (so it can be cached)."""
        return self.finetune in ("top", "frozen")

    def _cache_key(self, kind: str, version: str, parts: dict) -> str:
        """`cache_key()` of a modality: the frozen part's identity (backbone class, name, digest
        of the frozen weights, fine-tuning mode) plus the modality's own input settings."""
        identity = {
            "version": version,
            "class": type(self.backbone).__name__,
            "name": self.name,
            "weights": frozen_weights_digest(self.backbone, self._top_prefixes()),
            "finetune": self.finetune,
            **parts,
        }
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]
        return f"{kind}:{safe_name(self.name)}:{digest}"

    def train(self, mode: bool = True) -> PartlyFrozen:
        super().train(mode)
        for m in getattr(self, "_eval_modules", ()):
            m.train(False)
        return self


def frozen_weights_digest(module: nn.Module, top_prefixes: list[str]) -> str:
    """Checksum of every tensor of `module` outside the top blocks (the frozen part)."""
    h = hashlib.blake2b(digest_size=16)
    for name, t in module.state_dict().items():
        if any(name.startswith(p) for p in top_prefixes):
            continue
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().to("cpu").contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def safe_name(name: str) -> str:
    """`name` reduced to characters that are safe in a cache key or file name."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[-40:]
