"""Training checkpoints: the weights in ditkit's format plus `train_state.pt`, written as one atomic folder.

Where they lie in a run folder is `ditkit.run_folder`'s (torch-free); this module reads and writes them:

    <out>/checkpoints/0005000/
        config.json, model.safetensors, ema.safetensors   (ditkit.checkpoints.save_model: `load_model` reads it)
        train_state.pt   optimizer, step, EMA counters, data position, RNG states, the run's options

`train_state.pt` holds tensors and plain data only and loads with `torch.load(weights_only=True)`.
A folder appears under its final name only once complete, so an interruption at any moment leaves
the previous checkpoint intact.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ditkit.errors import UserError
from ditkit.run_folder import TRAIN_STATE_FILE, list_checkpoints

STATE_FORMAT = "ditkit-train-state"
STATE_VERSION = 1


@dataclass
class TrainingCheckpoint:
    """A loaded training checkpoint: full (unsharded) CPU state dicts and the train state."""

    path: Path
    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor]
    state: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.state["step"])


def save_training_checkpoint(
    path: str | os.PathLike[str],
    model: torch.nn.Module,
    ema_weights: Mapping[str, torch.Tensor],
    train_state: Mapping[str, Any],
    extra: Mapping[str, Any],
) -> Path:
    """Write one checkpoint folder atomically (call on one process only).

    Args:
        path: the folder, e.g. `checkpoint_path(out, step)`.
        model: a DiT holding the full raw weights.
        ema_weights: full EMA state dict with the model's keys.
        train_state: plain data and tensors (see module docstring); "format" and "version" are added.
        extra: checkpoint metadata ("first_stage", "diffusion", "class_names", "image_size", ...).
    """
    from ditkit.checkpoints import save_model

    state = {"format": STATE_FORMAT, "version": STATE_VERSION, **train_state}

    def add_state(folder: Path) -> None:
        torch.save(state, folder / TRAIN_STATE_FILE)

    return save_model(model, path, ema=ema_weights, extra=extra, add_files=add_state)  # type: ignore[arg-type]


def load_training_checkpoint(path: str | os.PathLike[str]) -> TrainingCheckpoint:
    """Read a checkpoint written by `save_training_checkpoint` (tensors on the CPU)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(path)
    try:
        state = torch.load(folder / TRAIN_STATE_FILE, map_location="cpu", weights_only=True)
        model = load_file(str(folder / "model.safetensors"))
        ema = load_file(str(folder / "ema.safetensors"))
    except FileNotFoundError as err:
        raise UserError(
            f"{folder} is not a complete training checkpoint ({Path(err.filename).name} is missing)"
        ) from err
    except (OSError, RuntimeError, SafetensorError, ValueError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(
            f"cannot read the training checkpoint {folder}: {first}; resume from an older one"
        ) from err
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise UserError(f"{folder / TRAIN_STATE_FILE} is not a ditkit training state")
    if state.get("version") != STATE_VERSION:
        raise UserError(
            f"{folder} has training-state version {state.get('version')}; this ditkit reads {STATE_VERSION}"
        )
    return TrainingCheckpoint(folder, model, ema, state)


def prune_checkpoints(
    out: str | os.PathLike[str], keep: int, protect: Callable[[Path], bool] | None = None
) -> None:
    """Delete all but the newest `keep` checkpoints (keep = 0 keeps everything)."""
    if keep <= 0:
        return
    for _, path in list_checkpoints(out)[:-keep]:
        if protect is None or not protect(path):
            shutil.rmtree(path, ignore_errors=True)


def rng_snapshot() -> dict[str, Any]:
    """This process's global RNG states (CPU and, when present, CUDA).

    ditkit's training draws come from keyed generators (see `ditkit.training.randomness`), so these
    are kept only so that code relying on the global RNG (e.g. a dropout layer added to the model)
    also resumes exactly.
    """
    snap: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        snap["cuda"] = torch.cuda.get_rng_state()
    return snap


def restore_rng(snap: Mapping[str, Any]) -> None:
    torch.set_rng_state(snap["cpu"])
    if "cuda" in snap and torch.cuda.is_available():
        torch.cuda.set_rng_state(snap["cuda"])
