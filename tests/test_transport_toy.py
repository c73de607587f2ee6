"""Flow samplers on the 1-D Gaussian mixture of `test_samplers_toy`, whose exact flow is analytic.

With x_t = alpha_t x1 + sigma_t x0 and x1 from the mixture, x_t given component k is
N(alpha mu_k, alpha^2 s_k^2 + sigma^2); the exact velocity E[alpha' x1 + sigma' x0 | x_t] is a
responsibility-weighted sum of Gaussian conditional means, written here from that alone (no code of
ditkit's paths beyond alpha and sigma). Every error left is then the sampler's. The ODE samplers start
from the exact quantiles of N(0, 1) (a monotone map in 1-D); the SDE samplers from random draws.

Run as a script to print the README's table: `python tests/test_transport_toy.py`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_samplers_toy import (
    MEANS,
    N_RANDOM,
    STDS,
    WEIGHTS,
    BatchNoise,
    assert_mixture_recovered,
    quantile_noise,
    w1_to_truth,
)

from ditkit.transport.paths import PATHS
from ditkit.transport.settings import FlowSettings
from ditkit.transport.sit_sampler import Sampler
from ditkit.transport.solvers import sample_flow
from ditkit.transport.transport import create_transport


def exact_model(path_type: str, prediction: str = "velocity"):  # type: ignore[no-untyped-def]
    """The exact prediction of the mixture's flow, called as model(x (B, 1, 1, 1), t (B,), y=None)."""
    path = PATHS[path_type]()
    w, mu, var0 = (torch.from_numpy(a) for a in (WEIGHTS, MEANS, STDS**2))

    def model(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        td = t.double().view(-1, 1, 1, 1)
        alpha, d_alpha = path.compute_alpha_t(td)
        sigma, d_sigma = path.compute_sigma_t(td)
        xd = x.double()  # (B, 1, 1, 1) against the components on the last axis (K,)
        var = alpha**2 * var0 + sigma**2
        log_resp = torch.log(w) - 0.5 * torch.log(var) - (xd - alpha * mu) ** 2 / (2 * var)
        resp = torch.softmax(log_resp, dim=-1)
        mean_x1 = mu + alpha * var0 / var * (xd - alpha * mu)  # E[x1 | x_t, k]
        mean_x0 = sigma / var * (xd - alpha * mu)  # E[x0 | x_t, k]
        if prediction == "velocity":
            out = d_alpha * mean_x1 + d_sigma * mean_x0
        elif prediction == "noise":
            out = mean_x0
        else:  # score
            out = (alpha * mu - xd) / var
        return (resp * out).sum(-1, keepdim=True).to(x.dtype)

    return model


def ode(path_type: str, sampler: str, steps: int | None, prediction: str = "velocity") -> torch.Tensor:
    z = quantile_noise()
    return sample_flow(
        exact_model(path_type, prediction),
        z,
        FlowSettings(path_type, prediction),
        y=None,
        sampler=sampler,
        steps=steps,
        noise=BatchNoise(len(z), 0),
    )


def sde(path_type: str, sampler: str, steps: int, seed: int = 1) -> torch.Tensor:
    z = torch.randn(N_RANDOM, 1, 1, 1, generator=torch.Generator().manual_seed(seed))
    return sample_flow(
        exact_model(path_type),
        z,
        FlowSettings(path_type),
        y=None,
        sampler=sampler,
        steps=steps,
        noise=BatchNoise(N_RANDOM, seed + 1),
    )


def test_exact_velocity_is_the_score_form_of_the_path():
    """The toy's velocity, score and noise agree through the path's conversions (an independent check of f, g)."""
    for name in PATHS:
        path = PATHS[name]()
        x = torch.linspace(-2, 2, 41, dtype=torch.float64).view(-1, 1, 1, 1)
        t = torch.full((41,), 0.6, dtype=torch.float64)
        v = exact_model(name)(x, t)
        score = exact_model(name, "score")(x, t)
        noise = exact_model(name, "noise")(x, t)
        torch.testing.assert_close(path.get_velocity_from_score(score, x, t), v)
        torch.testing.assert_close(path.get_score_from_noise(noise, x, t), score)


def test_dopri5_recovers_the_mixture_on_every_path():
    for name in PATHS:
        x = ode(name, "dopri5", None)
        assert w1_to_truth(x) < 0.006, name
        assert_mixture_recovered(x, weight_tol=0.003, moment_tol=0.01)


def test_fixed_step_ode_converges_at_its_order():
    errors = {(s, n): w1_to_truth(ode("Linear", s, n)) for s in ("euler", "heun") for n in (10, 50)}
    assert errors[("euler", 50)] < errors[("euler", 10)] / 3  # first order: ~5x from 5x the steps
    assert errors[("heun", 50)] < errors[("heun", 10)] / 8  # second order: much faster
    assert errors[("heun", 10)] < errors[("euler", 10)]
    assert errors[("heun", 50)] < 0.006


@pytest.mark.parametrize("prediction", ["score", "noise"])
def test_score_and_noise_models_sample_the_same_distribution(prediction):
    """The same exact flow given as score or noise (converted by the transport) lands on the mixture too."""
    x = ode("GVP", "dopri5", None, prediction)
    assert w1_to_truth(x) < 0.01
    assert_mixture_recovered(x, weight_tol=0.005, moment_tol=0.02)


def test_sde_samplers_recover_the_mixture():
    rng = np.random.default_rng(3)
    component = rng.choice(2, N_RANDOM, p=WEIGHTS)
    noise_floor = w1_to_truth(torch.from_numpy(rng.normal(MEANS[component], STDS[component])))
    for sampler in ("sde-euler", "sde-heun"):  # SiT's defaults: w_t = sigma_t, a final mean step of 0.04
        x = sde("Linear", sampler, 50)
        assert_mixture_recovered(x, weight_tol=0.015, moment_tol=0.03)
        assert w1_to_truth(x) < 0.02, sampler
    # without the noiseless final step the SDE ends at t = 1 on the true distribution: at the noise floor
    z = torch.randn(N_RANDOM, 1, 1, 1, generator=torch.Generator().manual_seed(1))
    sample_fn = Sampler(create_transport()).sample_sde(
        num_steps=100, diffusion_form="sigma", last_step=None, noise=BatchNoise(N_RANDOM, 2)
    )
    assert w1_to_truth(sample_fn(z, exact_model("Linear"))[-1]) < 1.5 * noise_floor


def test_the_sit_sampler_interface():
    """sample_ode returns the states at num_steps times (z first); sample_sde num_steps states, the last at t = 1."""
    transport = create_transport("Linear", "velocity")
    model = exact_model("Linear")
    z = quantile_noise()[20::40]  # 50 quantiles
    states = Sampler(transport).sample_ode(sampling_method="euler", num_steps=11)(z, model)
    assert states.shape == (11, 50, 1, 1, 1) and torch.equal(states[0], z)
    forward = Sampler(transport).sample_ode(num_steps=2)(z, model)[-1]
    encoded = Sampler(transport).sample_ode(num_steps=2, reverse=True)(forward, model)[-1]
    torch.testing.assert_close(encoded, z, atol=2e-3, rtol=0)  # the ODE inverts (data -> noise)
    sde_states = Sampler(transport).sample_sde(num_steps=7, diffusion_form="sigma")(z, model)
    assert len(sde_states) == 7
    default = Sampler(transport).sample_sde(num_steps=20)(z, model)[-1]  # SBDM starts above t = 0
    assert torch.isfinite(default).all()


def table() -> str:
    """The README's table: 1-Wasserstein distance to the mixture by sampler and steps (Linear path, velocity)."""
    rows = ["| sampler | 10 steps | 25 steps | 50 steps |", "|---|---|---|---|"]
    for name, run in (
        ("ODE Euler", lambda n: ode("Linear", "euler", n)),
        ("ODE Heun", lambda n: ode("Linear", "heun", n)),
        ("SDE Euler-Maruyama", lambda n: sde("Linear", "sde-euler", n)),
        ("SDE Heun", lambda n: sde("Linear", "sde-heun", n)),
    ):
        rows.append(f"| {name} | " + " | ".join(f"{w1_to_truth(run(n)):.4f}" for n in (10, 25, 50)) + " |")
    calls = []
    model = exact_model("Linear")

    def counted(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        calls.append(1)
        return model(x, t, y)

    z = quantile_noise()
    x = sample_flow(
        counted, z, FlowSettings(), y=None, sampler="dopri5", steps=None, noise=BatchNoise(len(z), 0)
    )
    rows.append(f"| ODE dopri5 (atol 1e-6, rtol 1e-3): {len(calls)} evaluations | {w1_to_truth(x):.4f} | | |")
    sde_end = Sampler(create_transport()).sample_sde(
        num_steps=100, diffusion_form="sigma", last_step=None, noise=BatchNoise(N_RANDOM, 2)
    )
    start = torch.randn(N_RANDOM, 1, 1, 1, generator=torch.Generator().manual_seed(1))
    w1 = w1_to_truth(sde_end(start, model)[-1])
    rows.append(f"| SDE Euler-Maruyama, 100 steps to t = 1 (no final mean step) | {w1:.4f} | | |")
    return "\n".join(rows)


if __name__ == "__main__":
    torch.set_num_threads(1)
    print(table())
