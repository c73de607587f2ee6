"""Optional dependencies, imported where they are needed, with a one-line message naming their extra.

The core (model, diffusion, samplers, training on pixels or latent caches, evaluation) needs only
torch, numpy, scipy, safetensors, pillow, tqdm and matplotlib. The rest comes with an extra:

    pip install 'ditkit[diffusers]'     the SD VAE (first stage) and diffusers import/export
    pip install 'ditkit[tensorboard]'   `ditkit train --logger tensorboard`
    pip install 'ditkit[serve]'         `ditkit serve` (Gradio)
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator

from ditkit.errors import UserError

# Extra name -> the top-level modules it installs.
EXTRA_MODULES = {
    "diffusers": ("diffusers", "huggingface_hub", "transformers", "accelerate"),
    "tensorboard": ("tensorboard",),
    "serve": ("gradio",),
}


@contextlib.contextmanager
def optional_dependency(extra: str, purpose: str) -> Iterator[None]:
    """Turn a missing module of `extra` imported inside the block into a UserError saying what to install.

    Example:
        with optional_dependency("diffusers", "the SD VAE"):
            from diffusers import AutoencoderKL
    """
    try:
        yield
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] not in EXTRA_MODULES[extra]:
            raise
        raise UserError(_missing(purpose, err.name or "", extra)) from None


def require_extra(extra: str, purpose: str) -> None:
    """The same one-line UserError as `optional_dependency`, found without importing anything (cheap).

    For a check before slow work, e.g. before loading a checkpoint that only the extra can serve.
    """
    for module in EXTRA_MODULES[extra]:
        if importlib.util.find_spec(module) is None:
            raise UserError(_missing(purpose, module, extra))


def _missing(purpose: str, module: str, extra: str) -> str:
    return f"{purpose} needs {module}, which is not installed: pip install 'ditkit[{extra}]'"
