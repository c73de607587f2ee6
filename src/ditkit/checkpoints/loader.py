"""One loader for every DiT checkpoint: ditkit's own, the official .pt files, diffusers folders.

How a path is recognised:
- a folder with a ditkit `config.json` (+ `ema.safetensors` / `model.safetensors`): ditkit's format,
  including the trainer's resumable checkpoints, which are such folders with more files in them;
- a folder with `model_index.json` (DiTPipeline) or a DiTTransformer2DModel `config.json`: diffusers;
- a `.safetensors` file: ditkit's single-file form if its metadata says so, else official-layout tensors;
- any other file: a PyTorch checkpoint, read with weights_only=True: an official plain state dict or
  the official training dict {"model", "ema", "opt", "args"}.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ditkit.checkpoints.diffusers_interop import is_diffusers_folder, read_diffusers
from ditkit.checkpoints.layout import (
    RawCheckpoint,
    StateDict,
    build_model,
    check_is_dit,
    in_memory,
    infer_config,
    strip_wrappers,
)
from ditkit.checkpoints.native import FORMAT, is_native_folder, native_from_safetensors, read_native_folder
from ditkit.checkpoints.native import read_safetensors as _read_safetensors
from ditkit.checkpoints.official import (
    SINGLE_WEIGHTS,
    extra_from_args,
    load_torch_file,
    num_heads_from_args,
    official_weight_sets,
)
from ditkit.choices import WEIGHT_SETS
from ditkit.errors import UserError
from ditkit.model.dit import DiT, DiTConfig
from ditkit.run_folder import newest_in_run

ConfigArg = DiTConfig | Mapping[str, Any] | None


@dataclass
class LoadedCheckpoint:
    """A model loaded from a checkpoint, with what the checkpoint said about it.

    Attributes:
        model: the DiT, in eval mode, on the requested device.
        config: its config (stored, or inferred from the tensor shapes).
        extra: plain data kept with the weights: "first_stage", "diffusion", "class_names",
            "image_size", "official_args"... ({} when the checkpoint has none).
        kind: "ditkit", "official" or "diffusers".
        weights: the weight set used: "ema", "model", or "weights" (a file with one unnamed set).
        available: every weight set the checkpoint holds.
        notes: what had to be assumed (e.g. the number of heads), one line each.
        source: the path loaded.
    """

    model: DiT
    config: DiTConfig
    extra: dict[str, Any]
    kind: str
    weights: str
    available: tuple[str, ...]
    notes: list[str] = field(default_factory=list)
    source: str = ""


def _from_safetensors_file(path: Path) -> RawCheckpoint:
    tensors, metadata = _read_safetensors(path)
    if metadata.get("format") == FORMAT:
        return native_from_safetensors(path, tensors, metadata)
    if any(k.startswith("transformer_blocks.") for k in tensors):
        if is_diffusers_folder(path.parent):
            return read_diffusers(path.parent)
        raise UserError(
            f"{path} holds diffusers DiT weights without their config.json; pass the whole folder"
        )
    sd = strip_wrappers(tensors)
    check_is_dit(sd, str(path))
    return RawCheckpoint("official", str(path), {SINGLE_WEIGHTS: in_memory(sd)})


def _from_torch_file(path: Path) -> RawCheckpoint:
    sets, args = official_weight_sets(load_torch_file(path), str(path))
    weights = {name: in_memory(sd) for name, sd in sets.items()}
    return RawCheckpoint(
        "official",
        str(path),
        weights,
        extra=extra_from_args(args),
        num_heads_hint=num_heads_from_args(args),
        num_classes_hint=args.get("num_classes") if isinstance(args.get("num_classes"), int) else None,
    )


# Files people pass by mistake, named so that the error says what they are.
NOT_CHECKPOINTS = {
    ".npz": "a NumPy archive (samples or a reference batch)",
    ".json": "a JSON file",
    ".png": "an image",
    ".jpg": "an image",
    ".gif": "an image",
}


def read_checkpoint(path: str | os.PathLike[str]) -> RawCheckpoint:
    """Recognise a checkpoint and read what it holds (weights are read on demand for folders)."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"checkpoint {p} does not exist")
    if p.suffix in NOT_CHECKPOINTS:
        raise UserError(
            f"{p} is {NOT_CHECKPOINTS[p.suffix]}, not a checkpoint; give a training run folder, a checkpoint "
            "folder, a .safetensors or .pt file, or a diffusers folder"
        )
    if p.is_dir():
        p = newest_in_run(p) or p
        if is_native_folder(p):
            return read_native_folder(p)
        if is_diffusers_folder(p):
            return read_diffusers(p)
        raise UserError(
            f"{p} is a folder but neither a ditkit checkpoint (config.json + ema/model.safetensors) nor a "
            "diffusers DiT (model_index.json, or a DiTTransformer2DModel config.json)"
        )
    if p.suffix == ".safetensors":
        return _from_safetensors_file(p)
    return _from_torch_file(p)


