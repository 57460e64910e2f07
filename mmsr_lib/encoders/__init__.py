"""Item-side encoders: text and vision encoders, the offline zoo, top-k fine-tuning.

Names resolve lazily so that `import mmsr_lib.encoders.base` (used by ID-only code paths) does not
pay for importing transformers and timm.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ModalityOutput": "base",
    "TextEncoder": "text",
    "create_text_encoder": "text",
    "EMPTY_TEXT": "text",
    "VisionEncoder": "vision",
    "TimmVisionEncoder": "vision",
    "MAEVisionEncoder": "vision",
    "create_vision_encoder": "vision",
    "TEXT_ENCODERS": "zoo",
    "VISION_ENCODERS": "zoo",
    "CheckpointNotFoundError": "zoo",
    "set_finetune": "finetune",
    "trainable_parameter_names": "finetune",
    "FINETUNE_MODES": "finetune",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
    return getattr(module, name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
