"""Schedules and respacing: closed forms in float64, and the timesteps of independent implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

from ditkit.diffusion.schedule import Schedule, make_schedule, space_timesteps
from ditkit.errors import UserError


def test_linear_betas_closed_form_and_scaling() -> None:
    betas = make_schedule("linear", 1000).betas
    assert betas.dtype == np.float64 and betas.shape == (1000,)
    np.testing.assert_allclose(betas, 1e-4 + (0.02 - 1e-4) * np.arange(1000) / 999, rtol=1e-12)
    half = make_schedule("linear", 500).betas  # scaled by 1000 / T
    assert half[0] == pytest.approx(2e-4, rel=1e-12) and half[-1] == pytest.approx(0.04, rel=1e-12)


def test_cosine_alpha_bar_matches_its_definition() -> None:
    schedule = make_schedule("cosine", 1000)

    def f(t: float) -> float:
        return math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2

    expected = np.array([f(t + 1) / f(0) for t in range(1000)])
    unclipped = schedule.betas < 0.999
    assert unclipped[:990].all() and not unclipped.all()  # only the last steps hit the ceiling
    np.testing.assert_allclose(schedule.alphas_cumprod[:990], expected[:990], rtol=1e-9)
    assert schedule.betas.max() == 0.999


def test_posterior_tables_match_gaussian_conditioning() -> None:
    """beta~ and the mean coefficients from the product of q(x_t | x_t-1) and q(x_t-1 | x_0)."""
    s = make_schedule("linear", 1000)
    ab_prev, alpha, beta = s.alphas_cumprod_prev[1:], 1 - s.betas[1:], s.betas[1:]
    precision = alpha / beta + 1 / (1 - ab_prev)
    var = 1 / precision
    np.testing.assert_allclose(s.posterior_variance[1:], var, rtol=1e-10)
    np.testing.assert_allclose(s.posterior_mean_coef1[1:], var * np.sqrt(ab_prev) / (1 - ab_prev), rtol=1e-10)
    np.testing.assert_allclose(s.posterior_mean_coef2[1:], var * np.sqrt(alpha) / beta, rtol=1e-10)
    assert s.posterior_variance[0] == 0 and s.posterior_mean_coef1[0] == pytest.approx(1.0)
    assert s.posterior_log_variance_clipped[0] == np.log(s.posterior_variance[1])
    np.testing.assert_allclose(s.posterior_log_variance_clipped[1:], np.log(var), rtol=1e-10)
    assert s.fixed_large_variance[0] == s.posterior_variance[1]


def test_evenly_spaced_matches_diffusers_linspace_and_rounds_like_guided_diffusion() -> None:
    for n in (10, 25, 50, 100, 250):
        reference = DDPMScheduler(num_train_timesteps=1000, timestep_spacing="linspace")
        reference.set_timesteps(n)
        assert space_timesteps(1000, str(n)) == sorted(reference.timesteps.tolist())
    assert space_timesteps(6, "5") == [0, 1, 2, 4, 5]  # 2.5 rounds half to even
    # guided-diffusion accumulates the stride; 10 * 49.95 lands just under the tie 499.5.
    assert space_timesteps(1000, "21")[10] == 499
    assert space_timesteps(10, "2,2") == [0, 4, 5, 9]


def test_ddim_and_uniform_spacing_match_diffusers() -> None:
    ddim = DDIMScheduler(num_train_timesteps=1000, timestep_spacing="leading", steps_offset=0)
    ddim.set_timesteps(50)
    assert space_timesteps(1000, "ddim50") == sorted(ddim.timesteps.tolist()) == list(range(0, 1000, 20))
    for n in (10, 20, 25):
        dpm = DPMSolverMultistepScheduler(num_train_timesteps=1000, timestep_spacing="linspace")
        dpm.set_timesteps(n)
        assert space_timesteps(1000, f"uniform{n}") == sorted(dpm.timesteps.tolist())


def test_logsnr_spacing_is_uniform_in_log_snr() -> None:
    schedule = make_schedule(respacing="logsnr20")
    full = make_schedule()
    lam = 0.5 * np.log(full.alphas_cumprod / (1 - full.alphas_cumprod))
    assert len(schedule) == 20 and schedule.timesteps[0] == 0 and schedule.timesteps[-1] == 999
    targets = np.linspace(lam[999], lam[0], 20)[::-1]
    # Up to rounding to integer timesteps: half the largest gap between neighbouring timesteps (t = 0..1).
    np.testing.assert_allclose(lam[schedule.timesteps], targets, atol=0.5 * (lam[0] - lam[1]))


def test_respacing_keeps_marginals_and_original_timesteps() -> None:
    full = make_schedule()
    for spacing in ("250", "ddim50", "uniform20", [0, 10, 500, 999]):
        spaced = make_schedule(respacing=spacing)
        np.testing.assert_allclose(spaced.alphas_cumprod, full.alphas_cumprod[spaced.timesteps], rtol=1e-12)
        ab = spaced.alphas_cumprod
        np.testing.assert_allclose(spaced.betas, 1 - ab / np.append(1.0, ab[:-1]), rtol=1e-12)
    assert make_schedule(respacing=[0, 10, 500, 999]).timesteps.tolist() == [0, 10, 500, 999]
    assert len(make_schedule(respacing="")) == 1000


@pytest.mark.parametrize(
    "spacing", ["abc", "ddimx", "ddim600", "1001", "uniform1000", "logsnr900", [0, 0, 5], [1000], [-1, 3]]
)
def test_bad_spacing_raises_user_error(spacing: str | list[int]) -> None:
    with pytest.raises(UserError):
        make_schedule(respacing=spacing)


def test_bad_schedule_name_and_tables() -> None:
    with pytest.raises(UserError):
        make_schedule("quadratic")
    with pytest.raises(ValueError):
        Schedule(betas=np.array([0.1, 1.5]), timesteps=np.array([0, 1]), num_train_timesteps=2)
