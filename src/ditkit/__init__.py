"""ditkit: Diffusion Transformers (Peebles & Xie, arXiv 2212.09748) on PyTorch.

The public API is imported lazily so that `import ditkit` stays fast and the CLI can
build its parsers without loading torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public name -> module that defines it.
_LAZY: dict[str, str] = {
    "DiT": "ditkit.model.dit",
    "DiTConfig": "ditkit.model.dit",
    "PRESETS": "ditkit.model.presets",
    "create_model": "ditkit.model.presets",
    "get_config": "ditkit.model.presets",
    "count_gflops": "ditkit.model.flops",
    "UserError": "ditkit.errors",
    "create_diffusion": "ditkit.diffusion.compat",
    "GaussianDiffusion": "ditkit.diffusion.gaussian",
    "Schedule": "ditkit.diffusion.schedule",
    "make_schedule": "ditkit.diffusion.schedule",
    "nll_bpd": "ditkit.diffusion.likelihood",
    "sample": "ditkit.samplers.api",
    "classifier_free_guidance": "ditkit.samplers.guidance",
    "ClassifierFreeGuidance": "ditkit.samplers.guidance",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ditkit' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