def choose_weights(raw: RawCheckpoint, which: str) -> str:
    """The weight set to load: `which` if present; "ema" falls back to the only (or raw) weights."""
    if which not in WEIGHT_SETS:
        raise UserError(f"unknown weights {which!r}; choose one of {', '.join(WEIGHT_SETS)}")
    if which in raw.weights:
        return which
    if SINGLE_WEIGHTS in raw.weights:
        return SINGLE_WEIGHTS
    if which == "ema":
        return "model"
    raise UserError(f"{raw.source} holds only {', '.join(raw.weights)} weights, not {which!r}")


def resolve_config(
    raw: RawCheckpoint, state_dict: StateDict, config: ConfigArg
) -> tuple[DiTConfig, list[str]]:
    """The config to build: the caller's DiTConfig, else the stored or inferred one with overrides applied."""
    if isinstance(config, DiTConfig):
        return config, []
    overrides = dict(config or {})
    if raw.config is None:
        return infer_config(state_dict, overrides, raw.num_heads_hint, raw.num_classes_hint)
    try:
        return dataclasses.replace(raw.config, **overrides), []
    except (TypeError, ValueError) as err:
        raise UserError(f"cannot apply config overrides {overrides} to {raw.source}: {err}") from None


def model_from_raw(
    raw: RawCheckpoint, name: str, config: ConfigArg = None, device: str | torch.device = "cpu"
) -> tuple[DiT, DiTConfig, list[str]]:
    """Build the DiT holding weight set `name` of a read checkpoint; also its config and notes."""
    state_dict = raw.weights[name]()
    cfg, notes = resolve_config(raw, state_dict, config)
    return build_model(cfg, state_dict, raw.source).to(device), cfg, notes


def load_checkpoint(
    path: str | os.PathLike[str],
    config: ConfigArg = None,
    which: str = "ema",
    device: str | torch.device = "cpu",
) -> LoadedCheckpoint:
    """Load a DiT from any checkpoint ditkit knows, with its config, extra data and notes.

    Args:
        path: a ditkit folder or .safetensors, an official .pt (plain or training dict), or a
            diffusers DiTPipeline / DiTTransformer2DModel folder.
        config: a full DiTConfig to use as is, or a dict of fields overriding the stored or inferred
            ones (e.g. {"num_heads": 16} or {"input_size": (32, 64)} for official files).
        which: "ema" (default; falls back to the raw weights when there is no EMA) or "model".
        device: where to put the model.

    Returns:
        The LoadedCheckpoint; `.model` is in eval mode.
    """
    return load_raw(read_checkpoint(path), config, which, device)


def load_raw(
    raw: RawCheckpoint, config: ConfigArg = None, which: str = "ema", device: str | torch.device = "cpu"
) -> LoadedCheckpoint:
    """`load_checkpoint` for a checkpoint already read by `read_checkpoint` (e.g. to check its extra first)."""
    name = choose_weights(raw, which)
    model, cfg, notes = model_from_raw(raw, name, config, device)
    return LoadedCheckpoint(
        model, cfg, dict(raw.extra), raw.kind, name, tuple(raw.weights), raw.notes + notes, raw.source
    )


def load_model(
    path: str | os.PathLike[str],
    config: ConfigArg = None,
    which: str = "ema",
    device: str | torch.device = "cpu",
) -> DiT:
    """Load a DiT (eval mode) from any checkpoint ditkit knows; see `load_checkpoint`."""
    return load_checkpoint(path, config, which, device).model
