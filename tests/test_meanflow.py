"""MeanFlow (`objective="meanflow"`): the loss against the identity evaluated by finite differences, the
two JVP routes, the reduction to flow matching at r = t, a Gaussian whose average velocity has a closed
form (zero loss, exact one-step samples), the zero-initialised interval embedding, and a training run
through the CLI that resumes exactly and samples in one and two jumps."""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import random_tiny_dit, write_fake_fmnist
from torch import Tensor

from ditkit.cli.main import main
from ditkit.errors import UserError
from ditkit.generation.pipeline import DiTPipeline
from ditkit.model.dit import DiT
from ditkit.objectives import FlowObjective, MeanFlowObjective
from ditkit.objectives.base import TrainingBatch
from ditkit.objectives.meanflow import ADAPTIVE_WEIGHT_EPS, IntervalTimes
from ditkit.objectives.sampling import sample
from ditkit.training.config import TrainConfig
from ditkit.training.randomness import draw_step
from ditkit.training.step import loss_terms
from ditkit.transport.time_sampling import TimeDistribution

SHAPE = (1, 8, 8)


def _model(seed: int = 0) -> DiT:
    return random_tiny_dit(seed, std=0.05, in_channels=1, interval_embedding=True).double().eval()


def _batch(n: int = 4, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(n, *SHAPE, generator=g).double(),
        torch.randn(n, *SHAPE, generator=g).double(),
        torch.arange(n),
    )


def test_the_loss_regresses_on_the_identity_evaluated_by_finite_differences():
    model, (x, noise, y) = _model(), _batch()
    objective = MeanFlowObjective(adaptive_power=0.0)
    t = torch.tensor([[0.2, 0.5], [0.6, 0.3], [0.1, 0.0], [0.45, 0.25]], dtype=torch.float64)
    terms = objective.losses(TrainingBatch(lambda z, tt, yy, drop=None: model(z, tt, yy), x, y, t, noise))
    # the target by hand: u(z_t, t, h) + ... with du/dt from central differences along (v, 1, -1)
    start, h = t[:, 0].view(-1, 1, 1, 1), t[:, 1].view(-1, 1, 1, 1)
    z, v = start * x + (1 - start) * noise, x - noise
    eps = 1e-5
    step = torch.stack([torch.ones(4), -torch.ones(4)], dim=1).double()
    with torch.no_grad():
        u = model(z, t, y)[:, :1]  # the average velocity: the first C of the 2C output channels
        du = (model(z + eps * v, t + eps * step, y) - model(z - eps * v, t - eps * step, y))[:, :1] / (
            2 * eps
        )
    target = v + h * du
    expected = ((u - target) ** 2).flatten(1).sum(1)
    torch.testing.assert_close(terms["loss"].detach().double(), expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("guidance", [1.0, 2.0])
def test_forward_mode_and_two_reverse_passes_give_the_same_gradients(guidance):
    x, _, y = _batch()
    grads = []
    for jvp in ("func", "backward"):
        model = random_tiny_dit(3, std=0.05, in_channels=1, interval_embedding=True).train()
        objective = MeanFlowObjective(interval_share=0.5, guidance=guidance, jvp=jvp)
        draws = draw_step(0, 0, range(4), SHAPE, objective.training_times(), 0.3)
        loss_terms(model, objective, x.float(), y, draws)["loss"].sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)
    assert grads[0].abs().sum() > 0


