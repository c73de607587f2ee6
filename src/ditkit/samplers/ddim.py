"""DDIM (Song et al. 2021, eq. 12): eta = 0 is deterministic, eta = 1 matches DDPM's posterior variance."""

from __future__ import annotations

import math

from torch import Tensor

from ditkit.diffusion.gaussian import GaussianDiffusion, ModelFn, split_model_output
from ditkit.diffusion.noise import NoiseSource
from ditkit.samplers.base import Callback, index_tensor, run_chain


def ddim_sigma(diffusion: GaussianDiffusion, index: int, eta: float) -> float:
    """sigma_t(eta) = eta sqrt((1 - a_prev) / (1 - a)) sqrt(1 - a / a_prev), with a = alpha_bar (Song et al. eq. 16)."""
    alpha_bar = float(diffusion.schedule.alphas_cumprod[index])
    alpha_bar_prev = float(diffusion.schedule.alphas_cumprod_prev[index])
    return eta * math.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar)) * math.sqrt(1 - alpha_bar / alpha_bar_prev)


def ddim_step(
    diffusion: GaussianDiffusion,
    model_output: Tensor,
    x: Tensor,
    index: int,
    noise: Tensor | None,
    eta: float = 0.0,
    clip_denoised: bool = False,
) -> tuple[Tensor, Tensor]:
    """One DDIM step from chain index `index` to `index - 1` (to clean data from index 0).

    Args:
        diffusion: the (possibly respaced) process.
        model_output: (B, C or 2C, H, W); only eps (the first C channels) is used.
        x: (B, C, H, W) current sample.
        index: chain index of x.
        noise: (B, C, H, W) standard normal noise; unused (may be None) when the step's sigma is 0.
        eta: 0 for the deterministic sampler.
        clip_denoised: clamp the predicted x_0 to [-1, 1] (eps is then recomputed from it).

    Returns:
        The new sample and the predicted x_0, each (B, C, H, W).
    """
    eps, _ = split_model_output(model_output, x.shape[1])
    t = index_tensor(x, index)
    pred_xstart = diffusion.predict_xstart(x, t, eps)
    if clip_denoised:
        pred_xstart = pred_xstart.clamp(-1.0, 1.0)
        eps = diffusion.predict_eps(x, t, pred_xstart)
    alpha_bar_prev = float(diffusion.schedule.alphas_cumprod_prev[index])
    sigma = ddim_sigma(diffusion, index, eta)
    x_prev = math.sqrt(alpha_bar_prev) * pred_xstart + math.sqrt(1 - alpha_bar_prev - sigma**2) * eps
    if sigma == 0.0:
        return x_prev, pred_xstart
    if noise is None:
        raise ValueError("ddim_step with eta > 0 needs noise")
    return x_prev + sigma * noise, pred_xstart


def sample_ddim(
    model: ModelFn,
    x: Tensor,
    diffusion: GaussianDiffusion,
    *,
    y: Tensor | None = None,
    noise: NoiseSource,
    clip_denoised: bool = False,
    progress: bool = False,
    callback: Callback | None = None,
    eta: float = 0.0,
) -> Tensor:
    """Run DDIM from x_T to x_0; with eta = 0 the map from x_T to x_0 is deterministic.

    Args: as `sample_ddpm`, plus
        eta: stochasticity, 0 (deterministic) to 1 (DDPM-like).

    Returns:
        (B, C, H, W) samples.
    """

    def update(output: Tensor, x: Tensor, index: int) -> tuple[Tensor, Tensor]:
        stochastic = ddim_sigma(diffusion, index, eta) > 0
        step_noise = noise.randn(x.shape[1:]) if stochastic else None
        return ddim_step(diffusion, output, x, index, step_noise, eta, clip_denoised)

    return run_chain(model, x, diffusion, y, update, desc="ddim", progress=progress, callback=callback)
