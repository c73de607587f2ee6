"""The original package's names: `create_diffusion(...)` and its methods are thin calls into ditkit."""

from __future__ import annotations

import pytest
import torch

from ditkit import create_diffusion
from ditkit.diffusion.gaussian import GaussianDiffusion
from ditkit.diffusion.schedule import make_schedule
from ditkit.errors import UserError
from ditkit.objectives.sampling import sample


def model(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """Original-style signature model(x, t, **model_kwargs) -> (B, 2C, H, W)."""
    shift = 0.0 if y is None else 0.1 * y.float().view(-1, 1, 1, 1)
    eps = 0.5 * torch.tanh(x) + shift + 1e-4 * t.float().view(-1, 1, 1, 1)
    return torch.cat([eps, torch.tanh(x.flip(1))], dim=1)


def _data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return (
        torch.rand(3, 2, 4, 4, generator=g) * 2 - 1,
        torch.randn(3, 2, 4, 4, generator=g),
        torch.tensor([1, 2, 3]),
    )


def test_training_losses_is_the_core_loss() -> None:
    diffusion = create_diffusion(timestep_respacing="")
    assert diffusion.num_timesteps == 1000 and diffusion.timestep_map[:3] == [0, 1, 2]
    x, noise, y = _data()
    t = torch.tensor([0, 10, 999])
    terms = diffusion.training_losses(model, x, t, model_kwargs=dict(y=y), noise=noise)
    assert set(terms) == {"loss", "mse", "vb"} and all(v.shape == (3,) for v in terms.values())
    core = GaussianDiffusion(make_schedule()).training_losses(model, x, t, noise, y)
    for key in terms:
        torch.testing.assert_close(terms[key], core[key], rtol=0, atol=0)
    fixed = create_diffusion("", learn_sigma=False)
    terms = fixed.training_losses(lambda x, t, y: model(x, t, y)[:, :2], x, t, dict(y=y), noise)
    assert set(terms) == {"loss", "mse"}


def test_sample_loops_are_the_samplers() -> None:
    z = torch.randn(2, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([4, 5])
    spaced = create_diffusion("25")
    assert spaced.timestep_map == make_schedule(respacing="25").timesteps.tolist()
    loop = spaced.p_sample_loop(
        model, z.shape, z, clip_denoised=False, model_kwargs=dict(y=y), progress=False
    )
    direct = sample(model, noise=z, labels=y, sampler="ddpm", steps=25, progress=False)
    torch.testing.assert_close(loop, direct, rtol=0, atol=0)
    ddim = create_diffusion("ddim10").ddim_sample_loop(
        model, z.shape, z, clip_denoised=False, model_kwargs=dict(y=y)
    )
    torch.testing.assert_close(
        ddim, sample(model, noise=z, labels=y, sampler="ddim", steps="ddim10", progress=False)
    )
    clipped = spaced.p_sample_loop(model, (2, 2, 4, 4), model_kwargs=dict(y=y), seeds=[3, 4])
    assert clipped.shape == (2, 2, 4, 4) and clipped.abs().max() <= 1.0 + 1e-6


def test_bpd_loop_and_errors() -> None:
    x, _, y = _data()
    result = create_diffusion("10").calc_bpd_loop(model, x, model_kwargs=dict(y=y))
    assert result["vb"].shape == (3, 10) and torch.isfinite(result["total_bpd"]).all()
    with pytest.raises(UserError, match="learn_sigma"):
        create_diffusion("", learn_sigma=False).training_losses(model, x, torch.tensor([1, 2, 3]), dict(y=y))
    with pytest.raises(UserError):
        create_diffusion("", use_kl=True)
    with pytest.raises(UserError):
        create_diffusion("5").p_sample_loop(model, (1, 2, 4, 4), denoised_fn=lambda v: v)
