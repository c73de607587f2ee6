"""Reading a first stage's weights from one file without running pickled code."""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ditkit.errors import UserError

WEIGHT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors file or of a torch.save file (read with weights_only=True).

    A checkpoint that nests its weights under "state_dict" (original LDM, PyTorch Lightning) is unwrapped.

    Raises:
        UserError: an unknown suffix, an unreadable file, or no state dict in it.
    """
    suffix = path.suffix.lower()
    if suffix not in WEIGHT_SUFFIXES:
        raise UserError(f"{path} is not a weights file; expected one of {', '.join(WEIGHT_SUFFIXES)}")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        if suffix == ".safetensors":
            state: Any = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, ValueError, RuntimeError, EOFError, pickle.UnpicklingError, SafetensorError) as err:
        raise UserError(
            f"cannot read weights from {path}: {first_line(err)}; convert it to .safetensors"
        ) from err
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]  # original LDM / Lightning checkpoints nest the weights
    if not isinstance(state, Mapping):
        raise UserError(f"{path} holds no state dict")
    return {key: value for key, value in state.items() if isinstance(value, torch.Tensor)}


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
