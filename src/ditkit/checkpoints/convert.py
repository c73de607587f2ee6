"""Convert a checkpoint of any known kind to ditkit's format or to diffusers (what `ditkit convert` runs)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ditkit.checkpoints.diffusers_interop import export_diffusers, export_notes
from ditkit.checkpoints.loader import ConfigArg, choose_weights, model_from_raw, read_checkpoint
from ditkit.checkpoints.native import save_model
from ditkit.errors import UserError
from ditkit.first_stage.sd_vae import SD_VAE_DOWNSAMPLE

TARGETS = ("ditkit", "diffusers", "diffusers-pipeline")
# Endings of single weight files that `convert` does not write (it writes a folder, or .safetensors):
# a destination named so is a mistake, not a folder to create under that name.
FILE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".npz", ".json")
SAFETENSORS = ".safetensors"


def convert_checkpoint(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    to: str = "ditkit",
    which: str = "ema",
    config: ConfigArg = None,
    vae: Any = None,
    scheduler: str = "ddim",
    overwrite: bool = False,
) -> list[str]:
    """Convert `src` (any checkpoint `load_checkpoint` reads) and write `dst`.

    Args:
        src: the checkpoint to read.
        dst: a folder (or, for `to="ditkit"`, a `.safetensors` file holding one weight set).
        to: "ditkit" (keeps both EMA and raw weights when the source has both, and its extra data),
            "diffusers" (a DiTTransformer2DModel folder) or "diffusers-pipeline" (a complete
            DiTPipeline folder; needs `vae`).
        which: the weights to export to diffusers (or to a single ditkit file): "ema" or "model".
        config: a DiTConfig or overrides, as for `load_checkpoint` (e.g. {"num_heads": 16}).
        vae: the first stage for a pipeline: a VAE folder or file, "sd-vae-ft-ema", a Hub id or an
            AutoencoderKL; default: the SD VAE the checkpoint records in extra["first_stage"].
        scheduler: "ddim" or "ddpm", for a pipeline.
        overwrite: replace an existing `dst` (refused otherwise).

    Returns:
        Lines to tell the user: what was written and what was assumed.

    Raises:
        UserError: an unknown target, a destination named like a file convert does not write, or one
            that exists (without `overwrite`); checked before the source is read.
    """
    if to not in TARGETS:
        raise UserError(f"unknown target {to!r}; choose one of {', '.join(TARGETS)}")
    check_destination(src, dst, to, overwrite)
    raw = read_checkpoint(src)
    name = choose_weights(raw, which)
    model, cfg, notes = model_from_raw(raw, name, config)
    notes = raw.notes + notes
    if to == "ditkit":
        both = {"ema", "model"} <= set(raw.weights) and not str(dst).endswith(".safetensors")
        if both:
            other, _, _ = model_from_raw(raw, "model" if name == "ema" else "ema", cfg)
            raw_weights, ema = (other, model) if name == "ema" else (model, other)
            save_model(raw_weights, dst, ema=ema, extra=raw.extra)
            return [f"wrote {dst} (ditkit, EMA and raw weights, {_shape(cfg)})", *notes]
        save_model(model, dst, extra=raw.extra, model_is_ema=name == "ema")
        return [f"wrote {dst} (ditkit, {_weights(name)}, {_shape(cfg)})", *notes]
    if to == "diffusers-pipeline" and vae is None:
        vae = _recorded_vae(raw.extra)
    export_diffusers(
        model,
        dst,
        pipeline=to == "diffusers-pipeline",
        vae=vae,
        scheduler=scheduler,
        class_names=raw.extra.get("class_names"),
        diffusion=raw.extra.get("diffusion"),
        extra=raw.extra,
    )
    return [f"wrote {Path(dst)} ({to}, {_weights(name)}, {_shape(cfg)})", *notes, *export_notes(model)]


def check_destination(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], to: str, overwrite: bool
) -> None:
    """Refuse a destination convert would get wrong: a file name it does not write, the source itself,
    or (without `overwrite`) anything already there."""
    target = Path(dst)
    suffix = target.suffix.lower()
    if suffix == SAFETENSORS and to != "ditkit":
        raise UserError(f"--to {to} writes a folder, not {target.name}; name a folder")
    if suffix in FILE_SUFFIXES:
        stem = target.with_suffix("")
        raise UserError(
            f"convert writes a folder (or one .safetensors file), not a {suffix} file; name a folder "
            f"({stem}) or {stem}{SAFETENSORS}"
        )
    if target.exists() and Path(src).exists() and target.resolve() == Path(src).resolve():
        raise UserError(f"{target} is the checkpoint being converted; write to a new name")
    if target.exists() and not overwrite:
        raise UserError(f"{target} already exists; choose a new name, or pass --overwrite to replace it")


def _weights(name: str) -> str:
    """ "EMA weights", "raw weights", or "its weights" for a source with one unnamed set."""
    return {"ema": "EMA weights", "model": "raw weights"}.get(name, "its one weight set")


def _shape(cfg: Any) -> str:
    """The preset a config is ("DiT-T/2"), or has the shape of, else "a custom shape"."""
    from ditkit.model.presets import preset_of

    name = cfg.name or preset_of(cfg.depth, cfg.hidden_size, cfg.num_heads, cfg.patch_size)
    return name if name else "a custom shape"


def overrides_from_cli(
    input_size: list[int] | None,
    image_size: int | None = None,
    num_heads: int | None = None,
    num_classes: int | None = None,
) -> dict[str, Any]:
    """Config overrides from command-line options: --input-size N | H W, --image-size PX, --num-heads,
    --num-classes."""
    overrides: dict[str, Any] = {}
    if input_size:
        if len(input_size) > 2:
            raise UserError(f"--input-size takes N or H W, got {len(input_size)} numbers")
        overrides["input_size"] = input_size[0] if len(input_size) == 1 else tuple(input_size)
    if image_size is not None:
        if image_size % SD_VAE_DOWNSAMPLE:
            raise UserError(
                f"--image-size {image_size} is not a multiple of the SD VAE's {SD_VAE_DOWNSAMPLE}"
            )
        overrides["input_size"] = image_size // SD_VAE_DOWNSAMPLE
    if num_heads is not None:
        overrides["num_heads"] = num_heads
    if num_classes is not None:
        overrides["num_classes"] = num_classes
    return overrides


def _recorded_vae(extra: dict[str, Any]) -> str:
    """The VAE a checkpoint records as its first stage, for a pipeline export without --vae."""
    first_stage = extra.get("first_stage") or {}
    if first_stage.get("kind") == "sd-vae" and first_stage.get("source"):
        return str(first_stage["source"])
    if first_stage.get("kind") == "identity":
        raise UserError(
            "this is a pixel-space model; DiTPipeline always decodes with a VAE, use --to diffusers"
        )
    if first_stage.get("kind") == "vavae":
        raise UserError(
            "this model's latents are VA-VAE's, normalised per channel, which a DiTPipeline's AutoencoderKL "
            "cannot decode; use --to diffusers"
        )
    raise UserError(
        "a DiTPipeline needs the VAE weights and the checkpoint records none: pass --vae, or use --to diffusers"
    )
