"""What sampling needs from a checkpoint: the model, its first stage, its objective, its recorded sampling
settings and class names.

Checkpoints that say nothing about their surroundings (the released official .pt files) get DiT's:
the SD VAE `sd-vae-ft-ema` for 4-channel latents, VA-VAE `vavae-f16d32` for LightningDiT's 32-channel
ones (read from local files, never downloaded), the identity for other channel counts, the linear
1000-step process, and ImageNet's class names for 1000 classes. SiT's released .pt files have DiT's
keys and do not say that they are flow models: `objective="flow"` loads them with SiT's defaults
(Linear path, velocity). SiT's training checkpoints name their path and prediction in their args.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ditkit.errors import UserError
from ditkit.first_stage.base import FirstStage
from ditkit.first_stage.sd_vae import DEFAULT_SD_VAE, SD_VAE_LATENT_CHANNELS
from ditkit.first_stage.vavae import DEFAULT_VAVAE, VAVAE_MODELS, is_vavae_spec
from ditkit.generation.class_names import ClassNames
from ditkit.model.dit import DiT
from ditkit.objectives import Objective, objective_from_record
from ditkit.samplers.settings import SamplingSettings


@dataclass
class SamplingBundle:
    """A loaded model with what is needed around it to sample images.

    Attributes:
        model: the DiT (eval mode).
        first_stage: decodes its latents to images in [-1, 1].
        objective: what the model was trained with (`ditkit.objectives`).
        class_names: stored names (list or {name: label}), or None (ImageNet's are used for 1000 classes).
        source: the checkpoint path.
        notes: assumptions made while loading, one line each.
        sampling: the settings the run was evaluated with (`extra["sampling"]`), else the defaults.
    """

    model: DiT
    first_stage: FirstStage
    objective: Objective
    class_names: Sequence[str] | Mapping[str, int] | None
    source: str
    notes: list[str] = field(default_factory=list)
    sampling: SamplingSettings = field(default_factory=SamplingSettings)


def first_stage_for(
    extra: Mapping[str, Any], in_channels: int, override: str | None = None
) -> tuple[FirstStage, str | None]:
    """The first stage a checkpoint describes (or `override`, a spec for `load_first_stage`); and a note."""
    from ditkit.first_stage.load import first_stage_from_dict, load_first_stage

    stored = extra.get("first_stage")
    if override is not None:
        if isinstance(stored, Mapping) and stored.get("kind") == "vavae" and is_vavae_spec(override):
            # its latents were normalised with the recorded statistics: another VA-VAE must share them
            return first_stage_from_dict(stored, source=override), None
        return load_first_stage(override, channels=in_channels), None
    if isinstance(stored, Mapping):
        return first_stage_from_dict(stored), None
    if in_channels == SD_VAE_LATENT_CHANNELS:
        note = f"the checkpoint names no first stage; decoding with {DEFAULT_SD_VAE} (DiT's VAE)"
        return load_first_stage(DEFAULT_SD_VAE), note
    if in_channels == VAVAE_MODELS[DEFAULT_VAVAE].config.embed_dim:
        note = f"the checkpoint names no first stage; decoding with {DEFAULT_VAVAE} (LightningDiT's VA-VAE)"
        return load_first_stage(DEFAULT_VAVAE), note
    note = f"the checkpoint names no first stage; treating its {in_channels}-channel inputs as pixels"
    return load_first_stage("identity", channels=in_channels), note


def load_for_sampling(
    path: str | os.PathLike[str],
    *,
    first_stage: str | None = None,
    image_size: int | None = None,
    which: str = "ema",
    config: Mapping[str, Any] | None = None,
    objective: str | None = None,
) -> SamplingBundle:
    """Load a checkpoint (ditkit, official or diffusers) and everything sampling needs around it.

    Args:
        path: the checkpoint.
        first_stage: a first-stage spec overriding the stored one ("sd-vae-ft-ema", a folder, "identity").
        image_size: the expected image side in pixels; a mismatch with the checkpoint is an error.
        which: "ema" (default) or "model" weights.
        config: DiTConfig fields overriding the stored or inferred ones (see `load_checkpoint`).
        objective: "diffusion" or "flow" for checkpoints that do not record it (see
            `ditkit.objectives.objective_from_record`).
    """
    from ditkit.checkpoints.loader import load_raw, read_checkpoint

    raw = read_checkpoint(path)
    trained, objective_note = objective_from_record(raw.extra, objective, path)  # before building the model
    sampling = recorded_sampling(raw.extra, trained, path)
    loaded = load_raw(raw, dict(config) if config else None, which=which)
    model = loaded.model
    stage, note = first_stage_for(loaded.extra, int(model.in_channels), first_stage)
    notes = list(loaded.notes) + [n for n in (note, objective_note) if n]
    down = int(getattr(stage, "downsample", 1))
    sides = {side * down for side in model.config.size_hw}
    if image_size is not None and sides != {image_size}:
        shown = "x".join(str(s * down) for s in model.config.size_hw)
        raise UserError(
            f"{path} makes {shown} images, not {image_size}; drop --image-size or pick another checkpoint"
        )
    return SamplingBundle(
        model=model,
        first_stage=stage,
        objective=trained,
        class_names=loaded.extra.get("class_names"),
        source=str(path),
        notes=notes,
        sampling=sampling,
    )


def recorded_sampling(extra: Mapping[str, Any], objective: Objective, source: object) -> SamplingSettings:
    """The sampling settings a checkpoint records (`extra["sampling"]`), checked against its objective;
    the defaults where it records none."""
    stored = extra.get("sampling")
    if not isinstance(stored, Mapping):
        return SamplingSettings()
    try:
        settings = SamplingSettings.from_dict(stored)
        if settings.sampler is not None:
            objective.check_sampler(settings.sampler, settings.steps, settings.eta)
    except UserError as err:
        raise UserError(f"{source} records sampling settings that do not fit it ({err}); re-save it") from err
    return settings


def stored_class_names(path: str | os.PathLike[str]) -> ClassNames | None:
    """The class names a checkpoint stores (without loading its weights), or None."""
    from ditkit.checkpoints import read_checkpoint

    names = read_checkpoint(path).extra.get("class_names")
    return None if not names else ClassNames.from_names(names)
