"""Ancestral sampling (Ho et al. 2020, Algorithm 2) with fixed or learned variance."""

from __future__ import annotations

import torch
from torch import Tensor

from ditkit.diffusion.gaussian import GaussianDiffusion, ModelFn
from ditkit.diffusion.noise import NoiseSource
from ditkit.samplers.base import Callback, index_tensor, run_chain


def ddpm_step(
    diffusion: GaussianDiffusion,
    model_output: Tensor,
    x: Tensor,
    index: int,
    noise: Tensor | None,
    clip_denoised: bool = False,
) -> tuple[Tensor, Tensor]:
    """One ancestral step x_t -> x_{t-1} ~ p(x_{t-1} | x_t).

    Args:
        diffusion: the (possibly respaced) process.
        model_output: (B, C or 2C, H, W) the model's output at this step.
        x: (B, C, H, W) current sample.
        index: chain index of x (N-1 ... 0); at 0 the mean is returned without noise.
        noise: (B, C, H, W) standard normal noise; may be None when index == 0.
        clip_denoised: clamp the predicted x_0 to [-1, 1].

    Returns:
        The new sample and the predicted x_0, each (B, C, H, W).
    """
    pred = diffusion.p_mean_variance(model_output, x, index_tensor(x, index), clip_denoised)
    if index == 0:
        return pred.mean, pred.pred_xstart
    if noise is None:
        raise ValueError("ddpm_step needs noise for every step but the last")
    return pred.mean + torch.exp(0.5 * pred.log_variance) * noise, pred.pred_xstart


def sample_ddpm(
    model: ModelFn,
    x: Tensor,
    diffusion: GaussianDiffusion,
    *,
    y: Tensor | None = None,
    noise: NoiseSource,
    clip_denoised: bool = False,
    progress: bool = False,
    callback: Callback | None = None,
) -> Tensor:
    """Run the ancestral sampler from x_T to x_0.

    Args:
        model: denoiser called as model(x_t, original timesteps (B,), y).
        x: (B, C, H, W) starting noise x_T.
        diffusion: the process; respace it to sample with fewer steps.
        y: optional (B,) labels passed to the model.
        noise: noise for the stochastic steps, e.g. `SeededNoise(seeds)` (per-sample streams).
        clip_denoised: clamp predicted x_0 to [-1, 1] at each step (for pixel-space data).
        progress: show a progress bar.
        callback: called with a `StepInfo` after every step.

    Returns:
        (B, C, H, W) samples.
    """

    def update(output: Tensor, x: Tensor, index: int) -> tuple[Tensor, Tensor]:
        step_noise = noise.randn(x.shape[1:]) if index > 0 else None
        return ddpm_step(diffusion, output, x, index, step_noise, clip_denoised)

    return run_chain(model, x, diffusion, y, update, desc="ddpm", progress=progress, callback=callback)
