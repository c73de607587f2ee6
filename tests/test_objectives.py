"""The Objective protocol: both objectives conform, the registry reads runs and checkpoints, a third
objective plugs into the trainer's step, `sample()` and `DiTPipeline` without edits, and
`SamplingSettings` (validated, recorded in checkpoints, the defaults of a loaded pipeline)."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import pytest
import torch
from helpers import sampling_dit
from torch import Tensor

import ditkit
from ditkit.checkpoints.native import record_extra, save_model
from ditkit.choices import OBJECTIVES
from ditkit.errors import UserError
from ditkit.generation.pipeline import DiTPipeline
from ditkit.objectives import (
    OBJECTIVE_TYPES,
    DiffusionObjective,
    FlowObjective,
    Objective,
    as_objective,
    objective_from_options,
    objective_from_record,
)
from ditkit.objectives.base import SampleRequest, TrainingBatch
from ditkit.objectives.sampling import sample
from ditkit.samplers.settings import SamplingSettings
from ditkit.training.config import TrainConfig
from ditkit.training.ema import EMA
from ditkit.training.step import MicroBatch, TrainStep
from ditkit.transport.settings import FlowSettings
from ditkit.transport.time_sampling import TimeDistribution


def test_both_objectives_conform_and_the_registry_is_the_choice_list():
    assert tuple(OBJECTIVE_TYPES) == OBJECTIVES
    for name, cls in OBJECTIVE_TYPES.items():
        objective = cls()
        assert isinstance(objective, Objective) and objective.name == name
        assert objective.default_sampler in objective.samplers
        assert (
            objective.preview_sampler in objective.samplers and objective.walk_sampler in objective.samplers
        )
        assert objective.record()["objective"] == name
        back, note = objective_from_record(objective.record())
        assert type(back) is cls and back.record() == objective.record() and note is None
    assert not set(DiffusionObjective.samplers) & set(FlowObjective.samplers)


def test_train_options_pick_the_objective_and_its_settings():
    flow = objective_from_options(
        TrainConfig(
            objective="flow", path="GVP", time_sampling="logit-normal", logit_normal_mean=-0.4, steps=1
        )
    )
    assert isinstance(flow, FlowObjective) and flow.settings.path_type == "GVP"
    assert flow.training_times() == TimeDistribution("logit-normal", 0.0, 1.0, -0.4, 1.0)
    diffusion = objective_from_options(
        TrainConfig(noise_schedule="cosine", diffusion_steps=100, min_snr_gamma=5.0, steps=1)
    )
    assert isinstance(diffusion, DiffusionObjective) and diffusion.training_times() == 100
    assert diffusion.record()["diffusion"] == {
        "noise_schedule": "cosine",
        "diffusion_steps": 100,
        "fixed_variance": "large",
        "learn_sigma": True,
    }
    with pytest.raises(UserError, match="--min-snr-gamma applies to the diffusion objective only"):
        TrainConfig(objective="flow", min_snr_gamma=5.0, steps=1)


def test_checkpoint_records_are_read_back_or_refused():
    sit = {"official_args": {"path_type": "GVP", "prediction": "score"}}
    objective, note = objective_from_record(sit)  # SiT's training args say "flow"
    assert isinstance(objective, FlowObjective) and objective.settings.prediction == "score" and note is None
    objective, note = objective_from_record({}, "flow")  # a released .pt: nothing says, the user does
    assert isinstance(objective, FlowObjective) and "assuming SiT's defaults" in str(note)
    assert isinstance(objective_from_record({})[0], DiffusionObjective)
    with pytest.raises(UserError, match="holds a flow-matching model; drop --objective diffusion"):
        objective_from_record(FlowObjective().record(), "diffusion", "ckpt")
    with pytest.raises(UserError, match="unknown objective 'eps'"):
        objective_from_record({}, "eps")


def test_samplers_and_guidance_times_belong_to_the_objective():
    model = sampling_dit()
    flow = FlowObjective()
    with pytest.raises(
        UserError, match="'ddim' is not a sampler of flow-matching models; choose one of dopri5"
    ):
        sample(model, (1, 1, 8, 8), labels=[1], objective=flow, sampler="ddim")
    with pytest.raises(UserError, match="not within this diffusion model's times.*timesteps 0..999"):
        sample(model, (1, 1, 8, 8), labels=[1], guidance_scale=2.0, guidance_interval=(500.0, 1500.0))
    with pytest.warns(DeprecationWarning, match="guidance_scale"):
        old = sample(model, (1, 1, 8, 8), labels=[1], sampler="ddim", steps=2, cfg_scale=3.0, progress=False)
    new = sample(model, (1, 1, 8, 8), labels=[1], sampler="ddim", steps=2, guidance_scale=3.0, progress=False)
    assert torch.equal(old, new)


@pytest.mark.parametrize("name", OBJECTIVES)
def test_model_calls_are_the_forward_passes_the_samplers_make(name):
    """`Objective.model_calls` against a model that counts its calls, guided (both branches in one call)."""
    objective = as_objective(name)
    calls = []

    def model(x: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
        calls.append(1)
        return torch.zeros_like(x)

    for sampler in objective.samplers:
        for steps in (2, 3):
            calls.clear()
            expected = objective.model_calls(sampler, steps)
            if expected is None:  # adaptive (dopri5): no count to give
                continue
            sample(
                model,
                (2, 1, 4, 4),
                labels=[0, 1],
                objective=objective,
                sampler=sampler,
                steps=steps,
                guidance_scale=2.0,
                null_label=10,
                progress=False,
            )
            assert len(calls) == expected, (sampler, steps)
    if name == "flow":
        assert objective.model_calls("heun", 3) == 6 and objective.model_calls("dopri5", 3) is None


class X0Objective:
    """A third objective, defined here only: predict the clean sample from x_t = (1 - t) noise + t x,
    sampled by a fixed-step Euler walk along the implied velocity. Nothing in ditkit names it."""

    name: ClassVar[str] = "x0"
    kind: ClassVar[str] = "x0-prediction"
    options: ClassVar[tuple[str, ...]] = ()
    samplers: ClassVar[tuple[str, ...]] = ("x0-euler",)
    default_sampler: ClassVar[str] = "x0-euler"
    preview_sampler: ClassVar[str] = "x0-euler"
    walk_sampler: ClassVar[str] = "x0-euler"
    deterministic_samplers: ClassVar[tuple[str, ...]] = ("x0-euler",)
    default_guidance_scale: ClassVar[float] = 4.0
    fid_guidance_scale: ClassVar[float] = 1.5
    model_fields: ClassVar[dict[str, Any]] = {}
    guidance_times = (0.0, 1.0)
    guidance_times_help = "times [0, 1]"

    def default_steps(self, sampler: str) -> int | None:
        return 4

    def model_calls(self, sampler: str, steps: int) -> int | None:
        return steps

    def training_times(self) -> TimeDistribution:
        return TimeDistribution("uniform", 0.0, 0.9)

    def losses(self, batch: TrainingBatch) -> dict[str, Tensor]:
        x, t = batch.x, batch.t
        tt = t.view(-1, 1, 1, 1)
        pred = batch.model((1 - tt) * batch.noise + tt * x, t, batch.labels)[:, : x.shape[1]]
        return {"loss": ((pred - x) ** 2).mean(dim=(1, 2, 3))}

    def check_sampler(self, sampler: str, steps: Any, eta: float) -> None:
        if sampler not in self.samplers:
            raise UserError(f"unknown sampler {sampler!r}")

    def sample(self, request: SampleRequest) -> Tensor:
        n, x = request.steps or 4, request.x
        for i in range(n):
            t = torch.full((x.shape[0],), i / n)
            x0 = request.model(x, t, request.y)[:, : x.shape[1]]
            x = x + (x0 - x) / (n - i)  # to t + 1/n along the line from x to the predicted x0
        return x

    def record(self) -> dict[str, Any]:
        return {"objective": self.name}


def test_a_new_objective_plugs_into_training_sampling_and_the_pipeline():
    objective = X0Objective()
    assert isinstance(objective, Objective)
    model = sampling_dit().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    step = TrainStep(
        model, objective, optimizer, EMA(model, 0.9), seed=0, class_dropout=0.1, precision="fp32"
    )
    before = [p.detach().clone() for p in model.parameters()]
    out = step(0, [MicroBatch(range(4), torch.randn(4, 1, 8, 8), torch.arange(4))], 4)
    assert float(out.stats.means()[1][0]) > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    pipe = DiTPipeline(model.eval(), objective=objective, device="cpu")
    assert pipe.samplers == ("x0-euler",) and pipe.settings().sampler == "x0-euler"
    images = pipe([1, 2], seeds=[0, 1], output_type="tensor", progress=False)
    direct = sample(
        model,
        (2, 1, 8, 8),
        labels=[1, 2],
        objective=objective,
        guidance_scale=objective.default_guidance_scale,
    )
    torch.testing.assert_close(images, direct)


def test_sampling_settings_validate_in_one_line():
    for bad, message in (
        (dict(steps=0), "steps must be a whole number of at least 1, got 0"),
        (dict(steps=2.5), "steps must be a whole number"),
        (dict(guidance_scale=-1.0), "guidance scale must be 0 or more"),
        (dict(eta=2.0), r"eta must lie in \[0, 1\]"),
        (dict(guidance_interval=(0.8, 0.2)), "low <= high"),
        (dict(guided_channels="first2"), "unknown guided channels"),
    ):
        with pytest.raises(UserError, match=message):
            SamplingSettings(**bad)
    with pytest.raises(UserError, match="unknown sampling settings cfg_scale"):
        SamplingSettings.from_dict({"cfg_scale": 4.0})
    s = SamplingSettings("heun", 15, 3.0, guidance_interval=(0.16, 0.78), seed=10)
    assert SamplingSettings.from_dict(s.to_dict()) == s and s.seeds(3, start=2) == [12, 13, 14]


def test_a_pipeline_defaults_to_the_settings_its_checkpoint_records(tmp_path):
    model = sampling_dit()
    recorded = SamplingSettings("euler", 3, 2.0, guidance_interval=(0.2, 0.8))
    path = save_model(model, tmp_path / "ckpt", extra={**FlowObjective().record(), "class_names": None})
    record_extra(path, "sampling", recorded.to_dict())
    pipe = DiTPipeline.from_pretrained(path, device="cpu")
    assert pipe.sampling == recorded and pipe.default_sampler == "euler" and pipe.default_steps("euler") == 3
    assert pipe.default_steps("heun") == 25  # recorded steps go with the recorded sampler only
    assert pipe.settings(sampler="heun") == dataclasses.replace(recorded, sampler="heun", steps=None)
    assert pipe.settings(guidance_scale=1.0).guidance_scale == 1.0
    by_default = pipe([1, 2], seeds=[0, 1], output_type="tensor", progress=False)
    named = pipe(
        [1, 2], 2.0, 3, "euler", [0, 1], guidance_interval=(0.2, 0.8), output_type="tensor", progress=False
    )
    assert torch.equal(by_default, named)
    other = pipe([1, 2], seeds=[0, 1], guidance_scale=4.0, output_type="tensor", progress=False)
    assert not torch.equal(by_default, other)
    # settings that do not fit the model are refused in one line when it is loaded
    record_extra(path, "sampling", {**recorded.to_dict(), "sampler": "ddim"})
    with pytest.raises(
        UserError, match="records sampling settings that do not fit it.*not a sampler of flow"
    ):
        DiTPipeline.from_pretrained(path, device="cpu")
    with pytest.raises(UserError, match="not a ditkit checkpoint folder"):
        record_extra(tmp_path / "missing", "sampling", {})


def test_public_names():
    assert ditkit.SamplingSettings is SamplingSettings and ditkit.FlowObjective is FlowObjective
    assert isinstance(as_objective("flow"), FlowObjective) and isinstance(
        as_objective(None), DiffusionObjective
    )
    assert as_objective(FlowObjective(FlowSettings("GVP"))).settings.path_type == "GVP"
