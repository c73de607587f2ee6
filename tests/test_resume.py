"""Exact resume: an interrupted and resumed run ends with the very weights of an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_train_support import assert_state_equal, tiny_config

from ditkit.checkpoints import load_model
from ditkit.errors import UserError
from ditkit.run_folder import TRAIN_STATE_FILE, latest_checkpoint
from ditkit.training import train
from ditkit.training.state import load_training_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _options(tmp_path, out, steps, **objective):
    # 64 items / 16 per step = 4 steps per epoch, so the resumed part crosses an epoch boundary;
    # accumulation, warmup, clipping and EMA warmup all carry state across the interruption.
    return tiny_config(
        tmp_path,
        out=str(tmp_path / out),
        steps=steps,
        global_batch=16,
        micro_batch=8,
        warmup_steps=3,
        grad_clip=0.5,
        ema_decay=0.99,
        ema_warmup=True,
        **objective,
    )


def _losses(folder):
    return [json.loads(line)["loss"] for line in (folder / "metrics.jsonl").read_text().splitlines()]


VARIANTS = {
    "diffusion": {},
    "flow": {"objective": "flow", "path": "GVP", "time_sampling": "logit-normal"},
    "muon": {"optimizer": "muon", "weight_decay": 0.01},  # Muon's momentum buffers carry over too
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path, variant):
    options = VARIANTS[variant]
    straight = train(_options(tmp_path, "straight", 6, **options), progress=False)
    first = train(_options(tmp_path, "resumed", 3, **options), progress=False)
    assert first.step == 3
    resumed = train(_options(tmp_path, "resumed", 6, **options), resume=True, progress=False)
    assert resumed.step == 6

    a = load_training_checkpoint(straight.checkpoint)
    b = load_training_checkpoint(resumed.checkpoint)
    assert_state_equal(a.model, b.model)
    assert_state_equal(a.ema, b.ema)
    assert_state_equal(a.state["optimizer"], b.state["optimizer"])
    assert a.state["ema"] == b.state["ema"] and a.state["data"] == b.state["data"]
    assert _losses(tmp_path / "straight") == _losses(tmp_path / "resumed")


def test_resume_from_an_explicit_checkpoint_and_changed_options(tmp_path):
    train(_options(tmp_path, "run", 2), progress=False)
    ckpt = latest_checkpoint(tmp_path / "run")
    assert ckpt is not None and ckpt.name == "0000002"
    changed = _options(tmp_path, "run", 3)
    changed.lr = 5e-4
    with pytest.raises(UserError, match=r"trained with --lr 0.001 \(now 0.0005\);"):
        train(changed, resume=ckpt, progress=False)
    with pytest.raises(UserError, match="no training checkpoint"):
        train(_options(tmp_path, "run", 3), resume=tmp_path / "nowhere", progress=False)
    (ckpt / "ema.safetensors").write_bytes(b"garbage")
    with pytest.raises(UserError, match="cannot read the training checkpoint"):
        train(_options(tmp_path, "run", 3), resume=ckpt, progress=False)


def test_resume_without_checkpoint_starts_fresh_and_time_budget_stops(tmp_path):
    """A run cut before its first checkpoint (its train_config.json written) starts again on --resume."""
    cfg = _options(tmp_path, "run", 50)
    Path(cfg.out).mkdir(parents=True)
    cfg.save(cfg.out)
    cfg.time_budget_minutes = 1e-6  # expires during the first step
    result = train(cfg, resume=True, progress=False)
    assert result.stopped == "time budget" and result.step == 1
    state = torch.load(result.checkpoint / TRAIN_STATE_FILE, weights_only=True)
    assert state["step"] == 1


@pytest.mark.slow
def test_sigterm_saves_a_loadable_checkpoint_then_resume_finishes(tmp_path):
    cfg = tiny_config(tmp_path)
    out = tmp_path / "run"
    command = [sys.executable, "-m", "ditkit", "train", "--model", "DiT-T/2", "--data", "fashion-mnist"]
    command += ["--data-dir", cfg.data_dir, "--image-size", "8", "--global-batch", "8", "--lr", "1e-3"]
    command += [
        "--device",
        "cpu",
        "--log-every",
        "1",
        "--ckpt-every",
        "0",
        "--out",
        str(out),
        "--no-progress",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [*command, "--steps", "100000"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            metrics = out / "metrics.jsonl"
            if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, stderr  # stopped, not finished (issue 28)
    assert "stopped at step" in stdout and "SIGTERM" in stdout and "--resume" in stdout
    ckpt = latest_checkpoint(out)
    assert ckpt is not None
    step = int(ckpt.name)
    assert 2 <= step < 100000
    model = load_model(ckpt, which="model")
    saved = load_file(str(ckpt / "model.safetensors"))
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())

    done = subprocess.run(
        [*command, "--steps", str(step + 2), "--resume"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert latest_checkpoint(out).name == f"{step + 2:07d}"
