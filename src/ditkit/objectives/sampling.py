"""One entry point for sampling: `sample(model, shape, labels, objective=..., sampler=..., steps=...)`.

The starting noise, the labels and classifier-free guidance are the same for every objective; the
objective (`ditkit.objectives`) runs its own sampler between them.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor, nn

from ditkit.choices import TIME_SHIFT_SAMPLERS
from ditkit.diffusion.gaussian import ModelFn
from ditkit.diffusion.noise import SeededNoise
from ditkit.diffusion.schedule import Spacing
from ditkit.errors import UserError
from ditkit.objectives.base import Objective, SampleRequest, check_guidance_interval
from ditkit.objectives.registry import as_objective
from ditkit.samplers.base import Callback
from ditkit.samplers.guidance import ClassifierFreeGuidance, GuidedChannels
from ditkit.samplers.settings import SamplingSettings


def _resolve_device(model: ModelFn, noise: Tensor | None, device: torch.device | str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    if noise is not None:
        return noise.device
    if isinstance(model, nn.Module):
        param = next(model.parameters(), None)
        if param is not None:
            return param.device
    return torch.device("cpu")


def _labels_tensor(labels: Tensor | Sequence[int] | None, batch: int, device: torch.device) -> Tensor | None:
    if labels is None:
        return None
    y = torch.as_tensor(labels, dtype=torch.long, device=device).reshape(-1)
    if y.shape[0] != batch:
        raise UserError(f"got {y.shape[0]} labels for {batch} samples; give one label per sample")
    return y


def check_sampling(objective: Objective, sampler: str, steps: object, eta: float, model: ModelFn) -> None:
    """Raise UserError for options the objective's samplers cannot take, or a model in training mode."""
    objective.check_sampler(sampler, steps, eta)
    if not 0.0 <= eta <= 1.0:
        raise UserError(f"eta must lie in [0, 1], got {eta}")
    if isinstance(model, nn.Module) and model.training:
        raise UserError(
            "the model is in training mode (it would drop labels at random); call model.eval() first"
        )


