"""Negative log-likelihood in bits per dimension through the full variational bound (for evaluation)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ditkit.diffusion.gaussian import GaussianDiffusion, ModelFn, split_model_output
from ditkit.diffusion.losses import mean_flat
from ditkit.diffusion.noise import SeededNoise


@torch.no_grad()
def nll_bpd(
    diffusion: GaussianDiffusion,
    model: ModelFn,
    x_start: Tensor,
    y: Tensor | None = None,
    seeds: Sequence[int] | None = None,
    clip_denoised: bool = True,
    progress: bool = False,
) -> dict[str, Tensor]:
    """The variational bound -log p(x_0) <= L_prior + sum_t L_t, every term evaluated (N model calls).

    Args:
        diffusion: the process; a respaced one gives the bound of the respaced chain.
        model: denoiser called as model(x_t, original timesteps, y).
        x_start: (B, C, H, W) data in [-1, 1].
        y: optional (B,) labels.
        seeds: one seed per sample for the noise of every term (default 0..B-1).
        clip_denoised: clamp predicted x_0 to [-1, 1] (as guided-diffusion's evaluation does).
        progress: show a progress bar.

    Returns:
        "total_bpd" (B,) = "prior_bpd" (B,) + "vb".sum(1); "vb", "xstart_mse", "mse": (B, N),
        column k for chain index k.
    """
    batch = x_start.shape[0]
    noise_source = SeededNoise(range(batch) if seeds is None else seeds, x_start.device, x_start.dtype)
    if len(noise_source) != batch:
        raise ValueError(f"got {len(noise_source)} seeds for {batch} samples")
    n = diffusion.num_timesteps
    vb, xstart_mse, mse = (
        torch.zeros(batch, n, device=x_start.device, dtype=x_start.dtype) for _ in range(3)
    )
    for k in tqdm(reversed(range(n)), total=n, disable=not progress, desc="nll"):
        t = torch.full((batch,), k, dtype=torch.long, device=x_start.device)
        noise = noise_source.randn(x_start.shape[1:])
        x_t = diffusion.q_sample(x_start, t, noise)
        output = model(x_t, diffusion.model_timesteps(t), y).to(x_t.dtype)
        vb[:, k] = diffusion.vb_terms_bpd(output, x_start, x_t, t, clip_denoised)
        pred = diffusion.p_mean_variance(output, x_t, t, clip_denoised)
        xstart_mse[:, k] = mean_flat((pred.pred_xstart - x_start) ** 2)
        mse[:, k] = mean_flat((split_model_output(output, x_start.shape[1])[0] - noise) ** 2)
    prior = diffusion.prior_bpd(x_start)
    return {
        "total_bpd": vb.sum(dim=1) + prior,
        "prior_bpd": prior,
        "vb": vb,
        "xstart_mse": xstart_mse,
        "mse": mse,
    }
