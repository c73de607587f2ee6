"""ditkit's own checkpoint format: safetensors weights plus a JSON config.

A checkpoint is a folder:

    config.json         {"format": "ditkit", "format_version": 1, "config": <DiTConfig.to_dict()>,
                         "weights": ["ema", "model"], "extra": {...}}
    ema.safetensors     EMA weights (when saved)
    model.safetensors   raw (training) weights (when saved)
    ...                 anything else the writer adds, e.g. the trainer's train_state.pt

or a single `.safetensors` file holding one weight set. Every safetensors file ditkit writes carries
the same information in its metadata (string values: "format", "format_version", "weights" (the set
name), "config" and "extra" as JSON), so a weights file copied out of a folder still loads alone.
Tensor names are the official DiT keys. `extra` is open plain data; the keys ditkit uses are
"first_stage", "diffusion", "class_names" and "image_size".
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from ditkit.atomic import atomic_folder, atomic_path
from ditkit.checkpoints.layout import RawCheckpoint, StateDict, in_memory
from ditkit.errors import UserError
from ditkit.model.dit import DiT, DiTConfig

FORMAT = "ditkit"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
# Weight-set name -> file name inside a checkpoint folder.
WEIGHT_FILES = {"ema": "ema.safetensors", "model": "model.safetensors"}


def _tensors(weights: nn.Module | Mapping[str, torch.Tensor], like: Mapping[str, torch.Tensor]) -> StateDict:
    sd = weights.state_dict() if isinstance(weights, nn.Module) else dict(weights)
    if set(sd) != set(like) or any(sd[k].shape != like[k].shape for k in like):
        raise ValueError("the EMA weights do not have the keys and shapes of the model")
    return {k: v.detach().to("cpu").contiguous() for k, v in sd.items()}


def _metadata(config: DiTConfig, weights: str, extra: Mapping[str, Any]) -> dict[str, str]:
    try:
        extra_json = json.dumps(dict(extra))
    except TypeError as err:
        raise TypeError(f"`extra` must be plain JSON data: {err}") from None
    return {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "weights": weights,
        "config": json.dumps(config.to_dict()),
        "extra": extra_json,
    }


def is_native_folder(path: Path) -> bool:
    """True if `path` is a folder with a ditkit config.json."""
    config = path / CONFIG_FILE
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("format") == FORMAT
    except (ValueError, AttributeError, OSError):
        return False


def _check_replaceable(target: Path) -> None:
    if target.is_dir() and any(target.iterdir()) and not is_native_folder(target):
        raise UserError(f"refusing to replace {target}: it is a folder but not a ditkit checkpoint")
    if target.exists() and not target.is_dir():
        raise UserError(f"refusing to replace the file {target} with a checkpoint folder")


def save_model(
    model: DiT,
    path: str | os.PathLike[str],
    *,
    ema: nn.Module | Mapping[str, torch.Tensor] | None = None,
    extra: Mapping[str, Any] | None = None,
    add_files: Callable[[Path], None] | None = None,
    model_is_ema: bool = False,
) -> Path:
    """Save a DiT in ditkit's format, atomically.

    Args:
        model: the model; its config and (raw) weights are saved.
        path: a folder (config.json + model.safetensors + ema.safetensors), or a file ending in
            `.safetensors` holding a single weight set: the EMA weights if given, else the model's.
        ema: EMA weights (a module or a state dict with the model's keys), saved beside the model's.
        extra: plain JSON data kept with the weights ("first_stage", "diffusion", "class_names", ...).
        add_files: called with the temporary folder before it is renamed into place, to write more
            files into the same atomic checkpoint (e.g. the trainer's `train_state.pt`). Folders only.
        model_is_ema: `model` itself holds EMA weights (e.g. a released DiT): save them as the EMA
            set and no raw set; `ema` must then be None.

    Returns:
        The path written.
    """
    target = Path(path)
    extra = dict(extra or {})
    own = model.state_dict()
    if model_is_ema and ema is not None:
        raise ValueError("pass either ema or model_is_ema, not both")
    sets = {"ema" if model_is_ema else "model": _tensors(model, own)}
    if ema is not None:
        sets["ema"] = _tensors(ema, own)
    if target.suffix == ".safetensors":
        if add_files is not None:
            raise ValueError("add_files needs a checkpoint folder, not a single .safetensors file")
        name = "ema" if "ema" in sets else "model"
        with atomic_path(target) as tmp:
            save_file(sets[name], str(tmp), metadata=_metadata(model.config, name, extra))
        return target
    _check_replaceable(target)
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "weights": sorted(sets),
        "extra": extra,
    }
    with atomic_folder(target) as tmp:
        for name, tensors in sets.items():
            save_file(tensors, str(tmp / WEIGHT_FILES[name]), metadata=_metadata(model.config, name, extra))
        (tmp / CONFIG_FILE).write_text(json.dumps(header, indent=2) + "\n", encoding="utf-8")
        if add_files is not None:
            add_files(tmp)
    return target


def record_extra(path: str | os.PathLike[str], key: str, value: Any) -> None:
    """Set `extra[key]` of a ditkit checkpoint folder to plain JSON data, atomically (the weights stay).

    For what is known only after training, e.g. the sampling settings a run was evaluated with
    (`extra["sampling"]`, which `ditkit sample`, `walk` and `serve` take as their defaults).
    """
    from ditkit.atomic import atomic_write_text

    folder = Path(path)
    if not is_native_folder(folder):
        raise UserError(f"{folder} is not a ditkit checkpoint folder; only those can record {key!r}")
    header = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    header["extra"] = {**dict(header.get("extra") or {}), key: value}
    _metadata(_config(header.get("config"), str(folder)), "ema", header["extra"])  # plain JSON, or TypeError
    atomic_write_text(folder / CONFIG_FILE, json.dumps(header, indent=2) + "\n")


def _config(data: Any, source: str) -> DiTConfig:
    try:
        return DiTConfig.from_dict(dict(data))
    except (TypeError, ValueError) as err:
        raise UserError(
            f"{source} has an invalid DiT config ({err}); was it written by a newer ditkit?"
        ) from None


def _check_version(version: Any, source: str) -> None:
    if str(version) != str(FORMAT_VERSION):
        raise UserError(
            f"{source} is ditkit checkpoint format {version}; this ditkit reads format {FORMAT_VERSION}"
        )


def read_safetensors(path: Path) -> tuple[StateDict, dict[str, str]]:
    """All tensors of a safetensors file (on the CPU) and its metadata."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            return {k: f.get_tensor(k) for k in f.keys()}, metadata  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError) as err:
        raise UserError(f"cannot read {path} as safetensors ({err}); is the file complete?") from None


def _file_reader(path: Path) -> Callable[[], StateDict]:
    return lambda: read_safetensors(path)[0]


def read_native_folder(path: Path) -> RawCheckpoint:
    """Read a ditkit checkpoint folder (weights are loaded on demand)."""
    source = str(path)
    try:
        header = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read {path / CONFIG_FILE}: {err}") from None
    _check_version(header.get("format_version"), source)
    config = _config(header.get("config"), source)
    weights: dict[str, Callable[[], StateDict]] = {}
    for name, file in WEIGHT_FILES.items():
        if (path / file).is_file():
            weights[name] = _file_reader(path / file)
    if not weights:
        raise UserError(f"{path} has a ditkit config.json but no {' or '.join(WEIGHT_FILES.values())}")
    return RawCheckpoint("ditkit", source, weights, config, dict(header.get("extra") or {}))


def native_from_safetensors(path: Path, tensors: StateDict, metadata: Mapping[str, str]) -> RawCheckpoint:
    """A single ditkit .safetensors file, given its already-read tensors and metadata."""
    source = str(path)
    _check_version(metadata.get("format_version"), source)
    try:
        config_data = json.loads(metadata["config"])
        extra = json.loads(metadata.get("extra") or "{}")
    except (KeyError, ValueError) as err:
        raise UserError(f"{path} has damaged ditkit metadata ({err})") from None
    name = metadata.get("weights", "model")
    return RawCheckpoint("ditkit", source, {name: in_memory(tensors)}, _config(config_data, source), extra)
