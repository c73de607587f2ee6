"""The flow-matching loss: SiT's conventions, each prediction's target, its weights, and the draws."""

from __future__ import annotations

import pytest
import torch

import ditkit
from ditkit.transport.paths import PATHS
from ditkit.transport.time_sampling import TimeDistribution
from ditkit.transport.transport import create_transport


def _oracle(transport, x0, x1, channels_out=None):
    """A 'model' that knows the draws: it returns the exact target of the prediction (and optional junk channels)."""
    path = transport.path
    seen = {}

    def model(xt, t, y=None):
        seen["t"], seen["y"], seen["xt"] = t, y, xt
        _, _, ut = path.plan(t, x0, x1)
        sigma, _ = path.compute_sigma_t(t.view(-1, 1, 1, 1))
        target = {"velocity": ut, "noise": x0, "score": -x0 / sigma}[transport.prediction]
        if channels_out is not None:
            target = torch.cat([target, torch.full_like(target, 1e3)], dim=1)  # learned-sigma channels
        return target

    return model, seen


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("prediction", ["velocity", "score", "noise"])
def test_the_exact_target_has_zero_loss_and_others_do_not(path, prediction):
    transport = create_transport(
        path, prediction, loss_weight="likelihood" if prediction != "velocity" else None
    )
    g = torch.Generator().manual_seed(0)
    x1, x0 = torch.randn(6, 3, 4, 4, generator=g), torch.randn(6, 3, 4, 4, generator=g)
    t = torch.linspace(0.1, 0.9, 6)
    model, seen = _oracle(transport, x0, x1, channels_out=6)
    terms = transport.training_losses(model, x1, dict(y=torch.arange(6)), t=t, noise=x0)
    assert terms["loss"].shape == (6,)
    assert terms["loss"].abs().max() < 1e-6  # the 2C-channel output is read through its first C channels
    assert torch.equal(seen["t"], t) and torch.equal(seen["y"], torch.arange(6))
    alpha, _ = transport.path.compute_alpha_t(t.view(-1, 1, 1, 1))
    sigma, _ = transport.path.compute_sigma_t(t.view(-1, 1, 1, 1))
    torch.testing.assert_close(seen["xt"], alpha * x1 + sigma * x0)  # x1 data, x0 noise
    wrong = transport.training_losses(lambda xt, t, y=None: torch.zeros_like(xt), x1, t=t, noise=x0)
    assert (wrong["loss"] > 1e-3).all()


def test_loss_weights_are_sits():
    """noise: w (eps_hat - x0)^2 with w = (g / sigma)^2 ("velocity") or g / sigma^2 ("likelihood")."""
    x1 = torch.randn(4, 2, 2, 2, generator=torch.Generator().manual_seed(1))
    x0 = torch.randn(4, 2, 2, 2, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([0.2, 0.4, 0.6, 0.8])
    zero = lambda xt, t, y=None: torch.zeros_like(xt)  # noqa: E731
    plain = create_transport("GVP", "noise").training_losses(zero, x1, t=t, noise=x0)["loss"]
    torch.testing.assert_close(plain, x0.pow(2).mean((1, 2, 3)))
    for weight in ("velocity", "likelihood"):
        loss = create_transport("GVP", "noise", weight).training_losses(zero, x1, t=t, noise=x0)["loss"]
        g = torch.pi / (2 * torch.tan(torch.pi * t / 2))  # GVP: g = alpha'/alpha
        sigma = torch.cos(torch.pi * t / 2)
        w = (g / sigma) ** 2 if weight == "velocity" else g / sigma**2
        torch.testing.assert_close(loss, w * plain)
    # velocity prediction ignores the weight, as SiT does
    v = create_transport("GVP", "velocity", "likelihood").training_losses(zero, x1, t=t, noise=x0)["loss"]
    torch.testing.assert_close(v, create_transport("GVP").training_losses(zero, x1, t=t, noise=x0)["loss"])


def test_default_draws_come_from_the_generator_and_the_interval():
    transport = ditkit.create_transport("Linear", "score")
    x1 = torch.zeros(512, 1, 1, 1)
    times = []

    def model(xt, t, y=None):
        times.append(t)
        return torch.zeros_like(xt)

    a = transport.training_losses(model, x1, generator=torch.Generator().manual_seed(3))["loss"]
    b = transport.training_losses(model, x1, generator=torch.Generator().manual_seed(3))["loss"]
    assert torch.equal(a, b) and torch.equal(times[0], times[1])
    assert times[0].dtype == torch.float32
    assert times[0].min() >= 1e-3 and times[0].max() <= 1 - 1e-3  # score: eps from both ends
    assert 0.4 < float(times[0].mean()) < 0.6


def test_logit_normal_times():
    g = torch.Generator().manual_seed(0)
    t = TimeDistribution("logit-normal", 0.0, 1.0, mean=0.0, std=1.0).draw((20000,), g).double()
    logit = torch.log(t / (1 - t))
    assert abs(float(logit.mean())) < 0.03 and abs(float(logit.std()) - 1.0) < 0.03
    shifted = TimeDistribution("logit-normal", 0.1, 0.9, mean=1.0, std=0.5).draw((20000,), g).double()
    unit = (shifted - 0.1) / 0.8  # mapped affinely onto [t0, t1]
    logit = torch.log(unit / (1 - unit))
    assert abs(float(logit.mean()) - 1.0) < 0.03 and abs(float(logit.std()) - 0.5) < 0.03
    with pytest.raises(ditkit.UserError, match="unknown time sampling"):
        TimeDistribution("beta")


def test_bad_model_output_is_a_clear_error():
    transport = create_transport()
    with pytest.raises(ditkit.UserError, match="returned 5 channels for 3-channel inputs"):
        transport.training_losses(lambda x, t: torch.zeros(x.shape[0], 5, 2, 2), torch.zeros(2, 3, 2, 2))
