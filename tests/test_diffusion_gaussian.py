"""The Gaussian process, the learned-range variance, KL/decoder terms and the hybrid loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from ditkit.diffusion.gaussian import GaussianDiffusion
from ditkit.diffusion.losses import discretized_gaussian_log_likelihood, normal_kl
from ditkit.diffusion.schedule import make_schedule
from ditkit.errors import UserError

F64 = torch.float64


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def test_q_sample_closed_form_and_moments() -> None:
    diffusion = GaussianDiffusion(make_schedule())
    ab = diffusion.schedule.alphas_cumprod
    x0 = torch.full((20000, 1, 1, 1), 0.7, dtype=F64)
    for k in (0, 100, 500, 999):
        t = torch.full((20000,), k)
        noise = _randn(20000, 1, 1, 1, seed=k)
        xt = diffusion.q_sample(x0, t, noise)
        torch.testing.assert_close(
            xt, math.sqrt(ab[k]) * x0 + math.sqrt(1 - ab[k]) * noise, rtol=1e-12, atol=0
        )
        assert xt.mean().item() == pytest.approx(
            0.7 * math.sqrt(ab[k]), abs=4 * math.sqrt((1 - ab[k]) / 20000)
        )
        assert xt.var().item() == pytest.approx(1 - ab[k], rel=0.05)
        mean, var, log_var = diffusion.q_mean_variance(x0, t)
        assert var[0].item() == pytest.approx(1 - ab[k], rel=1e-12) and log_var[0].item() == pytest.approx(
            math.log(1 - ab[k]), rel=1e-12
        )


def test_q_posterior_matches_float64_numpy() -> None:
    diffusion = GaussianDiffusion(make_schedule(respacing="250"))
    s = diffusion.schedule
    x0, xt = _randn(6, 3, 4, 4, seed=1), _randn(6, 3, 4, 4, seed=2)
    t = torch.tensor([0, 1, 2, 100, 248, 249])
    mean, var, log_var = diffusion.q_posterior(x0, xt, t)
    idx = t.numpy()[:, None, None, None]
    ab, ab_prev, beta = s.alphas_cumprod[idx], s.alphas_cumprod_prev[idx], s.betas[idx]
    expected_mean = (
        np.sqrt(ab_prev) * beta * x0.numpy() + np.sqrt(1 - beta) * (1 - ab_prev) * xt.numpy()
    ) / (1 - ab)
    np.testing.assert_allclose(mean.numpy(), expected_mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        var.numpy(), np.broadcast_to(beta * (1 - ab_prev) / (1 - ab), var.shape), rtol=1e-10
    )
    assert log_var[0, 0, 0, 0].item() == pytest.approx(math.log(s.posterior_variance[1]), rel=1e-12)


def test_predict_xstart_and_eps_invert_q_sample() -> None:
    diffusion = GaussianDiffusion(make_schedule())
    x0, eps = _randn(4, 2, 3, 3, seed=3), _randn(4, 2, 3, 3, seed=4)
    t = torch.tensor([0, 10, 500, 999])
    xt = diffusion.q_sample(x0, t, eps)
    torch.testing.assert_close(diffusion.predict_xstart(xt, t, eps), x0, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(diffusion.predict_eps(xt, t, x0), eps, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("respacing", [None, "250"])
def test_learned_range_interpolates_log_variance(respacing: str | None) -> None:
    diffusion = GaussianDiffusion(make_schedule(respacing=respacing))
    s = diffusion.schedule
    xt = _randn(3, 2, 2, 2, seed=5)
    t = torch.tensor([0, 5, len(s) - 1])
    idx = t.numpy()[:, None, None, None]
    for v, frac in ((1.0, 1.0), (-1.0, 0.0), (0.0, 0.5), (0.3, 0.65)):
        out = torch.cat([torch.zeros_like(xt), torch.full_like(xt, v)], dim=1)  # (B, 2C, H, W)
        pred = diffusion.p_mean_variance(out, xt, t)
        expected = frac * np.log(s.betas[idx]) + (1 - frac) * s.posterior_log_variance_clipped[idx]
        np.testing.assert_allclose(pred.log_variance.numpy(), np.broadcast_to(expected, xt.shape), rtol=1e-12)
        torch.testing.assert_close(pred.variance, pred.log_variance.exp())


def test_fixed_variances_and_channel_check() -> None:
    s = make_schedule()
    xt = _randn(2, 3, 2, 2, seed=6)
    t = torch.tensor([0, 400])
    large = GaussianDiffusion(s, "large").p_mean_variance(torch.zeros_like(xt), xt, t)
    small = GaussianDiffusion(s, "small").p_mean_variance(torch.zeros_like(xt), xt, t)
    assert large.variance[1, 0, 0, 0].item() == pytest.approx(s.betas[400], rel=1e-12)
    assert large.variance[0, 0, 0, 0].item() == pytest.approx(s.posterior_variance[1], rel=1e-12)
    assert small.variance[1, 0, 0, 0].item() == pytest.approx(s.posterior_variance[400], rel=1e-12)
    with pytest.raises(UserError):
        GaussianDiffusion(s).p_mean_variance(torch.zeros(2, 5, 2, 2, dtype=F64), xt, t)
    with pytest.raises(UserError):
        GaussianDiffusion(s, "medium")  # type: ignore[arg-type]


def test_normal_kl_matches_closed_form() -> None:
    m1, m2 = _randn(50, seed=7), _randn(50, seed=8)
    lv1, lv2 = _randn(50, seed=9), _randn(50, seed=10)
    s1, s2 = torch.exp(0.5 * lv1), torch.exp(0.5 * lv2)
    expected = torch.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5
    torch.testing.assert_close(normal_kl(m1, lv1, m2, lv2), expected, rtol=1e-10, atol=1e-12)
    assert normal_kl(m1, lv1, m1, lv1).abs().max().item() < 1e-12


def test_discretized_gaussian_matches_scipy_and_normalises() -> None:
    levels = torch.linspace(-1, 1, 256, dtype=F64)  # the 256 bin centres
    for mean, log_scale in ((0.1, -2.0), (-0.95, -4.0), (0.99, -1.0), (0.0, 1.0)):
        logp = discretized_gaussian_log_likelihood(
            levels, torch.tensor(mean, dtype=F64), torch.tensor(log_scale, dtype=F64)
        )
        assert torch.logsumexp(logp, 0).item() == pytest.approx(0.0, abs=1e-9)  # the bins partition the line
        sd, x = math.exp(log_scale), levels.numpy()
        lower_tail = norm.cdf(x + 1 / 255, mean, sd) - norm.cdf(x - 1 / 255, mean, sd)
        upper_tail = norm.sf(x - 1 / 255, mean, sd) - norm.sf(x + 1 / 255, mean, sd)
        expected = np.where(x < mean, lower_tail, upper_tail)  # each accurate in its own tail
        expected[0], expected[-1] = norm.cdf(x[0] + 1 / 255, mean, sd), norm.sf(x[-1] - 1 / 255, mean, sd)
        keep = expected > 1e-11  # below that the 1e-12 floor applies
        np.testing.assert_allclose(logp.numpy()[keep], np.log(expected[keep]), rtol=1e-8, atol=1e-10)


def _oracle(x0: torch.Tensor, v: float | None):
    """A model that knows x_0 and so returns the exact eps; with v, also constant variance values."""
    full_ab = torch.from_numpy(make_schedule().alphas_cumprod)  # indexed by original timestep

    def model(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        ab = full_ab[t].view(-1, 1, 1, 1).to(x.dtype)
        eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
        return eps if v is None else torch.cat([eps, torch.full_like(eps, v)], dim=1)

    return model


def test_hybrid_loss_terms_and_stop_gradient() -> None:
    diffusion = GaussianDiffusion(make_schedule())
    x0, noise = _randn(4, 2, 4, 4, seed=11).clamp(-1, 1), _randn(4, 2, 4, 4, seed=12)
    t = torch.tensor([0, 1, 300, 999])
    exact = diffusion.training_losses(_oracle(x0, -1.0), x0, t, noise)
    assert exact["mse"].abs().max().item() < 1e-20
    assert exact["vb"][1:].abs().max().item() < 1e-10  # exact mean and exact variance: KL = 0
    assert exact["vb"][0].item() > 0  # the decoder NLL at t = 0
    torch.testing.assert_close(exact["loss"], exact["mse"] + exact["vb"])

    weights = torch.zeros(1, 4, 1, 1, dtype=F64, requires_grad=True)

    def model(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return torch.cat([x, x], dim=1) * (1 + weights)  # (B, 2C, H, W)

    terms = diffusion.training_losses(model, x0, t, noise)
    (g_vb,) = torch.autograd.grad(terms["vb"].sum(), weights, retain_graph=True)
    (g_mse,) = torch.autograd.grad(terms["mse"].sum(), weights)
    assert g_vb[:, :2].abs().max() == 0 and g_vb[:, 2:].abs().min() > 0  # vb trains sigma only
    assert g_mse[:, 2:].abs().max() == 0 and g_mse[:, :2].abs().min() > 0
    xt = diffusion.q_sample(x0, t, noise)
    out = model(xt, t, None).detach()
    torch.testing.assert_close(terms["vb"].detach(), diffusion.vb_terms_bpd(out, x0, xt, t))
    torch.testing.assert_close(terms["mse"].detach(), ((out[:, :2] - noise) ** 2).mean(dim=(1, 2, 3)))


def test_fixed_variance_loss_is_eps_mse_and_model_sees_original_timesteps() -> None:
    diffusion = GaussianDiffusion(make_schedule(respacing="ddim50"))
    seen: list[torch.Tensor] = []

    def model(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        seen.append(t)
        return torch.zeros_like(x)

    x0, noise = _randn(3, 1, 2, 2, seed=13), _randn(3, 1, 2, 2, seed=14)
    terms = diffusion.training_losses(model, x0, torch.tensor([0, 1, 49]), noise)
    assert set(terms) == {"loss", "mse"}
    torch.testing.assert_close(terms["loss"], (noise**2).mean(dim=(1, 2, 3)))
    assert seen[0].tolist() == [0, 20, 980] and seen[0].dtype == torch.long
