"""The interpolant paths against closed forms and float64 references written independently here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad

from ditkit.errors import UserError
from ditkit.transport.paths import PATHS, VP_BETA_MAX, VP_BETA_MIN, expand_t_like_x
from ditkit.transport.settings import FlowSettings
from ditkit.transport.transport import create_transport

T = torch.linspace(0.02, 0.98, 49, dtype=torch.float64)


def _vp_alpha(t: float) -> float:
    """exp(-1/2 int_0^s beta(r) dr), s = 1 - t: the VP SDE's mean coefficient (Song et al. 2021, eq. 33)."""
    s = 1.0 - t
    integral, _ = quad(lambda r: VP_BETA_MIN + r * (VP_BETA_MAX - VP_BETA_MIN), 0.0, s)
    return math.exp(-0.5 * integral)


REFERENCE = {
    "Linear": (lambda t: t, lambda t: 1 - t),
    "GVP": (lambda t: math.sin(math.pi * t / 2), lambda t: math.cos(math.pi * t / 2)),
    "VP": (_vp_alpha, lambda t: math.sqrt(1 - _vp_alpha(t) ** 2)),
}


def _derivative(f, t: float, h: float = 1e-5) -> float:
    return (f(t + h) - f(t - h)) / (2 * h)


@pytest.mark.parametrize("name", list(PATHS))
def test_alpha_sigma_and_derivatives_match_the_closed_forms(name):
    path = PATHS[name]()
    alpha, d_alpha = path.compute_alpha_t(T)
    sigma, d_sigma = path.compute_sigma_t(T)
    ref_alpha, ref_sigma = REFERENCE[name]
    ts = T.tolist()
    np.testing.assert_allclose(alpha.numpy(), [ref_alpha(t) for t in ts], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(sigma.numpy(), [ref_sigma(t) for t in ts], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(d_alpha.numpy(), [_derivative(ref_alpha, t) for t in ts], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(d_sigma.numpy(), [_derivative(ref_sigma, t) for t in ts], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(
        path.compute_d_alpha_alpha_ratio_t(T).numpy(), (d_alpha / alpha).numpy(), rtol=1e-9
    )


def test_the_ends_of_the_paths():
    ends = torch.tensor([0.0, 1.0], dtype=torch.float64)
    for name in ("Linear", "GVP"):  # pure noise at 0, pure data at 1
        alpha, _ = PATHS[name]().compute_alpha_t(ends)
        sigma, _ = PATHS[name]().compute_sigma_t(ends)
        np.testing.assert_allclose(alpha.numpy(), [0.0, 1.0], atol=1e-15)
        np.testing.assert_allclose(sigma.numpy(), [1.0, 0.0], atol=1e-15)
    alpha0, _ = PATHS["VP"]().compute_alpha_t(ends[:1])
    assert float(alpha0) == pytest.approx(math.exp(-(VP_BETA_MAX + VP_BETA_MIN) / 4))  # not quite noise


@pytest.mark.parametrize("name", list(PATHS))
def test_drift_and_sbdm_diffusion_are_the_score_form_of_the_velocity(name):
    """f = -(alpha'/alpha) x and g = (alpha'/alpha) sigma^2 - sigma sigma', from float64 finite differences."""
    path = PATHS[name]()
    x = torch.randn(len(T), 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    f, g = path.compute_drift(x, T)
    ref_alpha, ref_sigma = REFERENCE[name]
    ts = T.tolist()
    ratio = torch.tensor([_derivative(ref_alpha, t) / ref_alpha(t) for t in ts], dtype=torch.float64)
    ref_g = torch.tensor(
        [
            _derivative(ref_alpha, t) / ref_alpha(t) * ref_sigma(t) ** 2
            - ref_sigma(t) * _derivative(ref_sigma, t)
            for t in ts
        ],
        dtype=torch.float64,
    )
    np.testing.assert_allclose(f.numpy(), (-ratio[:, None] * x).numpy(), rtol=1e-6)
    np.testing.assert_allclose(g.flatten().numpy(), ref_g.numpy(), rtol=1e-6)
    np.testing.assert_allclose(
        path.compute_diffusion(x, T, "SBDM").flatten().numpy(), ref_g.numpy(), rtol=1e-6
    )
    if name != "Linear":  # variance preserving: alpha^2 + sigma^2 = 1 makes g = alpha'/alpha
        np.testing.assert_allclose(g.flatten().numpy(), ratio.numpy(), rtol=1e-6)


def test_the_other_diffusion_forms():
    path = PATHS["GVP"]()
    x = torch.zeros(len(T), 2, dtype=torch.float64)
    t = T.numpy()
    expected = {
        "constant": np.full_like(t, 0.5),
        "sigma": 0.5 * np.cos(np.pi * t / 2),
        "linear": 0.5 * (1 - t),
        "decreasing": 0.25 * (0.5 * np.cos(np.pi * t) + 1) ** 2,
        "increasing-decreasing": 0.5 * np.sin(np.pi * t) ** 2,
    }
    for form, ref in expected.items():
        np.testing.assert_allclose(
            path.compute_diffusion(x, T, form, norm=0.5).flatten().numpy(), ref, rtol=1e-12
        )
    with pytest.raises(ValueError, match="unknown diffusion form"):
        path.compute_diffusion(x, T, "cubic")


@pytest.mark.parametrize("name", list(PATHS))
def test_velocity_score_and_noise_convert_into_each_other(name):
    """Given x0 and x1, the conditional velocity, noise x0 and score -x0/sigma describe the same x_t."""
    path = PATHS[name]()
    g = torch.Generator().manual_seed(1)
    x0, x1 = (
        torch.randn(len(T), 4, generator=g, dtype=torch.float64),
        torch.randn(len(T), 4, generator=g, dtype=torch.float64),
    )
    _, xt, ut = path.plan(T, x0, x1)
    sigma, _ = path.compute_sigma_t(expand_t_like_x(T, xt))
    score = -x0 / sigma
    np.testing.assert_allclose(
        path.get_score_from_velocity(ut, xt, T).numpy(), score.numpy(), rtol=1e-8, atol=1e-8
    )
    np.testing.assert_allclose(
        path.get_noise_from_velocity(ut, xt, T).numpy(), x0.numpy(), rtol=1e-8, atol=1e-8
    )
    np.testing.assert_allclose(
        path.get_velocity_from_score(score, xt, T).numpy(), ut.numpy(), rtol=1e-8, atol=1e-8
    )
    np.testing.assert_allclose(path.get_score_from_noise(x0, xt, T).numpy(), score.numpy(), rtol=1e-12)


def test_score_from_velocity_is_finite_at_pure_noise():
    """At t = 0 of the Linear path p_0 = N(0, I): the score is -x whatever alpha'/alpha = inf says."""
    path = PATHS["Linear"]()
    x = torch.randn(5, 3, dtype=torch.float64)
    t = torch.zeros(5, dtype=torch.float64)
    velocity = torch.randn(5, 3, dtype=torch.float64)
    np.testing.assert_allclose(path.get_score_from_velocity(velocity, x, t).numpy(), (-x).numpy())


def test_eps_defaults_are_sits():
    cases = {
        ("Linear", "velocity"): (0.0, 0.0),
        ("GVP", "velocity"): (0.0, 0.0),
        ("Linear", "score"): (1e-3, 1e-3),
        ("GVP", "noise"): (1e-3, 1e-3),
        ("VP", "velocity"): (1e-5, 1e-3),
        ("VP", "score"): (1e-5, 1e-3),
    }
    for (path, prediction), eps in cases.items():
        transport = create_transport(path, prediction)
        assert (transport.train_eps, transport.sample_eps) == eps
    # velocity on Linear/GVP ignores given values (stable everywhere), as SiT; others keep them
    assert create_transport("Linear", "velocity", train_eps=0.1).train_eps == 0.0
    assert create_transport("VP", "score", train_eps=0.01, sample_eps=0.02).check_interval() == (0.0, 0.99)
    assert create_transport("Linear", "noise").check_interval() == (1e-3, 1 - 1e-3)
    assert create_transport("Linear", "velocity").check_interval(
        sde=True, eval=True, diffusion_form="sigma", last_step_size=0.04
    ) == (0.0, 0.96)
    assert create_transport("VP").check_interval(eval=True, reverse=True) == (1.0, pytest.approx(1e-3))


def test_bad_options_are_refused():
    with pytest.raises(UserError, match="unknown path 'linear'"):
        create_transport("linear")
    with pytest.raises(UserError, match="unknown prediction"):
        create_transport("Linear", "eps")
    with pytest.raises(UserError, match="unknown loss weight"):
        create_transport("Linear", "score", "snr")
    with pytest.raises(UserError, match="train_eps"):
        FlowSettings(train_eps=-1.0)
