"""Training DiTs: the official recipe on 1 or N processes, with exact resume and a graceful stop.

from ditkit.training import TrainConfig, train
result = train(TrainConfig(model="DiT-XS/4", data="fashion-mnist", image_size=28, steps=1000, out="runs/x"))

Names are imported lazily: `ditkit.training.config` (the options, read by the CLI to build its flags)
loads without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

# Public name -> module that defines it.
_LAZY = {
    "TrainConfig": "ditkit.training.config",
    "TrainResult": "ditkit.training.result",
    "train": "ditkit.training.trainer",
    "latest_checkpoint": "ditkit.run_folder",
    "load_training_checkpoint": "ditkit.training.state",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'ditkit.training' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
