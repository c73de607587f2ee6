"""Warmup-stable-decay learning rates and min-SNR-gamma loss weights against closed forms."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from test_train_support import assert_state_equal, tiny_config

from ditkit.diffusion.gaussian import GaussianDiffusion
from ditkit.diffusion.schedule import make_schedule
from ditkit.errors import UserError
from ditkit.run_folder import checkpoint_path
from ditkit.training import train
from ditkit.training import trainer as trainer_module
from ditkit.training.config import TrainConfig
from ditkit.training.lr_schedule import LRSchedule, schedule_for
from ditkit.training.state import load_training_checkpoint


def test_wsd_holds_then_decays_linearly_to_zero_at_the_last_step():
    s = LRSchedule(lr=1.0, warmup_steps=2, kind="wsd", decay_fraction=0.25, total_steps=100)
    assert (s.decay_start, s.decay_end) == (75, 100)
    assert s.at(0) == pytest.approx(0.5) and s.at(1) == 1.0 and s.at(74) == 1.0
    assert [s.at(k) for k in (75, 85, 99)] == pytest.approx([1.0, 0.6, 0.04])
    assert s.at(100) == 0.0


def test_time_budget_brings_the_decay_forward_once():
    s = LRSchedule(lr=1.0, warmup_steps=0, kind="wsd", decay_fraction=0.4, total_steps=1000)
    assert s.start_decay(300)  # 60% of the budget took 300 steps: 200 more (less 5% margin) for 40%
    assert (s.decay_start, s.decay_end, s.end_step) == (300, 490, 490)
    assert not s.start_decay(350)  # decided once
    assert s.at(395) == pytest.approx(0.5)
    again = LRSchedule(lr=1.0, warmup_steps=0, kind="wsd", decay_fraction=0.4, total_steps=1000)
    again.load_state_dict(s.state_dict())
    assert [again.at(k) for k in range(0, 600, 7)] == [s.at(k) for k in range(0, 600, 7)]
    late = LRSchedule(lr=1.0, warmup_steps=0, kind="wsd", decay_fraction=0.4, total_steps=1000)
    assert not late.start_decay(800)  # the step count's own decay (from 600) came first
    constant = schedule_for(TrainConfig(steps=10, lr=2.0), 10)
    assert not constant.start_decay(3) and constant.at(9) == 2.0 and constant.end_step == 10


def test_schedule_options_are_checked():
    with pytest.raises(UserError, match="schedule"):
        TrainConfig(steps=1, lr_schedule="cosine-ish")
    with pytest.raises(UserError, match="decay-fraction"):
        TrainConfig(steps=1, decay_fraction=0.0)
    with pytest.raises(UserError, match="min-snr-gamma"):
        TrainConfig(steps=1, min_snr_gamma=-1.0)


def test_min_snr_weights_match_the_closed_form():
    schedule = make_schedule()
    diffusion = GaussianDiffusion(schedule, min_snr_gamma=5.0)
    t = torch.tensor([0, 10, 100, 500, 999])
    ab = np.asarray(schedule.alphas_cumprod)[t.numpy()]
    snr = ab / (1 - ab)
    expected = np.minimum(snr, 5.0) / snr
    np.testing.assert_allclose(diffusion.snr_weights(t).numpy(), expected, rtol=1e-6)
    assert expected[0] < 1e-3 and expected[-1] == 1.0  # low noise is damped, high noise kept

    x, noise = torch.randn(5, 1, 4, 4), torch.randn(5, 1, 4, 4)

    def model(x_t, steps, y):
        return torch.zeros_like(x_t)

    plain = GaussianDiffusion(schedule).training_losses(model, x, t, noise)
    weighted = diffusion.training_losses(model, x, t, noise)
    torch.testing.assert_close(weighted["mse"], plain["mse"])  # logged unweighted
    torch.testing.assert_close(weighted["loss"], plain["mse"] * torch.from_numpy(expected).float())


def _options(tmp_path, out, **overrides):
    fields = dict(steps=6, global_batch=16, lr_schedule="wsd", decay_fraction=0.5, min_snr_gamma=5.0)
    return tiny_config(tmp_path, out=str(tmp_path / out), **{**fields, **overrides})


def test_wsd_min_snr_run_resumes_exactly(tmp_path):
    straight = train(_options(tmp_path, "straight", ckpt_every=3), progress=False)
    records = [json.loads(x) for x in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in records] == pytest.approx([1e-3, 1e-3, 1e-3, 1e-3, 2e-3 / 3, 1e-3 / 3])
    shutil.copytree(tmp_path / "straight", tmp_path / "resumed")
    shutil.rmtree(checkpoint_path(tmp_path / "resumed", 6))
    resumed = train(_options(tmp_path, "resumed"), resume=True, progress=False)
    a, b = load_training_checkpoint(straight.checkpoint), load_training_checkpoint(resumed.checkpoint)
    assert_state_equal(a.model, b.model)
    assert (
        a.state["lr_schedule"] == b.state["lr_schedule"] == {"kind": "wsd", "decay_start": 3, "decay_end": 6}
    )


def test_time_budget_starts_the_decay_and_ends_the_run_at_its_end(tmp_path, monkeypatch):
    clock = iter(range(0, 10**6, 1))  # the trainer's clock advances 1 s at each reading
    monkeypatch.setattr(trainer_module, "time", SimpleNamespace(perf_counter=lambda: float(next(clock))))
    options = _options(
        tmp_path, "timed", steps=500, global_batch=8, time_budget_minutes=1.0, min_snr_gamma=None
    )
    result = train(options, progress=False)
    state = load_training_checkpoint(result.checkpoint).state["lr_schedule"]
    assert result.stopped == "time budget" and result.step == state["decay_end"] < 250
    assert 0 < state["decay_start"] < state["decay_end"]
    records = [json.loads(x) for x in (tmp_path / "timed" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["lr"] < 1e-3 * 2 / (state["decay_end"] - state["decay_start"])
