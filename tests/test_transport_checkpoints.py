"""SiT's files: its released weights (DiT's keys, nothing said) load with objective="flow"; its training
checkpoints name their path and prediction in their arguments."""

from __future__ import annotations

import argparse

import pytest
import torch
from helpers import sampling_dit
from test_checkpoints import training_dict

from ditkit.errors import UserError
from ditkit.generation.pipeline import DiTPipeline
from ditkit.objectives import FlowObjective
from ditkit.transport.settings import FlowSettings
from ditkit.transport.sit_sampler import Sampler
from ditkit.transport.transport import create_transport


def test_released_weights_load_as_flow_on_request(tmp_path):
    model = sampling_dit()
    torch.save(model.state_dict(), tmp_path / "SiT-T-2.pt")
    plain = DiTPipeline.from_pretrained(tmp_path / "SiT-T-2.pt", device="cpu")
    assert plain.objective.name == "diffusion"  # nothing says otherwise
    pipe = DiTPipeline.from_pretrained(tmp_path / "SiT-T-2.pt", device="cpu", objective="flow")
    assert pipe.objective.name == "flow"
    assert pipe.objective.settings.path_type == "Linear" and pipe.objective.settings.prediction == "velocity"
    assert any("SiT's defaults" in note for note in pipe.notes)
    with pytest.raises(UserError, match="unknown objective"):
        DiTPipeline.from_pretrained(tmp_path / "SiT-T-2.pt", objective="rf")


def test_guided_pipeline_matches_sits_sampler_on_its_model(tmp_path):
    """The pipeline's euler ODE with first-3-channel guidance equals SiT's interface driven by hand."""
    model = sampling_dit(in_channels=4)
    pipe = DiTPipeline(model, device="cpu", objective=FlowObjective(FlowSettings(path_type="Linear")))
    z = pipe.initial_noise([3, 4])
    ours = pipe.sample_latents(
        [1, 2],
        seeds=[3, 4],
        sampler="euler",
        num_steps=6,
        guidance_scale=3.0,
        guided_channels="first3",
        progress=False,
    )

    def forward_with_cfg(x, t, y, cfg_scale):  # SiT's guided forward, on the 2B-stacked batch
        half = x[: len(x) // 2]  # SiT evaluates both halves at the conditional half's state
        out = model(torch.cat([half, half]), t, y)[:, :4]  # SiT's model drops the learned-sigma channels
        eps, rest = out[:, :3], out[:, 3:]
        cond, uncond = eps.chunk(2)
        half = uncond + cfg_scale * (cond - uncond)
        return torch.cat([torch.cat([half, half]), rest], dim=1)

    sample_fn = Sampler(create_transport()).sample_ode(sampling_method="euler", num_steps=7)
    with torch.no_grad():
        theirs = sample_fn(
            torch.cat([z, z]), forward_with_cfg, y=torch.tensor([1, 2, 10, 10]), cfg_scale=3.0
        )[-1]
    torch.testing.assert_close(ours, theirs[:2], atol=1e-5, rtol=1e-5)


def test_sit_training_checkpoint_names_its_flow(tmp_path):
    model = sampling_dit()
    args = argparse.Namespace(
        model="SiT-XS/2",
        path_type="GVP",
        prediction="score",
        loss_weight=None,
        train_eps=1e-5,
        sample_eps=1e-3,
    )
    torch.save(training_dict(model, model, args), tmp_path / "0100000.pt")
    pipe = DiTPipeline.from_pretrained(tmp_path / "0100000.pt", device="cpu")
    settings = pipe.objective.settings
    assert pipe.objective.name == "flow" and settings.path_type == "GVP" and settings.prediction == "score"
    assert settings.eps == (1e-5, 1e-3)
    with pytest.raises(UserError, match="holds a flow-matching model"):
        DiTPipeline.from_pretrained(tmp_path / "0100000.pt", objective="diffusion")
    images = pipe([1], seeds=[0], sampler="heun", num_steps=3, output_type="tensor", progress=False)
    assert torch.isfinite(images).all()


def test_guidance_interval_takes_flow_times():
    pipe = DiTPipeline(
        sampling_dit(), device="cpu", objective=FlowObjective(FlowSettings(path_type="Linear"))
    )
    run = dict(seeds=[0, 1], sampler="euler", num_steps=4, guidance_scale=4.0, progress=False)
    guided = pipe.sample_latents([1, 2], **run)
    everywhere = pipe.sample_latents([1, 2], guidance_interval=(0.0, 1.0), **run)
    nowhere = pipe.sample_latents([1, 2], guidance_interval=(0.9, 1.0), **run)  # Euler's times: 0 .. 0.75
    late = pipe.sample_latents([1, 2], guidance_interval=(0.5, 1.0), **run)
    plain = pipe.sample_latents([1, 2], **{**run, "guidance_scale": 1.0})
    torch.testing.assert_close(everywhere, guided)
    torch.testing.assert_close(nowhere, plain)
    assert not torch.allclose(late, guided) and not torch.allclose(late, plain)
    with pytest.raises(
        UserError, match=r"not within this flow model's times: give T_MIN <= T_MAX in flow times \[0, 1\]"
    ):
        pipe.sample_latents([1, 2], guidance_interval=(200.0, 800.0), **run)  # diffusion timesteps
