"""LightningDiT's cosine velocity loss (--cosine-loss): its closed form, how it joins the MSE, and that it is
off by default, leaving the flow loss as it was."""

from __future__ import annotations

import json

import pytest
import torch
from test_train_support import tiny_config

from ditkit.diffusion.losses import mean_flat
from ditkit.errors import UserError
from ditkit.objectives import FlowObjective
from ditkit.objectives.base import TrainingBatch
from ditkit.training import train
from ditkit.transport.transport import cosine_velocity_loss


def test_known_vectors():
    # Two samples of 2 channels at 2 positions: orthogonal (cos 0) and parallel (1); opposite (-1) and
    # 45 degrees apart (2 ** -0.5). The cosine is taken over the channels, the mean over the positions.
    pred = torch.tensor([[[[1.0, 3.0]], [[0.0, 3.0]]], [[[1.0, 1.0]], [[0.0, 0.0]]]])  # (2, 2, 1, 2)
    target = torch.tensor([[[[0.0, 6.0]], [[1.0, 6.0]]], [[[-2.0, 1.0]], [[0.0, 1.0]]]])
    expected = torch.tensor([(1 + 0) / 2, (2 + (1 - 2**-0.5)) / 2])
    torch.testing.assert_close(cosine_velocity_loss(pred, target), expected)


def test_matches_a_float64_reference():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(3, 4, 5, 6, generator=g), torch.randn(3, 4, 5, 6, generator=g)
    a, b = pred.double(), target.double()
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))  # over the channels at each position
    torch.testing.assert_close(cosine_velocity_loss(pred, target).double(), (1 - cos).mean(dim=(1, 2)))


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    x, noise = torch.randn(4, 3, 4, 4, generator=g), torch.randn(4, 3, 4, 4, generator=g)
    weight = torch.randn(3, 3, generator=g)

    def model(x_t, t, y, drop=None):
        return torch.einsum("oc,bchw->bohw", weight, x_t) * t.view(-1, 1, 1, 1)

    return TrainingBatch(model, x, None, torch.linspace(0.1, 0.9, 4), noise)


def test_added_to_the_mse_with_weight_one():
    batch = _batch()
    plain = FlowObjective().losses(batch)
    cosine = FlowObjective(cosine_loss=True).losses(batch)
    assert torch.equal(cosine["mse"], plain["loss"])
    x1, x0, t = batch.x, batch.noise, batch.t.view(-1, 1, 1, 1)
    velocity = x1 - x0  # the Linear path x_t = t x1 + (1 - t) x0
    pred = batch.model(t * x1 + (1 - t) * x0, batch.t, None)
    torch.testing.assert_close(cosine["cos"], cosine_velocity_loss(pred, velocity))
    torch.testing.assert_close(cosine["loss"], cosine["mse"] + cosine["cos"])


def test_off_by_default_the_loss_is_the_plain_mse_bit_for_bit():
    batch = _batch(1)
    terms = FlowObjective().losses(batch)
    assert set(terms) == {"loss", "pred"}
    x1, x0, t = batch.x, batch.noise, batch.t.view(-1, 1, 1, 1)
    pred = batch.model(t * x1 + (1 - t) * x0, batch.t, None)
    assert torch.equal(terms["loss"], mean_flat((pred - (x1 - x0)) ** 2))


def test_config_default_and_errors(tmp_path):
    assert tiny_config(tmp_path, objective="flow").cosine_loss is False
    with pytest.raises(
        UserError, match=r"^--cosine-loss applies to flow matching only; add --objective flow$"
    ):
        tiny_config(tmp_path, cosine_loss=True)
    with pytest.raises(UserError, match="needs --prediction velocity"):
        tiny_config(tmp_path, objective="flow", prediction="noise", cosine_loss=True)


def test_training_logs_both_terms(tmp_path):
    result = train(tiny_config(tmp_path, objective="flow", cosine_loss=True, steps=2), progress=False)
    record = json.loads((result.out / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["loss"] == pytest.approx(record["mse"] + record["cos"], rel=1e-5)
    assert 0 < record["cos"] < 2
