"""Building a first stage from a command-line spec or from the description stored in a checkpoint."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ditkit.errors import UserError
from ditkit.first_stage.base import FirstStage, IdentityFirstStage


def load_first_stage(spec: str, *, channels: int = 3, device: str | torch.device = "cpu") -> FirstStage:
    """Load a first stage.

    Args:
        spec: "identity" (pixels, `channels` channels); "sd-vae-ft-ema" or "sd-vae-ft-mse" (from the
            hub cache, downloaded when online); a hub repo id "owner/name"; a local diffusers VAE
            folder; or a single .safetensors/.ckpt file (diffusers or original LDM key layout).
            VA-VAE: "vavae-f16d32" (its released files in `vavae_home() / "vavae-f16d32"`), or a
            folder or checkpoint file with `latents_stats.pt` beside it (`ditkit.first_stage.vavae`).
        channels: image channels of the identity first stage (the SD VAE always takes 3).
        device: where to put its weights.

    Raises:
        UserError: the spec names nothing loadable (the message says what to pass instead).
    """
    from ditkit.first_stage.vavae import is_vavae_spec, load_vavae

    if spec == "identity":
        first_stage: FirstStage = IdentityFirstStage(channels)
    elif is_vavae_spec(spec):
        first_stage = load_vavae(spec)
    else:
        from ditkit.first_stage.sd_vae import load_sd_vae

        first_stage = load_sd_vae(spec)
    return first_stage.to(device)


def planned_latent_shape(spec: str, channels: int, image_size: int) -> tuple[int, int, int] | None:
    """The latent shape `load_first_stage(spec)` would give, read without loading any weights.

    Lets a run check sizes against its model before a VAE is read or downloaded. Known for the
    identity, the two SD VAEs, VA-VAE, local folders and files; None for other hub repositories.

    Raises:
        UserError: `image_size` is not a multiple of the first stage's downsampling factor.
    """
    from ditkit.first_stage.sd_vae import planned_vae_geometry
    from ditkit.first_stage.vavae import is_vavae_spec, planned_vavae_geometry

    if spec == "identity":
        geometry: tuple[int, int] | None = (channels, 1)
    elif is_vavae_spec(spec):
        geometry = planned_vavae_geometry(spec)
    else:
        geometry = planned_vae_geometry(spec)
    if geometry is None:
        return None
    latent_channels, downsample = geometry
    if image_size % downsample:
        raise UserError(
            f"image size {image_size} is not a multiple of {downsample}, the first stage's downsampling "
            f"factor; pick e.g. {max(1, round(image_size / downsample)) * downsample}"
        )
    return latent_channels, image_size // downsample, image_size // downsample


def first_stage_from_dict(
    data: Mapping[str, Any], *, source: str | None = None, device: str | torch.device = "cpu"
) -> FirstStage:
    """Rebuild the first stage described by `FirstStage.to_dict()` (as stored in checkpoints and caches).

    Args:
        data: the stored description.
        source: a replacement for the stored VAE location (e.g. a local folder on another machine).
        device: where to put its weights.
    """
    kind = data.get("kind")
    if kind == "identity":
        return IdentityFirstStage(int(data["channels"])).to(device)
    if kind == "sd-vae":
        first_stage = load_first_stage(source or str(data["source"]), device=device)
        stored = float(data.get("scale", first_stage.scale))
        if abs(first_stage.scale - stored) > 1e-9 * stored:
            raise UserError(
                f"the VAE at {source or data['source']} has latent scale {first_stage.scale}, but the stored "
                f"first stage used {stored}; pass the VAE it was made with"
            )
        return first_stage
    if kind == "vavae":
        from ditkit.first_stage.vavae import check_same_vavae

        first_stage = load_first_stage(source or str(data["source"]), device=device)
        check_same_vavae(first_stage, data, source or str(data["source"]))
        return first_stage
    raise UserError(
        f"unknown first stage kind {kind!r} in the stored description; expected identity, sd-vae or vavae"
    )
