"""One entry point for sampling: `sample(model, shape, labels, sampler=..., steps=..., cfg_scale=...)`.

Diffusion models use the samplers here; flow-matching models (`flow=FlowSettings(...)`) use the named
flow samplers of `ditkit.transport.solvers`, behind the same noise, label and guidance handling.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Protocol

import torch
from torch import Tensor, nn

from ditkit.choices import DIFFUSION_SAMPLERS, FLOW_SAMPLERS
from ditkit.diffusion.gaussian import FixedVariance, GaussianDiffusion, ModelFn
from ditkit.diffusion.noise import NoiseSource, SeededNoise
from ditkit.diffusion.schedule import DEFAULT_DIFFUSION_STEPS, Spacing, make_schedule
from ditkit.errors import UserError
from ditkit.samplers.base import Callback
from ditkit.samplers.ddim import sample_ddim
from ditkit.samplers.ddpm import sample_ddpm
from ditkit.samplers.dpm_solver import sample_dpmpp_2m
from ditkit.samplers.guidance import ClassifierFreeGuidance, GuidedChannels
from ditkit.transport.settings import DEFAULT_FLOW_SAMPLER, FlowSettings


class SamplerFn(Protocol):
    """The shape every sampler shares."""

    def __call__(
        self,
        model: ModelFn,
        x: Tensor,
        diffusion: GaussianDiffusion,
        *,
        y: Tensor | None = ...,
        noise: NoiseSource,
        clip_denoised: bool = ...,
        progress: bool = ...,
        callback: Callback | None = ...,
    ) -> Tensor: ...


SAMPLERS: dict[str, SamplerFn] = dict(
    zip(DIFFUSION_SAMPLERS, (sample_ddpm, sample_ddim, sample_dpmpp_2m), strict=True)
)
# Default step counts: 250 DDPM steps as in the DiT paper's evaluations; 50 DDIM steps (Song et al.
# 2021, Table 1: most of the 1000-step quality); 20 DPM-Solver++ steps (Lu et al. 2022, abstract: 15-20).
DEFAULT_STEPS = {"ddpm": 250, "ddim": 50, "dpm++2m": 20}
# How an integer step count is spread over the chain: evenly with both ends for ddpm/ddim (as DiT's
# sampling does); time-uniform above t = 0 for DPM-Solver++, its authors' advice for high-resolution
# and latent models (DPM-Solver code, `skip_type`). With an evaluation at t = 0 the step into it is
# ~4.5x longer in log-SNR than the one before (linear schedule, 10-20 steps), which 2M amplifies.
INT_STEPS_SPACING = {"ddpm": "{}", "ddim": "{}", "dpm++2m": "uniform{}"}


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


# The sampler used when none is named, by objective.
DEFAULT_SAMPLERS = {"diffusion": "ddpm", "flow": DEFAULT_FLOW_SAMPLER}


def _check_options(sampler: str, eta: float, model: ModelFn, flow: bool = False) -> None:
    names, kind = (FLOW_SAMPLERS, "flow-matching") if flow else (tuple(SAMPLERS), "diffusion")
    if sampler not in names:
        other = sampler in (SAMPLERS if flow else FLOW_SAMPLERS)
        why = f"{sampler!r} is not a sampler of {kind} models" if other else f"unknown sampler {sampler!r}"
        raise UserError(f"{why}; choose one of {', '.join(names)}")
    if eta != 0.0 and sampler != "ddim":
        raise UserError(f"eta applies to the ddim sampler only, not {sampler!r}")
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
    sampler: str | None = None,
    steps: int | Spacing | None = None,
    cfg_scale: float = 1.0,
    guided_channels: GuidedChannels = "all",
    guidance_interval: tuple[float, float] | None = None,
    null_label: int | None = None,
    seeds: Sequence[int] | None = None,
    eta: float = 0.0,
    clip_denoised: bool = False,
    noise_schedule: str = "linear",
    diffusion_steps: int = DEFAULT_DIFFUSION_STEPS,
    fixed_variance: FixedVariance = "large",
    flow: FlowSettings | None = None,
    progress: bool = True,
    callback: Callback | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Draw samples from a diffusion model, or from a flow-matching model (`flow`).

    Args:
        model: denoiser called as model(x (B, C, H, W), t (B,) int64 original timesteps, y (B,) or None)
            returning eps (B, C, H, W) or eps and variance values (B, 2C, H, W); for flow models t is
            float32 in [0, 1] (data at 1) and the output the flow prediction (first C channels used).
        shape: (B, C, H, W) of the batch; or give `noise`.
        noise: (B, C, H, W) starting noise x_T; default: the first draw of each sample's seeded stream.
        labels: (B,) class labels, or None for an unconditional model.
        sampler: "ddpm" (ancestral, the default), "ddim" or "dpm++2m"; for flow models "dopri5" (the
            default), "euler", "heun", "sde-euler" or "sde-heun" (see `ditkit.transport.solvers`).
        steps: number of steps (default 250 / 50 / 20 by sampler; spread as `INT_STEPS_SPACING`
            says), a respacing string such as "ddim50", "uniform20", "quad20", "logsnr20" or "10,20,30"
            (see `ditkit.diffusion.schedule.space_timesteps`), or an explicit list of timesteps.
        cfg_scale: classifier-free guidance scale; 1 disables guidance.
        guided_channels: "all" (default) or "first3" (reproduces the official DiT sampler).
        guidance_interval: optional inclusive (t_min, t_max) in the model's timesteps (flow: in
            [0, 1]) to guide in.
        null_label: label meaning "no class"; default `model.null_class`.
        seeds: one seed per sample (default 0..B-1); sample i depends only on seeds[i].
        eta: DDIM stochasticity in [0, 1] (ddim only).
        clip_denoised: clamp predicted x_0 to [-1, 1] (pixel space; DiT's latents are not clipped).
        noise_schedule, diffusion_steps: the training process ("linear", 1000 for DiT).
        fixed_variance: variance for models without learned sigma ("large" or "small"; ddpm only).
        flow: the settings of a flow-matching model (None: a diffusion model).
        progress: show a progress bar.
        callback: called with a `StepInfo` after every step (diffusion samplers only).
        device: where to sample; default: noise's device, else the model's.

    Returns:
        (B, C, H, W) float32 samples on `device`.

    Example:
        >>> x = sample(model, (8, 4, 32, 32), labels=[207] * 8, sampler="dpm++2m", cfg_scale=4.0)
    """
    sampler = sampler or DEFAULT_SAMPLERS["flow" if flow is not None else "diffusion"]
    _check_options(sampler, eta, model, flow is not None)
    if flow is not None and (callback is not None or clip_denoised or not isinstance(steps, int | None)):
        raise UserError("flow samplers take an integer number of steps, and no callback or clipping")
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
    if cfg_scale != 1.0:
        null = null_label if null_label is not None else getattr(model, "null_class", None)
        if null is None or y is None:
            raise UserError(
                "classifier-free guidance needs labels and a null class, which this model lacks if it was "
                "trained without label dropout; sample with cfg_scale 1 (or pass null_label=...)"
            )
        model = ClassifierFreeGuidance(model, cfg_scale, null, guided_channels, guidance_interval)

    if flow is not None:
        from ditkit.transport.solvers import sample_flow

        assert steps is None or isinstance(steps, int)  # checked above
        return sample_flow(
            model, x, flow, y=y, sampler=sampler, steps=steps, noise=streams, progress=progress
        )
    steps = DEFAULT_STEPS[sampler] if steps is None else steps
    spacing = INT_STEPS_SPACING[sampler].format(steps) if isinstance(steps, int) else steps
    diffusion = GaussianDiffusion(make_schedule(noise_schedule, diffusion_steps, spacing), fixed_variance)
    run = functools.partial(sample_ddim, eta=eta) if sampler == "ddim" else SAMPLERS[sampler]
    return run(
        model,
        x,
        diffusion,
        y=y,
        noise=streams,
        clip_denoised=clip_denoised,
        progress=progress,
        callback=callback,
    )