def test_with_empty_intervals_the_loss_is_flow_matchings():
    model, (x, noise, y) = _model(), _batch()
    start = torch.tensor([0.1, 0.4, 0.7, 0.9], dtype=torch.float64)
    t = torch.stack([start, torch.zeros(4, dtype=torch.float64)], dim=1)

    def denoiser(z, tt, yy, drop=None):
        return model(z, tt, yy)

    meanflow = MeanFlowObjective(adaptive_power=0.0).losses(TrainingBatch(denoiser, x, y, t, noise))
    flow = FlowObjective().losses(TrainingBatch(denoiser, x, y, start, noise))
    torch.testing.assert_close(meanflow["mse"].float(), flow["loss"], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(
        meanflow["loss"].float(), flow["loss"] * math.prod(SHAPE), rtol=1e-5, atol=1e-6
    )
    weighted = MeanFlowObjective().losses(TrainingBatch(denoiser, x, y, t, noise))[
        "loss"
    ]  # p = 1: ||e||^2 / (||e||^2 + c)
    norm = flow["loss"] * math.prod(SHAPE)
    torch.testing.assert_close(weighted.float(), norm / (norm + ADAPTIVE_WEIGHT_EPS), rtol=1e-5, atol=1e-7)


class GaussianAverageVelocity(torch.nn.Module):
    """The exact average velocity of the Linear path from N(0, I) noise to N(mu, s^2 I) data: the flow map
    is affine, z_e = a(e) / a(t) (z_t - t mu) + e mu with a(t) = sqrt(t^2 s^2 + (1 - t)^2)."""

    def __init__(self, mu: float, s: float) -> None:
        super().__init__()
        self.mu, self.s = mu, s

    def a(self, t: Tensor) -> Tensor:
        return torch.sqrt(t**2 * self.s**2 + (1 - t) ** 2)

    def forward(self, z: Tensor, times: Tensor, y: Tensor | None = None) -> Tensor:
        t, h = (times[:, i].view(-1, *([1] * (z.ndim - 1))) for i in (0, 1))
        e = t + h
        a_t, a_e = self.a(t), self.a(e)
        da = (t * self.s**2 - (1 - t)) / a_t  # a'(t), for h -> 0
        exact = ((a_e / a_t - 1) * (z - t * self.mu) + h * self.mu) / h.clamp_min(1e-12)
        instantaneous = da / a_t * (z - t * self.mu) + self.mu
        return torch.where(h > 0, exact, instantaneous)


def test_the_true_average_velocity_has_zero_loss_and_samples_a_gaussian_in_one_step():
    """The target uses each pair's velocity x - noise, whose mean given z_t is the true velocity: the loss
    is exactly zero for the true u where the two agree, data at one point (a Gaussian of variance 0). For
    N(mu, s^2) data the true u samples exactly in one jump, and in two."""
    x, noise, _ = _batch(64)
    times = IntervalTimes(TimeDistribution("logit-normal", 0.0, 1.0, 0.4, 1.0), 0.75)
    t = torch.cat([times.draw((1,), torch.Generator().manual_seed(i)) for i in range(64)]).double()
    assert (t[:, 1] > 0).any() and (t[:, 1] == 0).any()
    point = GaussianAverageVelocity(mu=0.7, s=0.0)
    loss = MeanFlowObjective(adaptive_power=0.0).losses(
        TrainingBatch(lambda z, tt, yy, drop=None: point(z, tt), torch.full_like(x, 0.7), None, t, noise)
    )
    assert loss["mse"].max() < 1e-12  # zero up to float32 rounding (the loss reads the output in float32)
    wrong = GaussianAverageVelocity(mu=0.7, s=0.05)  # not the data's: a loss well above zero
    off = MeanFlowObjective(adaptive_power=0.0).losses(
        TrainingBatch(lambda z, tt, yy, drop=None: wrong(z, tt), torch.full_like(x, 0.7), None, t, noise)
    )
    assert off["mse"].mean() > 1e-4
    truth = GaussianAverageVelocity(mu=0.7, s=0.3).eval()
    one = sample(truth, (4096, 1, 2, 2), objective=MeanFlowObjective(), steps=1, progress=False).double()
    assert abs(one.mean() - 0.7) < 0.01 and abs(one.std() - 0.3) < 0.01
    two = sample(truth, (4096, 1, 2, 2), objective=MeanFlowObjective(), steps=2, progress=False)
    torch.testing.assert_close(two.double(), one, rtol=1e-4, atol=1e-5)  # exact at any number of jumps


def test_the_interval_embedding_starts_at_zero_so_a_flow_model_fine_tunes_into_it():
    flow = random_tiny_dit(5, std=0.05, in_channels=1).eval()
    meanflow = DiT(flow.config.__class__(**{**flow.config.to_dict(), "interval_embedding": True})).eval()
    missing, unexpected = meanflow.load_state_dict(flow.state_dict(), strict=False)
    assert {k.split(".")[0] for k in missing} == {"h_embedder"} and not unexpected
    x, _, y = _batch()
    t = torch.full((4,), 0.3)
    with torch.no_grad():
        for h in (0.0, 0.5):
            times = torch.stack([t, torch.full_like(t, h)], dim=1)
            torch.testing.assert_close(meanflow(x.float(), times, y), flow(x.float(), t, y))
    with pytest.raises(ValueError, match="need interval_embedding"):
        flow(x.float(), torch.stack([t, t], dim=1), y)


def test_options_and_samplers_are_checked_in_one_line():
    with pytest.raises(
        UserError, match="--meanflow-guidance applies to MeanFlow only; add --objective meanflow"
    ):
        TrainConfig(meanflow_guidance=2.0, steps=1)
    with pytest.raises(
        UserError, match="--path applies to flow matching only; drop it for --objective meanflow"
    ):
        TrainConfig(objective="meanflow", path="GVP", steps=1)
    TrainConfig(objective="meanflow", time_sampling="logit-normal", logit_normal_mean=0.4, steps=1)
    model = _model().float()
    with pytest.raises(UserError, match="'heun' is not a sampler of MeanFlow models; choose one of meanflow"):
        sample(model, (1, *SHAPE), labels=[1], objective="meanflow", sampler="heun")
    with pytest.raises(UserError, match="a whole number of jumps of at least 1"):
        sample(model, (1, *SHAPE), labels=[1], objective="meanflow", steps="ddim5")


@pytest.mark.slow
def test_a_meanflow_run_trains_resumes_exactly_and_samples_in_one_and_two_jumps(tmp_path):
    data = write_fake_fmnist(tmp_path / "fm", n=64)
    common = f"train --model DiT-T/2 --data-dir {data} --image-size 8 --global-batch 8 --lr 1e-3".split()
    common += "--objective meanflow --meanflow-guidance 2 --meanflow-interval-share 0.5".split()
    common += ["--no-learn-sigma", "--quiet"]
    assert main([*common, "--steps", "4", "--out", str(tmp_path / "whole")]) == 0
    assert main([*common, "--steps", "2", "--out", str(tmp_path / "half")]) == 0
    assert main([*common, "--steps", "4", "--out", str(tmp_path / "half"), "--resume"]) == 0
    whole = DiTPipeline.from_pretrained(tmp_path / "whole", device="cpu")
    resumed = DiTPipeline.from_pretrained(tmp_path / "half", device="cpu")
    for a, b in zip(whole.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert whole.objective.name == "meanflow" and whole.model.config.interval_embedding
    assert whole.settings().sampler == "meanflow" and whole.settings().guidance_scale == 1.0
    one = whole([1, 2], seeds=[0, 1], output_type="tensor", progress=False)
    two = whole([1, 2], seeds=[0, 1], num_steps=2, output_type="tensor", progress=False)
    assert one.shape == (2, 1, 8, 8) and torch.isfinite(two).all() and not torch.equal(one, two)
    record = json.loads((tmp_path / "whole" / "train_config.json").read_text())
    assert record["objective"] == "meanflow" and record["meanflow_guidance"] == 2.0
    out = tmp_path / "samples"
    assert (
        main(
            ["sample", str(tmp_path / "whole"), "--class", "1", "--steps", "2", "--out", str(out), "--quiet"]
        )
        == 0
    )
    assert (out / "grid.png").is_file()
    # FID-scale shards and a latent walk take the same sampler (one jump by default, guidance 1)
    fid = tmp_path / "fid"
    assert (
        main(["sample", str(tmp_path / "whole"), "--num-samples", "6", "--fid-out", str(fid), "--quiet"]) == 0
    )
    manifest = json.loads((fid / "manifest.json").read_text())
    assert manifest["settings"]["sampler"] == "meanflow" and manifest["settings"]["guidance_scale"] == 1.0
    assert (
        main(
            ["walk", str(tmp_path / "whole"), "--mode", "noise", "--class", "1", "--seed", "0", "--seed", "1"]
            + ["--frames", "3", "--out", str(tmp_path / "walk"), "--quiet"]
        )
        == 0
    )
