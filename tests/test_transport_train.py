"""Training with --objective flow: options, keyed draws, checkpoints that say what they are, and the
command line round trip train -> sample -> walk on a tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_train_cli import _args
from test_train_support import tiny_config

from ditkit.cli.main import main
from ditkit.errors import UserError
from ditkit.generation.pipeline import DiTPipeline
from ditkit.training import train
from ditkit.training.config import RESUME_INVARIANT, TrainConfig, resume_mismatches
from ditkit.training.randomness import draw_step
from ditkit.transport.time_sampling import TimeDistribution

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_options_of_the_other_objective_are_refused(tmp_path):
    with pytest.raises(
        UserError, match="--path, --time-sampling apply to flow matching only; add --objective flow"
    ):
        tiny_config(tmp_path, path="GVP", time_sampling="logit-normal")
    with pytest.raises(UserError, match="--diffusion-steps applies to the diffusion objective only"):
        tiny_config(tmp_path, objective="flow", diffusion_steps=100)
    with pytest.raises(UserError, match="unknown objective"):
        tiny_config(tmp_path, objective="rectified")
    with pytest.raises(UserError, match="unknown prediction"):
        tiny_config(tmp_path, objective="flow", prediction="x0")
    cfg = tiny_config(tmp_path, objective="flow", path="VP", prediction="score", loss_weight="likelihood")
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.flow_settings().eps == (1e-5, 1e-3)


def test_the_objective_is_resume_invariant(tmp_path):
    flow = tiny_config(tmp_path, objective="flow")
    for name in (
        "objective",
        "path",
        "prediction",
        "loss_weight",
        "time_sampling",
        "logit_normal_mean",
        "train_eps",
    ):
        assert name in RESUME_INVARIANT
    assert resume_mismatches(tiny_config(tmp_path).to_dict(), flow) == ["objective"]
    other = tiny_config(tmp_path, objective="flow", time_sampling="logit-normal").to_dict()
    assert resume_mismatches(other, flow) == ["time_sampling"]
    old = {k: v for k, v in tiny_config(tmp_path).to_dict().items() if k not in ("objective", "path")}
    assert resume_mismatches(old, tiny_config(tmp_path)) == []  # checkpoints from before the option


def test_continuous_draws_are_keyed_per_sample():
    times = TimeDistribution("logit-normal", 0.0, 1.0)
    whole = draw_step(3, 7, range(8), (1, 4, 4), times, 0.1)
    parts = [draw_step(3, 7, [i], (1, 4, 4), times, 0.1) for i in (5, 2)]
    assert whole.t.dtype == torch.float32 and ((whole.t > 0) & (whole.t < 1)).all()
    for i, part in zip((5, 2), parts, strict=True):  # sample i's draws do not depend on its batch-mates
        assert torch.equal(part.t[0], whole.t[i]) and torch.equal(part.noise[0], whole.noise[i])
        assert torch.equal(part.drop[0], whole.drop[i])
    assert len(set(whole.t.tolist())) == 8
    diffusion = draw_step(3, 7, range(8), (1, 4, 4), 1000, 0.1)
    assert diffusion.t.dtype == torch.int64 and ((diffusion.t >= 0) & (diffusion.t < 1000)).all()


def test_flow_training_learns_and_its_checkpoint_samples_as_flow(tmp_path):
    cfg = tiny_config(
        tmp_path, objective="flow", path="GVP", time_sampling="logit-normal", steps=6, learn_sigma=False
    )
    result = train(cfg, progress=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert set(records[0]) >= {"loss", "lr"} and "vb" not in records[0]
    assert np.isfinite([r["loss"] for r in records]).all()
    pipe = DiTPipeline.from_pretrained(result.checkpoint)
    assert pipe.objective.name == "flow" and pipe.objective.settings.path_type == "GVP"
    assert pipe.default_sampler == "dopri5"
    a = pipe([1, 2], seeds=[5, 6], output_type="tensor", progress=False)
    b = pipe([2], seeds=[6], output_type="tensor", progress=False)
    torch.testing.assert_close(a[1:], b, atol=1e-5, rtol=0)  # image i depends only on its seed and class
    heun = pipe([1], sampler="heun", num_steps=30, seeds=[5], output_type="tensor", progress=False)
    torch.testing.assert_close(heun, a[:1], atol=2e-2, rtol=0)  # both solve the same ODE
    with pytest.raises(UserError, match="not a sampler of flow-matching models"):
        pipe([1], sampler="ddim", progress=False)
    with pytest.raises(UserError, match="holds a flow-matching model"):
        DiTPipeline.from_pretrained(result.checkpoint, objective="diffusion")


def test_cli_round_trip_train_sample_walk(tmp_path, capsys):
    flow = ["--objective", "flow", "--prediction", "noise", "--loss-weight", "velocity"]
    assert main(_args(tmp_path, "--steps", "2", "--sample-every", "2", "--sample-steps", "3", *flow)) == 0
    ckpt = tmp_path / "run" / "checkpoints" / "0000002"
    assert (tmp_path / "run" / "samples" / "step_0000002.png").exists()
    saved = json.loads((ckpt / "config.json").read_text())
    assert saved["extra"]["objective"] == "flow" and saved["extra"]["flow"]["prediction"] == "noise"
    out = tmp_path / "samples"
    args = [
        "sample",
        str(ckpt),
        "--class",
        "1",
        "--num-per-class",
        "2",
        "--sampler",
        "sde-euler",
        "--steps",
        "5",
    ]
    assert main([*args, "--out", str(out), "--quiet"]) == 0
    record = json.loads((out / "samples.json").read_text())["settings"]
    assert record["sampler"] == "sde-euler" and record["flow"]["prediction"] == "noise"
    walk = [
        "walk",
        str(ckpt),
        "--mode",
        "noise",
        "--class",
        "1",
        "--seed",
        "0",
        "--seed",
        "1",
        "--frames",
        "3",
    ]
    assert main([*walk, "--sampler", "euler", "--steps", "4", "--out", str(tmp_path / "w"), "--quiet"]) == 0
    assert (tmp_path / "w" / "noise_walk_grid.png").exists()
    capsys.readouterr()
    assert main([*walk, "--sampler", "sde-euler", "--out", str(tmp_path / "w2"), "--quiet"]) == 2
    assert "deterministic sampler" in capsys.readouterr().err
