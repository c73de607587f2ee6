"""NLL in bits per dimension through the full variational bound."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ditkit.diffusion.gaussian import GaussianDiffusion
from ditkit.diffusion.likelihood import nll_bpd
from ditkit.diffusion.losses import discretized_gaussian_log_likelihood
from ditkit.diffusion.schedule import make_schedule

F64 = torch.float64


def _data(seed: int = 0) -> torch.Tensor:
    """(3, 2, 4, 4) data on the 256-level grid in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, 2, 4, 4), generator=g).to(F64) / 127.5 - 1


def _oracle(x0: torch.Tensor):
    """Knows x_0: exact eps, and v = -1 so the variance is the true posterior variance."""
    full_ab = torch.from_numpy(make_schedule().alphas_cumprod)

    def model(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        ab = full_ab[t].view(-1, 1, 1, 1).to(x.dtype)
        eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
        return torch.cat([eps, -torch.ones_like(eps)], dim=1)

    return model


def test_oracle_bound_is_prior_plus_decoder() -> None:
    diffusion = GaussianDiffusion(make_schedule(respacing="50"))
    x0 = _data()
    result = nll_bpd(diffusion, _oracle(x0), x0, clip_denoised=False)
    assert result["vb"].shape == (3, 50)
    assert result["vb"][:, 1:].abs().max().item() < 1e-9  # exact posterior: every KL term vanishes
    assert result["mse"].max().item() < 1e-12 and result["xstart_mse"].max().item() < 1e-12

    ab_last = diffusion.schedule.alphas_cumprod[-1]
    mean, var = math.sqrt(ab_last) * x0.numpy(), 1 - ab_last
    prior_nats = 0.5 * (var + mean**2 - 1 - math.log(var))  # KL(N(mean, var) || N(0, 1))
    np.testing.assert_allclose(
        result["prior_bpd"].numpy(), prior_nats.mean(axis=(1, 2, 3)) / math.log(2), rtol=1e-9
    )

    # t = 0: the decoder's mean is x_0 itself and its variance beta~_1 (the clipped value).
    log_scale = torch.tensor(0.5 * diffusion.schedule.posterior_log_variance_clipped[0], dtype=F64)
    decoder_bits = -discretized_gaussian_log_likelihood(x0, x0, log_scale).mean(dim=(1, 2, 3)) / math.log(2)
    torch.testing.assert_close(result["vb"][:, 0], decoder_bits)
    torch.testing.assert_close(result["total_bpd"], result["prior_bpd"] + result["vb"].sum(dim=1))


def test_worse_model_has_higher_bound_and_seeds_fix_the_estimate() -> None:
    diffusion = GaussianDiffusion(make_schedule(respacing="20"))
    x0 = _data(1)

    def zeros(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return torch.zeros(x.shape[0], 2 * x.shape[1], *x.shape[2:], dtype=x.dtype)

    good = nll_bpd(diffusion, _oracle(x0), x0)["total_bpd"]
    bad = nll_bpd(diffusion, zeros, x0, seeds=[5, 6, 7])
    again = nll_bpd(diffusion, zeros, x0, seeds=[5, 6, 7])
    assert (bad["total_bpd"] > good + 1.0).all()
    torch.testing.assert_close(bad["total_bpd"], again["total_bpd"], rtol=0, atol=0)
    with pytest.raises(ValueError):
        nll_bpd(diffusion, zeros, x0, seeds=[1])
