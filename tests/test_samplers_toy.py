"""A problem with a known answer: 1-D Gaussian-mixture data, whose exact eps-prediction is analytic.

x_t given component k is N(a mu_k, a^2 s_k^2 + 1 - a^2) with a = sqrt(alpha_bar_t), so the ideal
denoiser is eps = -sqrt(1 - alpha_bar_t) * grad log p_t(x_t), a posterior-weighted sum over components.
Every error left in the samples is then the sampler's own. The deterministic samplers start from the
N exact quantiles of N(0, 1): in 1-D their map is monotone, so the outputs are the quantiles of the
distribution they sample and the Wasserstein-1 distance measures discretisation error alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.stats import norm, wasserstein_distance

from ditkit.diffusion.gaussian import GaussianDiffusion
from ditkit.diffusion.noise import SeededNoise
from ditkit.diffusion.schedule import make_schedule
from ditkit.samplers.ddim import sample_ddim
from ditkit.samplers.ddpm import sample_ddpm
from ditkit.samplers.dpm_solver import sample_dpmpp_2m

WEIGHTS = np.array([0.35, 0.65])
MEANS = np.array([-1.0, 0.8])
STDS = np.array([0.15, 0.3])
VALLEY = -0.25  # between the modes: the density there is ~1e-5 of its peak
GRID = np.linspace(-3.0, 3.0, 60001)
N_QUANTILES = 2000
N_RANDOM = 20000


def mixture_denoiser():
    alpha_bar = torch.from_numpy(make_schedule().alphas_cumprod)  # by original timestep
    w, mu, var0 = (torch.from_numpy(a) for a in (WEIGHTS, MEANS, STDS**2))

    def model(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        ab = alpha_bar[t].view(-1, 1, 1, 1).double()
        xd = x.double()  # (B, 1, 1, 1), broadcast against the components on the last axis
        var = ab * var0 + 1 - ab  # (B, 1, 1, K)
        log_resp = torch.log(w) - 0.5 * torch.log(var) - (xd - ab.sqrt() * mu) ** 2 / (2 * var)
        score = (torch.softmax(log_resp, dim=-1) * (ab.sqrt() * mu - xd) / var).sum(-1, keepdim=True)
        return (-(1 - ab).sqrt() * score).to(x.dtype)  # (B, 1, 1, 1)

    return model


def w1_to_truth(samples: torch.Tensor) -> float:
    """Wasserstein-1 distance between the samples and the exact mixture (its density on a fine grid)."""
    pdf = sum(wk * norm.pdf(GRID, m, s) for wk, m, s in zip(WEIGHTS, MEANS, STDS, strict=True))
    return float(wasserstein_distance(samples.flatten().double().numpy(), GRID, v_weights=pdf))


def assert_mixture_recovered(samples: torch.Tensor, weight_tol: float, moment_tol: float) -> None:
    x = samples.flatten().double().numpy()
    low, high = x[x < VALLEY], x[x >= VALLEY]
    assert abs(len(low) / len(x) - WEIGHTS[0]) < weight_tol
    for part, mean, std in ((low, MEANS[0], STDS[0]), (high, MEANS[1], STDS[1])):
        assert abs(part.mean() - mean) < moment_tol
        assert abs(part.std() - std) < moment_tol


def quantile_noise() -> torch.Tensor:
    levels = (np.arange(N_QUANTILES) + 0.5) / N_QUANTILES
    return torch.from_numpy(norm.ppf(levels)).float().view(-1, 1, 1, 1)  # (N, 1, 1, 1)


class BatchNoise:
    """One generator for the whole batch: fast, and enough for a distributional test."""

    def __init__(self, batch: int, seed: int) -> None:
        self.batch = batch
        self.generator = torch.Generator().manual_seed(seed)

    def randn(self, sample_shape: Sequence[int]) -> torch.Tensor:
        return torch.randn((self.batch, *sample_shape), generator=self.generator)


def ode_sample(sampler, respacing: str) -> torch.Tensor:  # type: ignore[no-untyped-def]
    diffusion = GaussianDiffusion(make_schedule(respacing=respacing))
    return sampler(mixture_denoiser(), quantile_noise(), diffusion, noise=SeededNoise([]))


def test_sanity_of_the_toy_itself() -> None:
    """The analytic denoiser at t = 0 barely moves data points; fine DDIM transports N(0, 1) onto the mixture."""
    x0 = torch.tensor(MEANS).float().view(-1, 1, 1, 1)
    eps = mixture_denoiser()(x0, torch.zeros(2, dtype=torch.long), None)
    assert eps.abs().max() < 0.1
    fine = ode_sample(sample_ddim, "250")
    assert w1_to_truth(fine) < 0.007
    assert_mixture_recovered(fine, weight_tol=0.003, moment_tol=0.01)


def test_deterministic_samplers_recover_the_mixture() -> None:
    results = {
        "ddim50": ode_sample(sample_ddim, "50"),
        "dpm++2m quad20": ode_sample(sample_dpmpp_2m, "quad20"),
        "dpm++2m logsnr20": ode_sample(sample_dpmpp_2m, "logsnr20"),
        "dpm++2m uniform20": ode_sample(sample_dpmpp_2m, "uniform20"),
    }
    distances = {name: w1_to_truth(x) for name, x in results.items()}
    limits = {"ddim50": 0.03, "dpm++2m quad20": 0.01, "dpm++2m logsnr20": 0.02, "dpm++2m uniform20": 0.06}
    for name, limit in limits.items():
        assert distances[name] < limit, distances
    for name in ("ddim50", "dpm++2m quad20", "dpm++2m logsnr20"):
        assert_mixture_recovered(results[name], weight_tol=0.01, moment_tol=0.03)
    assert distances["dpm++2m quad20"] < distances["ddim50"]  # second order beats first at fewer steps


def test_ddpm_recovers_the_mixture_and_dpm_solver_at_20_steps_is_as_close() -> None:
    start = torch.randn(N_RANDOM, 1, 1, 1, generator=torch.Generator().manual_seed(1))
    ddpm = sample_ddpm(
        mixture_denoiser(),
        start,
        GaussianDiffusion(make_schedule(respacing="250")),
        noise=BatchNoise(N_RANDOM, 2),
    )
    assert_mixture_recovered(ddpm, weight_tol=0.01, moment_tol=0.01)
    ddpm_w1 = w1_to_truth(ddpm)
    # The sampling noise in that distance: exact draws of the same size from the mixture.
    rng = np.random.default_rng(3)
    component = rng.choice(2, N_RANDOM, p=WEIGHTS)
    noise_floor = w1_to_truth(torch.from_numpy(rng.normal(MEANS[component], STDS[component])))
    assert ddpm_w1 < 2 * noise_floor  # discretisation error well below the sampling noise
    dpm_w1 = w1_to_truth(ode_sample(sample_dpmpp_2m, "quad20"))
    assert dpm_w1 <= ddpm_w1 + noise_floor, (dpm_w1, ddpm_w1, noise_floor)
