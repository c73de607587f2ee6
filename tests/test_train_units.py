"""The pieces of the trainer: keyed randomness, data order, EMA, options, metrics, grids, signals."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest
import torch
from PIL import Image

from ditkit.errors import UserError
from ditkit.training.config import TrainConfig, resume_mismatches
from ditkit.training.data_order import BatchLayout, DataOrder
from ditkit.training.ema import EMA
from ditkit.training.lr_schedule import schedule_for
from ditkit.training.metrics import MetricsLog, plot_loss_curve, read_metrics, smooth
from ditkit.training.randomness import draw_step
from ditkit.training.signals import GracefulStop
from ditkit.visual import images_to_uint8, make_grid, save_grid


def test_draws_depend_only_on_seed_step_and_global_index():
    whole = draw_step(
        seed=3, step=7, indices=range(8), sample_shape=(1, 4, 4), num_timesteps=1000, drop_prob=0.5
    )
    part = draw_step(
        seed=3, step=7, indices=range(4, 8), sample_shape=(1, 4, 4), num_timesteps=1000, drop_prob=0.5
    )
    assert torch.equal(whole.noise[4:], part.noise)
    assert torch.equal(whole.t[4:], part.t) and torch.equal(whole.drop[4:], part.drop)
    other_step = draw_step(3, 8, range(8), (1, 4, 4), 1000, 0.5)
    assert not torch.equal(whole.noise, other_step.noise)
    assert whole.t.dtype == torch.int64 and int(whole.t.min()) >= 0 and int(whole.t.max()) < 1000


def test_label_dropout_rate_and_noise_statistics():
    draws = draw_step(0, 0, range(4000), (2,), 1000, 0.1)
    assert abs(draws.drop.float().mean().item() - 0.1) < 0.015
    assert abs(draws.noise.mean().item()) < 0.05 and abs(draws.noise.std().item() - 1) < 0.05
    assert not draw_step(0, 0, range(100), (2,), 1000, 0.0).drop.any()


def test_data_order_covers_each_epoch_without_repeats():
    order = DataOrder(num_items=50, global_batch=8, seed=1)
    assert order.steps_per_epoch == 6  # the last partial batch is dropped
    epoch0 = torch.cat([order.global_batch_items(s) for s in range(6)])
    assert len(set(epoch0.tolist())) == 48
    assert order.position(13) == (2, 1)
    assert not torch.equal(order.permutation(0), order.permutation(1))
    assert torch.equal(DataOrder(50, 8, 1).global_batch_items(9), order.global_batch_items(9))
    with pytest.raises(UserError, match="fewer than one global batch"):
        DataOrder(4, 8, 0)


def test_batch_layout_partitions_the_global_batch():
    layout = BatchLayout.create(global_batch=12, world_size=2, micro_batch=3)
    assert layout.local_batch == 6 and layout.accumulation == 2
    covered = [i for r in range(2) for m in range(2) for i in layout.positions(r, m)]
    assert covered == list(range(12))
    with pytest.raises(UserError, match="not divisible"):
        BatchLayout.create(10, 4, None)
    with pytest.raises(UserError, match="does not divide"):
        BatchLayout.create(12, 2, 4)


def test_ema_matches_the_formula_in_float64():
    model = torch.nn.Linear(3, 2)
    ema = EMA(model, decay=0.9)
    ref = {k: v.double().clone() for k, v in model.state_dict().items()}
    for _ in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        ema.update(model)
        for k, v in model.state_dict().items():
            ref[k] = 0.9 * ref[k] + 0.1 * v.double()
    for k, v in ema.weights(model).items():
        assert v.dtype == torch.float32
        torch.testing.assert_close(v.double(), ref[k], rtol=1e-6, atol=1e-6)


def test_ema_warmup_schedule_and_state():
    ema = EMA(torch.nn.Linear(2, 2), decay=0.999, warmup=True)
    assert ema.current_decay() == pytest.approx(0.1)  # (1 + 0) / (10 + 0)
    ema.num_updates = 10_000
    assert ema.current_decay() == 0.999
    other = EMA(torch.nn.Linear(2, 2), decay=0.999, warmup=True)
    other.load_state_dict(ema.state_dict())
    assert other.num_updates == 10_000


def test_warmup_learning_rate():
    cfg = TrainConfig(steps=10, lr=1e-3, warmup_steps=4)
    schedule = schedule_for(cfg, 10)
    assert [schedule.at(s) for s in range(5)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3])
    assert schedule_for(TrainConfig(steps=10, lr=1e-3), 10).at(9) == 1e-3


def test_config_checks_and_round_trip(tmp_path):
    with pytest.raises(UserError, match="exactly one of --steps and --epochs"):
        TrainConfig()
    with pytest.raises(UserError, match="exactly one"):
        TrainConfig(steps=1, epochs=1)
    with pytest.raises(UserError, match="precision"):
        TrainConfig(steps=1, precision="fp16")
    with pytest.raises(UserError, match="--compile blocks"):
        TrainConfig(steps=1, parallel="fsdp", compile="model")
    cfg = TrainConfig(steps=5, model_overrides={"depth": 3}, grad_clip=1.0)
    again = TrainConfig.from_dict(json.loads(cfg.save(tmp_path).read_text()))
    assert again == cfg
    assert TrainConfig(epochs=2.5, global_batch=10).total_steps(105) == 25
    changed = TrainConfig(steps=5, model_overrides={"depth": 3}, grad_clip=1.0, lr=3e-4, log_every=7)
    assert resume_mismatches(cfg.to_dict(), changed) == ["lr"]


def test_metrics_log_truncates_on_resume_and_plots(tmp_path):
    log = MetricsLog(tmp_path)
    for step in range(1, 6):
        log.write({"step": step, "loss": 1.0 / step})
    with open(log.path, "a") as f:
        f.write('{"step": 6, "lo')  # a torn line, as a crash mid-write leaves
    assert [r["step"] for r in read_metrics(log.path)] == [1, 2, 3, 4, 5]
    resumed = MetricsLog(tmp_path, resume_step=3)
    assert [r["step"] for r in resumed.records()] == [1, 2, 3]
    png = plot_loss_curve(resumed.records(), tmp_path / "curve.png")
    assert png is not None and Image.open(png).format == "PNG"
    assert plot_loss_curve([{"step": 1, "loss": float("nan")}], tmp_path / "none.png") is None
    np.testing.assert_allclose(smooth([1, 2, 3, 4], 2), [1, 1.5, 2.5, 3.5])


def test_make_grid_places_tiles_row_by_row(tmp_path):
    images = np.stack([np.full((2, 3), i, np.uint8) for i in range(5)])  # (5, 2, 3) grey
    grid = make_grid(images, nrow=2, padding=1, pad_value=255)
    assert grid.shape == (3 * 3 + 1, 2 * 4 + 1, 1)
    assert grid[1, 1, 0] == 0 and grid[1, 5, 0] == 1 and grid[4, 1, 0] == 2 and grid[7, 1, 0] == 4
    assert grid[7, 5, 0] == 255  # the missing sixth tile stays padding
    path = save_grid(np.zeros((4, 5, 5, 3), np.uint8), tmp_path / "g.png", nrow=2, scale=2)
    assert Image.open(path).size == (2 * (2 * 5 + 2) + 2, 2 * (2 * 5 + 2) + 2)  # tiles x2, padding not
    with pytest.raises(ValueError, match="uint8"):
        make_grid(np.zeros((2, 4, 4), np.float32), nrow=1)


def test_images_to_uint8_maps_the_unit_range():
    x = torch.tensor([-1.0, 0.0, 1.0, 2.0]).view(1, 1, 1, 4)
    assert images_to_uint8(x).ravel().tolist() == [0, 128, 255, 255]


def test_graceful_stop_turns_sigterm_into_a_flag():
    before = signal.getsignal(signal.SIGTERM)
    with GracefulStop() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested and stop.signal_name == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before
