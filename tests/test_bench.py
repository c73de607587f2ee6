"""The benchmarks run end to end on the CPU and report what they claim (no timing thresholds)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ditkit.bench import correctness as cx
from ditkit.bench.compare import CompareConfig, compare_steps
from ditkit.bench.correctness import (
    BF16_GRAD_TOL,
    BF16_LOSS_TOL,
    BF16_SAMPLE_TOL,
    Check,
    perturb_zero_init_,
    sample_error,
    train_step_errors,
)
from ditkit.bench.official_step import OfficialStep, official_ema_update
from ditkit.bench.sample import SampleBenchConfig, bench_sample
from ditkit.bench.timing import time_calls
from ditkit.bench.train import TrainBenchConfig, bench_train, build_model
from ditkit.bench.trainer_step import BenchStep
from ditkit.cli.main import main
from ditkit.errors import UserError
from ditkit.training.ema import EMA

TINY = dict(model="DiT-T/2", input_size=8, num_classes=10, device="cpu")
ROOT = Path(__file__).resolve().parents[1]
# TINY as `ditkit bench train|check` options, with batches of 2.
TINY_FLAGS = "--model DiT-T/2 --input-size 8 --num-classes 10 --batch 2 --device cpu".split()


def positive(value):
    return isinstance(value, float) and math.isfinite(value) and value > 0


def test_bench_train_reports_positive_numbers():
    r = bench_train(
        TrainBenchConfig(**TINY, batch=4, precision="fp32", steps=2, warmup=1, recompute_blocks=-1)
    )
    for key in ("step_ms", "step_ms_min", "images_per_s", "tflops", "peak_tflops", "mfu", "peak_mem_gb"):
        assert positive(r[key]), key
    assert r["recompute_blocks"] == 2  # -1 means every block of DiT-T (depth 2)
    assert math.isclose(r["images_per_s"], 4 / (r["step_ms"] / 1e3))
    assert math.isclose(r["mfu"], r["tflops"] / r["peak_tflops"])
    assert 0.5 < r["loss"] < 5  # the hybrid loss of a fresh model on unit-variance data, about 1


def test_bench_sample_extrapolates_and_says_so():
    cfg = SampleBenchConfig(**TINY, batch=2, precision="bf16", steps=10, timed_steps=2, warmup=1)
    r = bench_sample(cfg)
    assert r["extrapolated"] and r["timed_steps"] == 2 and r["cuda_graph"] is False
    assert math.isclose(r["sample_s"], r["step_ms"] / 1e3 * 10)
    assert math.isclose(r["images_per_s"], 2 / r["sample_s"])
    assert positive(r["tflops"]) and positive(r["mfu"])
    with pytest.raises(UserError, match="timed steps"):
        bench_sample(SampleBenchConfig(**TINY, steps=10, timed_steps=11))


def test_compare_steps_interleaves_variants_against_the_official_step():
    cfg = CompareConfig(
        "DiT-T/2",
        8,
        4,
        10,
        depth=None,
        batch=4,
        steps=1,
        repeats=2,
        warmup=0,
        variants=("ditkit", "official-bf16"),
    )
    r = compare_steps(cfg)
    assert [row["variant"] for row in r["rows"]] == ["official", "ditkit", "official-bf16"]
    assert r["rows"][0]["speedup"] == 1.0 and r["rows"][2]["speedup_bf16"] == 1.0
    for row in r["rows"]:
        assert len(row["step_ms_repeats"]) == 2 and positive(row["step_ms"]) and positive(row["loss"])
    assert [row["precision"] for row in r["rows"]] == ["fp32", "fp32", "bf16"]
    assert r["rows"][1]["compile"] == "none"  # the trainer's defaults on the CPU
    with pytest.raises(UserError, match="unknown variant"):
        compare_steps(CompareConfig(variants=("fastest",)))


def test_cpu_compare_leaves_out_bf16_where_the_cpu_lacks_bf16_instructions(monkeypatch):
    from ditkit.bench import compare

    monkeypatch.setattr(compare, "cpu_bf16_instructions", lambda: [])
    assert compare.default_variants(torch.device("cpu")) == ("official", "ditkit")
    monkeypatch.setattr(compare, "cpu_bf16_instructions", lambda: ["amx_bf16"])
    assert compare.default_variants(torch.device("cpu")) == (
        "official",
        "official-bf16",
        "ditkit",
        "ditkit-bf16",
    )


def test_official_step_trains_and_keeps_its_ema_by_the_loop():
    model = build_model("DiT-T/2", 8, 10, torch.device("cpu")).train()
    x, y = torch.randn(2, 4, 8, 8), torch.tensor([1, 2])
    step = OfficialStep(model, "fp32")
    before = [p.detach().clone() for p in step.ema.parameters()]
    loss = step(x, y)
    assert loss.ndim == 0 and not loss.requires_grad and torch.isfinite(loss)
    # The EMA moved by (1 - 0.9999) of the way towards the updated weights.
    for b, e, p in zip(before, step.ema.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(e, 0.9999 * b + 0.0001 * p.detach())
    with pytest.raises(UserError, match="tf32 needs a CUDA device"):
        OfficialStep(model, "tf32")


def test_bench_step_is_the_trainers_step_with_its_draws():
    model = build_model("DiT-T/2", 8, 10, torch.device("cpu"))
    x, y = torch.randn(2, 4, 8, 8), torch.tensor([1, 2])
    step = BenchStep(model, "fp32", grad_clip=1.0)
    before = [e.clone() for e in step.step.ema.shadow]
    loss = step(x, y)
    assert loss.ndim == 0 and not loss.requires_grad and torch.isfinite(loss)
    assert step.grad_norm is not None and step.grad_norm > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, step.step.ema.shadow, strict=True))
    with pytest.raises(UserError, match="attention backend"):
        BenchStep(model, "fp32", attention="fastest")


def test_correctness_checks_on_a_tiny_model():
    model = perturb_zero_init_(build_model("DiT-T/2", 8, 10, torch.device("cpu")))
    errors = train_step_errors(model, "bf16", 4)
    assert 0 < errors["loss"] < BF16_LOSS_TOL and 0 < errors["grad"] < BF16_GRAD_TOL
    assert 0 < sample_error(model, "bf16", 2, 4, 4.0) < BF16_SAMPLE_TOL
    assert Check("x", 0.1, 0.2).passed and not Check("x", float("nan"), 1.0).passed


def test_trainer_ema_equals_the_official_loop_and_the_closed_form():
    model = build_model("DiT-T/2", 8, 10, torch.device("cpu"))
    ema = EMA(model, decay=0.9)
    official = build_model("DiT-T/2", 8, 10, torch.device("cpu"))
    official.load_state_dict(model.state_dict())
    start = [s.clone() for s in ema.shadow]
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g))
    ema.update(model)
    official_ema_update(official, model, 0.9)
    for fused, naive, s0, p in zip(ema.shadow, official.parameters(), start, model.parameters(), strict=True):
        torch.testing.assert_close(fused, naive.detach())
        torch.testing.assert_close(fused, 0.9 * s0 + 0.1 * p.detach())


def test_time_calls():
    times = time_calls(lambda: sum(range(1000)), 3, torch.device("cpu"))
    assert len(times) == 3 and all(t > 0 for t in times)
    with pytest.raises(UserError):
        time_calls(lambda: None, 0, torch.device("cpu"))


def test_cli_train_json_and_out_file(tmp_path, capsys):
    out = tmp_path / "r.json"
    argv = ["bench", "train", *TINY_FLAGS, "--steps", "1", "--warmup", "0", "--no-peak", "--json"]
    assert main([*argv, "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    assert printed["mfu"] is None and positive(printed["images_per_s"])


def test_cli_text_reports_and_errors(capsys):
    assert main(["bench", "peak", "--device", "cpu", "--precision", "fp32", "--size", "64"]) == 0
    assert "TFLOP/s" in capsys.readouterr().out
    argv = ["bench", "train", *TINY_FLAGS]
    assert main([*argv, "--steps", "1", "--warmup", "0", "--no-peak"]) == 0
    assert "images/s" in capsys.readouterr().out
    assert main([*argv, "--recompute-blocks", "some"]) == 2
    assert "--recompute-blocks" in capsys.readouterr().err
    assert main([*argv, "--precision", "tf32"]) == 2


def test_cli_check_reports_every_check(capsys):
    assert main(["bench", "check", *TINY_FLAGS, "--sample-steps", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    names = [c["name"] for c in result["checks"]]
    assert names[0] == "forward bf16 vs fp32" and any("DDPM" in n for n in names)
    assert result["passed"] and all(0 <= c["value"] <= c["tolerance"] for c in result["checks"])
    assert result["checks"][0]["value"] > 0  # bf16 really ran: its forward differs from fp32


def test_module_entry_point_help():
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    run = subprocess.run(
        [sys.executable, "-m", "ditkit", "bench", "--help"], capture_output=True, text=True, env=env
    )
    assert run.returncode == 0 and "cpu-compare" in run.stdout


def _gpu_script(tmp_path, *args):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, str(ROOT / "bench" / "gpu.py"), "--dry-run", "--batch", "2", "--timed-steps", "2"]
    run = subprocess.run(
        [*cmd, *args, "--out", str(tmp_path)], capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    return run, json.loads((tmp_path / "gpu_results.json").read_text())


@pytest.mark.slow
def test_gpu_script_dry_run(tmp_path):
    run, results = _gpu_script(tmp_path, "--budget", "300")
    train = results["train"]
    assert [(r["recipe"], r["precision"]) for r in train[:2]] == [("official", "fp32"), ("official", "bf16")]
    assert train[0]["status"] == "ok" and train[0]["x_official"] == 1.0  # the reference of the ratios
    rows = train + results["sample"]
    assert {row["status"] for row in rows} <= {"ok", "skipped: out of time"}
    # Under load some rows and checks may be skipped for time (listed, exit 0); every check that ran passed.
    assert all(c["passed"] for c in results["correctness"] if "error" not in c)
    assert all(c["error"] == "skipped: out of time" for c in results["correctness"] if "error" in c)
    skipped = sum(r["status"] != "ok" for r in rows) + sum("error" in c for c in results["correctness"])
    assert len(results["skipped"]) == skipped and ("skipped for time" in run.stdout) == bool(skipped)
    assert results["attention_kernels"] == {"bf16": ["flash (CPU)"], "fp32": ["flash (CPU)"]}
    assert "| check |" in (tmp_path / "gpu_results.md").read_text()


def test_gpu_script_lists_what_it_had_no_time_for(tmp_path):
    run, results = _gpu_script(tmp_path, "--budget", "0")
    assert all(r["status"] == "skipped: out of time" for r in results["train"] + results["sample"])
    assert results["skipped"] and "skipped for time" in run.stdout


def test_the_sync_counted_step_trains_and_needs_cuda_to_count():
    from ditkit.bench.syncs import count_host_syncs, trainer_step

    model = cx.perturb_zero_init_(build_model("DiT-T/2", 8, 10, torch.device("cpu")))
    before = [p.detach().clone() for p in model.parameters()]
    one_step, pending = trainer_step(model, batch=4)
    one_step()
    one_step()
    readout = pending.read(since=0.0)
    assert readout is not None and readout.steps == 2 and not readout.nonfinite
    assert math.isfinite(readout.values["loss"]) and readout.values["grad_norm"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    with pytest.raises(UserError, match="needs a CUDA device"):
        count_host_syncs(model, batch=2)
