"""Step-by-step agreement with diffusers' independent schedulers for the same model outputs and noise."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

from ditkit.diffusion.gaussian import GaussianDiffusion
from ditkit.diffusion.noise import SeededNoise
from ditkit.diffusion.schedule import make_schedule
from ditkit.samplers.base import StepInfo
from ditkit.samplers.ddim import ddim_step
from ditkit.samplers.ddpm import ddpm_step
from ditkit.samplers.dpm_solver import sample_dpmpp_2m

SHAPE = (2, 3, 4, 4)
LINEAR = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _outputs(index: int, learned: bool) -> torch.Tensor:
    """Arbitrary model outputs: eps ~ N(0, 1) and, if learned, v ~ U(-1, 1)."""
    eps = torch.randn(SHAPE, generator=_gen(1000 + index))
    if not learned:
        return eps
    return torch.cat([eps, torch.rand(SHAPE, generator=_gen(5000 + index)) * 2 - 1], dim=1)  # (B, 2C, H, W)


@pytest.mark.parametrize(
    ("respacing", "variance", "indices"),
    [
        ("250", "learned_range", range(250)),
        (None, "learned_range", [999, 998, 700, 300, 10, 2, 1, 0]),
        ("250", "fixed_small", range(0, 250, 7)),
        ("250", "fixed_large", range(0, 250, 7)),
    ],
)
def test_ddpm_step_matches_diffusers(
    respacing: str | None, variance: str, indices: range | list[int]
) -> None:
    fixed = {"fixed_small": "small", "fixed_large": "large"}.get(variance, "large")
    diffusion = GaussianDiffusion(make_schedule(respacing=respacing), fixed)  # type: ignore[arg-type]
    reference = DDPMScheduler(**LINEAR, variance_type=variance, clip_sample=False)
    reference.set_timesteps(timesteps=diffusion.schedule.timesteps[::-1].tolist())
    for index in indices:
        x = torch.randn(SHAPE, generator=_gen(index))
        out = _outputs(index, learned=variance == "learned_range")
        t = int(diffusion.schedule.timesteps[index])
        expected = reference.step(out, t, x, generator=_gen(7 + index)).prev_sample
        noise = torch.randn(SHAPE, generator=_gen(7 + index))  # the same draw diffusers makes
        got, _ = ddpm_step(diffusion, out, x, index, noise)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_step_matches_diffusers(eta: float) -> None:
    diffusion = GaussianDiffusion(make_schedule(respacing="ddim50"))
    reference = DDIMScheduler(**LINEAR, clip_sample=False, set_alpha_to_one=True, steps_offset=0)
    reference.set_timesteps(50)
    assert reference.timesteps.tolist() == diffusion.schedule.timesteps[::-1].tolist()
    x_ref = x = torch.randn(SHAPE, generator=_gen(0))
    for index in reversed(range(50)):
        out = _outputs(index, learned=True)  # our step must use only the eps half
        noise = torch.randn(SHAPE, generator=_gen(300 + index))
        t = int(diffusion.schedule.timesteps[index])
        step = reference.step(out[:, :3], t, x, eta=eta, variance_noise=noise)
        got, pred_x0 = ddim_step(diffusion, out, x, index, noise, eta=eta)
        torch.testing.assert_close(got, step.prev_sample, rtol=1e-4, atol=2e-5)
        torch.testing.assert_close(pred_x0, step.pred_original_sample, rtol=1e-4, atol=1e-4)
        x_ref = reference.step(out[:, :3], t, x_ref, eta=eta, variance_noise=noise).prev_sample
        x = got
    if eta == 0.0:  # whole deterministic trajectory, errors compounded over 50 steps
        torch.testing.assert_close(x, x_ref, rtol=1e-4, atol=1e-4)


def _smooth_model(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    """A deterministic, nonlinear stand-in for a denoiser (B, C, H, W) -> (B, 2C, H, W)."""
    t = t.float().reshape(-1, 1, 1, 1)
    eps = 0.8 * torch.tanh(x) + 0.1 * torch.sin(t / 150.0) * x.flip(1)
    return torch.cat([eps, torch.zeros_like(eps)], dim=1)


@pytest.mark.parametrize("respacing", ["uniform20", "uniform8", "logsnr10", "25"])
def test_dpm_solver_trajectory_matches_diffusers(respacing: str) -> None:
    diffusion = GaussianDiffusion(make_schedule(respacing=respacing))
    timesteps = diffusion.schedule.timesteps[::-1].tolist()
    reference = DPMSolverMultistepScheduler(**LINEAR, algorithm_type="dpmsolver++", solver_order=2)
    if respacing.startswith("uniform"):
        reference.set_timesteps(len(timesteps))  # diffusers' own spacing ("linspace")
    else:
        reference.set_timesteps(timesteps=timesteps)
    assert reference.timesteps.tolist() == timesteps

    x0 = torch.randn(SHAPE, generator=_gen(11))
    expected, x = [], x0
    for t in reference.timesteps:
        x = reference.step(_smooth_model(x, t.expand(SHAPE[0]), None)[:, :3], t, x).prev_sample
        expected.append(x)
    got: list[torch.Tensor] = []

    def keep(info: StepInfo) -> None:
        got.append(info.x)

    final = sample_dpmpp_2m(_smooth_model, x0, diffusion, noise=SeededNoise([0, 1]), callback=keep)
    assert len(got) == len(expected)
    for mine, theirs in zip(got, expected, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=5e-5)
    torch.testing.assert_close(final, expected[-1], rtol=1e-4, atol=5e-5)