@torch.no_grad()
def sample(
    model: ModelFn,
    shape: Sequence[int] | None = None,
    noise: Tensor | None = None,
    labels: Tensor | Sequence[int] | None = None,
    *,
    objective: Objective | str | None = None,
    settings: SamplingSettings | None = None,
    sampler: str | None = None,
    steps: int | Spacing | None = None,
    guidance_scale: float | None = None,
    guided_channels: GuidedChannels | None = None,
    guidance_interval: tuple[float, float] | None = None,
    null_label: int | None = None,
    seeds: Sequence[int] | None = None,
    eta: float | None = None,
    timestep_shift: float | None = None,
    clip_denoised: bool = False,
    progress: bool = True,
    callback: Callback | None = None,
    device: torch.device | str | None = None,
    cfg_scale: float | None = None,
) -> Tensor:
    """Draw samples from a model trained with `objective` (default: DiT's diffusion).

    Args:
        model: called as model(x (B, C, H, W), t (B,), y (B,) or None); for diffusion t is int64 original
            timesteps and the output eps (B, C, H, W) or eps and variance values (B, 2C, H, W); for flow t
            is float32 in [0, 1] (data at 1) and the output the flow prediction (first C channels used).
        shape: (B, C, H, W) of the batch; or give `noise`.
        noise: (B, C, H, W) starting noise x_T; default: the first draw of each sample's seeded stream.
        labels: (B,) class labels, or None for an unconditional model.
        objective: an `Objective`, or its name with its defaults ("diffusion", "flow").
        settings: a `SamplingSettings`; the keyword arguments below, where given, override its fields
            (its `seed` is not used: give `seeds`).
        sampler: one of the objective's samplers (default: its own: ddpm for diffusion, dopri5 for flow).
        steps: number of steps (default: the sampler's); diffusion also takes a respacing string such as
            "ddim50", "uniform20", "quad20", "logsnr20" or "10,20,30", or a list of timesteps.
        guidance_scale: classifier-free guidance scale; 1 (the default here) disables guidance.
        guided_channels: "all" (default) or "first3" (reproduces the official DiT sampler).
        guidance_interval: optional inclusive (t_min, t_max) in the model's times to guide in.
        null_label: label meaning "no class"; default `model.null_class`.
        seeds: one seed per sample (default 0..B-1); sample i depends only on seeds[i].
        eta: DDIM stochasticity in [0, 1] (ddim only).
        timestep_shift: shift s of the flow ODE's time grid, t -> s t / (1 + (s - 1) t) (euler and heun
            only; 1, the default, keeps it even).
        clip_denoised: clamp predicted x_0 to [-1, 1] (diffusion, pixel space).
        progress: show a progress bar.
        callback: called with a `StepInfo` after every step (diffusion samplers only).
        device: where to sample; default: noise's device, else the model's.
        cfg_scale: the former name of `guidance_scale` (deprecated).

    Returns:
        (B, C, H, W) float32 samples on `device`.

    Example:
        >>> x = sample(model, (8, 4, 32, 32), labels=[207] * 8, sampler="dpm++2m", guidance_scale=4.0)
    """
    if cfg_scale is not None:
        warnings.warn("sample(cfg_scale=...) is now guidance_scale=...", DeprecationWarning, stacklevel=3)
        guidance_scale = cfg_scale if guidance_scale is None else guidance_scale
    objective = as_objective(objective)
    s = settings or SamplingSettings()
    sampler = sampler or s.sampler or objective.default_sampler
    steps = s.steps if steps is None else steps
    scale = (
        (1.0 if s.guidance_scale is None else s.guidance_scale) if guidance_scale is None else guidance_scale
    )
    channels = guided_channels or s.guided_channels
    interval = s.guidance_interval if guidance_interval is None else guidance_interval
    eta = s.eta if eta is None else eta
    shift = s.timestep_shift if timestep_shift is None else float(timestep_shift)
    check_sampling(objective, sampler, steps, eta, model)
    if shift != 1.0 and sampler not in TIME_SHIFT_SAMPLERS:
        raise UserError(
            f"a timestep shift bends the time grid of the {' and '.join(TIME_SHIFT_SAMPLERS)} flow samplers, "
            f"not {sampler}'s; drop it or pick one of those"
        )
    device = _resolve_device(model, noise, device)
    if noise is not None:
        if shape is not None and tuple(noise.shape) != tuple(shape):
            raise UserError(f"noise has shape {tuple(noise.shape)} but shape={tuple(shape)} was given")
        shape = tuple(noise.shape)
    if shape is None:
        raise UserError("give either shape=(B, C, H, W) or noise")
    batch = int(shape[0])
    seed_list = list(range(batch)) if seeds is None else [int(s) for s in seeds]
    if len(seed_list) != batch:
        raise UserError(f"got {len(seed_list)} seeds for {batch} samples; give one seed per sample")
    streams = SeededNoise(seed_list, device)
    # Always take the first draw as x_T, so given noise never reappears as step noise and
    # noise=None equals noise=SeededNoise(seeds).randn((C, H, W)).
    x = streams.randn(shape[1:])
    if noise is not None:
        x = noise.to(device=device, dtype=torch.float32)

    y = _labels_tensor(labels, batch, device)
    if scale != 1.0:
        null = null_label if null_label is not None else getattr(model, "null_class", None)
        if null is None or y is None:
            raise UserError(
                "classifier-free guidance needs labels and a null class, which this model lacks if it was "
                "trained without label dropout; sample with guidance scale 1 (or pass null_label=...)"
            )
        check_guidance_interval(objective, interval)
        model = ClassifierFreeGuidance(model, scale, null, cast(GuidedChannels, channels), interval)
    return objective.sample(
        SampleRequest(model, x, y, sampler, steps, streams, eta, clip_denoised, progress, callback, shift)
    )
