"""DPM-Solver++(2M) (Lu et al. 2022, arXiv 2211.01095, Algorithm 2): a multistep ODE solver for few steps.

In the data-prediction form with alpha_t = sqrt(alpha_bar_t), sigma_t = sqrt(1 - alpha_bar_t) and
lambda_t = log(alpha_t / sigma_t), one step from s to t with h = lambda_t - lambda_s is
    x_t = (sigma_t / sigma_s) x_s - alpha_t (e^{-h} - 1) D,
where D is the x_0 prediction at s (first order) or, when the previous prediction is at hand,
D = (1 + 1/(2r)) x0_s - 1/(2r) x0_prev with r = h_prev / h (second order).
The first step is first order; the last one goes from the smallest kept timestep to sigma = 0,
which returns the x_0 prediction there (like DDIM's last step).
"""

from __future__ import annotations

import math

from torch import Tensor

from ditkit.diffusion.gaussian import GaussianDiffusion, ModelFn, split_model_output
from ditkit.diffusion.noise import NoiseSource
from ditkit.samplers.base import Callback, index_tensor, run_chain


def log_snr_half(diffusion: GaussianDiffusion, index: int) -> float:
    """lambda = log(alpha / sigma) = 0.5 log(alpha_bar / (1 - alpha_bar)) at a chain index."""
    alpha_bar = float(diffusion.schedule.alphas_cumprod[index])
    return 0.5 * (math.log(alpha_bar) - math.log1p(-alpha_bar))


def dpmpp_2m_step(
    diffusion: GaussianDiffusion,
    x: Tensor,
    index: int,
    pred_xstart: Tensor,
    prev_pred_xstart: Tensor | None,
) -> Tensor:
    """One DPM-Solver++(2M) step from chain index `index` (> 0) to `index - 1`.

    Args:
        diffusion: the (possibly respaced) process.
        x: (B, C, H, W) sample at `index`.
        index: chain index of x; must be > 0 (from index 0 the solver returns pred_xstart).
        pred_xstart: (B, C, H, W) x_0 prediction at `index`.
        prev_pred_xstart: the x_0 prediction at `index + 1`, or None for a first-order step.

    Returns:
        (B, C, H, W) sample at `index - 1`.
    """
    alpha_bar_s = float(diffusion.schedule.alphas_cumprod[index])
    alpha_bar_t = float(diffusion.schedule.alphas_cumprod[index - 1])
    lambda_s, lambda_t = log_snr_half(diffusion, index), log_snr_half(diffusion, index - 1)
    h = lambda_t - lambda_s
    data_term = pred_xstart
    if prev_pred_xstart is not None:
        r = (lambda_s - log_snr_half(diffusion, index + 1)) / h
        data_term = (1 + 1 / (2 * r)) * pred_xstart - 1 / (2 * r) * prev_pred_xstart
    sigma_ratio = math.sqrt((1 - alpha_bar_t) / (1 - alpha_bar_s))
    return sigma_ratio * x - math.sqrt(alpha_bar_t) * math.expm1(-h) * data_term


def sample_dpmpp_2m(
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
    """Run DPM-Solver++(2M) from x_T to x_0 (deterministic; one model call per kept timestep).

    Args: as `sample_ddpm` (`noise` is not drawn from: the solver is deterministic).

    Returns:
        (B, C, H, W) samples.
    """
    del noise  # same signature as the stochastic samplers
    prev_pred_xstart: Tensor | None = None  # the multistep memory: x_0 prediction of the step before

    def update(output: Tensor, x: Tensor, index: int) -> tuple[Tensor, Tensor]:
        nonlocal prev_pred_xstart
        eps, _ = split_model_output(output, x.shape[1])
        pred_xstart = diffusion.predict_xstart(x, index_tensor(x, index), eps)
        if clip_denoised:
            pred_xstart = pred_xstart.clamp(-1.0, 1.0)
        if index == 0:  # sigma = 0 there: the sample is the x_0 prediction
            x_next = pred_xstart
        else:
            x_next = dpmpp_2m_step(diffusion, x, index, pred_xstart, prev_pred_xstart)
        prev_pred_xstart = pred_xstart
        return x_next, pred_xstart

    return run_chain(model, x, diffusion, y, update, desc="dpm++2m", progress=progress, callback=callback)
