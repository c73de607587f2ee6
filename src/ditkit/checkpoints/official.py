"""PyTorch checkpoint files (.pt, .pth) in the official DiT forms, read without unpickling code.

Two forms exist (facebookresearch/DiT):
- the released `DiT-XL-2-256x256.pt` / `DiT-XL-2-512x512.pt`: a plain state dict (EMA weights);
- what `train.py` saves every `--ckpt-every` steps: `{"model", "ema", "opt", "args"}` with the
  command-line arguments as an `argparse.Namespace`.

Files are read with `torch.load(weights_only=True)`, with `argparse.Namespace` as the only class
allowed besides tensors and plain containers, so a file can never run code when it is opened.
"""

from __future__ import annotations

import argparse
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ditkit.checkpoints.layout import StateDict, check_is_dit, strip_wrappers
from ditkit.errors import UserError
from ditkit.first_stage.sd_vae import (
    SD_VAE_DOWNSAMPLE,
    SD_VAE_LATENT_CHANNELS,
    SD_VAE_LATENT_SCALE,
    SD_VAE_REPOS,
)

# Weight sets of the official training dict, in the order `which="ema"` prefers them.
TRAINING_WEIGHT_KEYS = ("ema", "model")
# Name of the one weight set of a plain state dict (the released files hold EMA weights, but a
# plain state dict saved by anyone else may not).
SINGLE_WEIGHTS = "weights"
# First-stage autoencoder of each choice of train.py's --vae (facebookresearch/DiT train.py / sample.py).
OFFICIAL_VAE_SOURCES = {"ema": SD_VAE_REPOS["sd-vae-ft-ema"], "mse": SD_VAE_REPOS["sd-vae-ft-mse"]}

_GLOBAL_NAME = re.compile(r"GLOBAL ([\w.]+)")


def load_torch_file(path: Path) -> Any:
    """`torch.load` a file on the CPU, allowing only tensors, plain data and argparse.Namespace."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        match = _GLOBAL_NAME.search(str(err))
        what = f" ({match.group(1)})" if match else ""
        raise UserError(
            f"{path} contains pickled Python objects{what} that ditkit will not load: only tensors and "
            "plain data are read (weights_only=True); if you trust the file, re-save its state dict alone "
            "with torch.save"
        ) from None
    except (RuntimeError, EOFError, KeyError, ValueError, zipfile.BadZipFile, OSError) as err:
        kind = _not_a_checkpoint(path)
        if kind is not None:
            raise UserError(
                f"{path} is not a PyTorch checkpoint ({kind}); give a .pt/.pth file, a ditkit folder or a "
                "diffusers folder"
            ) from None
        reason = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        if reason.strip().isdigit():  # a bare code from the unpickler says nothing to a user
            reason = type(err).__name__
        raise UserError(
            f"cannot read {path} as a PyTorch checkpoint ({reason}); is the file complete and a .pt/.pth file?"
        ) from None


# How the files torch.save writes begin: a zip archive (torch >= 1.6), or a pickle (protocol 2+).
_TORCH_MAGIC = (b"PK\x03\x04", b"\x80")


def _not_a_checkpoint(path: Path) -> str | None:
    """What `path` is when it cannot be a file torch.save wrote ("a text file", "empty"), else None."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return None
    if not head:
        return "the file is empty"
    if head.startswith(_TORCH_MAGIC):
        return None
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "neither a zip archive nor a pickle"
    return "it is a text file"


def _plain_args(args: Any) -> dict[str, Any]:
    """The JSON-representable fields of an argparse.Namespace (or dict) of training arguments."""
    items = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
    simple = (str, int, float, bool, type(None))
    return {
        str(k): list(v) if isinstance(v, (list, tuple)) else v
        for k, v in items.items()
        if isinstance(v, simple) or (isinstance(v, (list, tuple)) and all(isinstance(x, simple) for x in v))
    }


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def official_weight_sets(obj: Any, source: str) -> tuple[dict[str, StateDict], dict[str, Any]]:
    """Split a loaded official checkpoint into its weight sets and the training arguments.

    Args:
        obj: what `load_torch_file` returned.
        source: the file, for messages.

    Returns:
        ({"ema": sd, "model": sd} for a training dict, or {"weights": sd} for a plain state dict),
        and the training arguments as plain data ({} when there are none).
    """
    if not isinstance(obj, Mapping):
        raise UserError(f"{source} holds a {type(obj).__name__}, not a state dict; is this a DiT checkpoint?")
    found = [k for k in TRAINING_WEIGHT_KEYS if _is_state_dict(obj.get(k))]
    if found:
        sets = {k: strip_wrappers(obj[k]) for k in found}
        args = obj.get("args")
        plain = _plain_args(args) if isinstance(args, (argparse.Namespace, Mapping)) else {}
    else:
        sets, plain = {SINGLE_WEIGHTS: strip_wrappers(obj)}, {}
    for sd in sets.values():
        check_is_dit(sd, source)
    return sets, plain


def extra_from_args(args: Mapping[str, Any]) -> dict[str, Any]:
    """What the official training arguments say about the model's surroundings, as ditkit `extra`."""
    extra: dict[str, Any] = {"official_args": dict(args)} if args else {}
    if isinstance(args.get("image_size"), int):
        extra["image_size"] = args["image_size"]
    if args.get("vae") in OFFICIAL_VAE_SOURCES:  # as ditkit's FirstStage.to_dict() describes it
        extra["first_stage"] = {
            "kind": "sd-vae",
            "source": OFFICIAL_VAE_SOURCES[args["vae"]],
            "scale": SD_VAE_LATENT_SCALE,
            "latent_channels": SD_VAE_LATENT_CHANNELS,
            "downsample": SD_VAE_DOWNSAMPLE,
        }
    return extra


def num_heads_from_args(args: Mapping[str, Any]) -> int | None:
    """Heads of the preset named by the training arguments' --model, if it names one."""
    from ditkit.model.presets import get_config

    name = args.get("model")
    if not isinstance(name, str):
        return None
    try:
        return get_config(name).num_heads
    except UserError:
        return None
