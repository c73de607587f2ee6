"""Checkpoints written before the Objective / SamplingSettings redesign still load, sample and resume.

tests/data/pre_redesign holds two tiny runs (DiT-T/2, hidden 32, 8x8 pixels of `write_fake_fmnist`,
3 steps; one per objective) written by ditkit at commit 9191a17, and `expected.safetensors` with what
that code produced from them: guided latents (with and without a guidance interval) and the EMA weights
after resuming for one more step. The files were made by `ditkit train ... --steps 3 --ckpt-every 3`
and `DiTPipeline.sample_latents`, as the test below calls them.

The comparison allows float rounding (1e-5), since CPUs with other instruction sets (AVX2 / AVX-512)
round matmuls differently; on the machine that wrote the files the results are bit-identical.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import write_fake_fmnist
from safetensors.torch import load_file

from ditkit.generation.pipeline import DiTPipeline

DATA = Path(__file__).parent / "data" / "pre_redesign"
# (objective, sampler, steps, guidance interval in the objective's own times) as the files were made.
CASES = [("diffusion", "ddim", 5, (200, 800)), ("flow", "heun", 3, (0.2, 0.8))]
TOLERANCE = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def expected() -> dict[str, torch.Tensor]:
    return load_file(str(DATA / "expected.safetensors"))


@pytest.mark.parametrize(("objective", "sampler", "steps", "interval"), CASES)
def test_old_checkpoint_samples_as_before(expected, objective, sampler, steps, interval):
    pipe = DiTPipeline.from_pretrained(DATA / objective / "checkpoints" / "0000003", device="cpu")
    assert pipe.objective.name == objective
    latents = pipe.sample_latents(
        [1, 7, 3], seeds=[0, 5, 9], guidance_scale=2.5, num_steps=steps, sampler=sampler, progress=False
    )
    torch.testing.assert_close(latents, expected[f"{objective}/latents"], **TOLERANCE)
    guided = pipe.sample_latents(
        [2],
        seeds=[4],
        guidance_scale=3.0,
        num_steps=steps,
        sampler=sampler,
        guidance_interval=interval,
        progress=False,
    )
    torch.testing.assert_close(guided, expected[f"{objective}/interval_latents"], **TOLERANCE)


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["diffusion", "flow"])
def test_old_run_resumes_as_before(tmp_path, expected, objective):
    run = tmp_path / "run"
    shutil.copytree(DATA / objective, run)
    data = write_fake_fmnist(tmp_path / "fm", n=64)
    done = subprocess.run(
        [sys.executable, "-m", "ditkit", "train", "--resume", "--out", str(run), "--steps", "4"]
        + ["--data-dir", str(data), "--quiet"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    ema = load_file(str(run / "checkpoints" / "0000004" / "ema.safetensors"))
    prefix = f"{objective}/resumed_ema/"
    want = {k[len(prefix) :]: v for k, v in expected.items() if k.startswith(prefix)}
    assert set(ema) == set(want)
    for name, value in want.items():
        torch.testing.assert_close(ema[name], value, **TOLERANCE, msg=name)
