"""DiT-XL/2 on one GPU in one call, in under 5 minutes: correctness first, then the throughput table.

Run from the repository root (ditkit need not be installed):

    PYTHONPATH=src python bench/gpu.py               # gpu_results.{json,md} to $OUT, else runs/bench_gpu
    PYTHONPATH=src python bench/gpu.py --budget 200  # a tighter time limit
    PYTHONPATH=src python bench/gpu.py --dry-run     # the script's flow on the CPU: tiny model, aot_eager

1. Device, torch, and the measured dense matmul peaks (bf16, tf32, fp32): the MFU denominators.
2. Correctness of the fast path against float32 eager, on DiT-XL/2 with its zero-initialised layers
   perturbed (else the output is exactly 0): bf16 and tf32 forward, one bf16 training step (loss,
   gradient, loss after the AdamW step), compiled vs eager, and a short guided DDPM chain sampled
   with the compiled, CUDA-graphed bf16 denoiser. Tolerances: `ditkit.bench.correctness`. Then the
   trainer's step is run under CUDA's sync debug mode: it must make no host synchronisation.
3. Throughput: training at batch 64 (tf32 eager = the official code's default mode, bf16 eager,
   bf16 compiled; the trainer's per-sample draws, and once device-side draws), memory at batch
   256 with selective and full activation checkpointing (`ditkit.model.checkpointing`) and without,
   and 250-step DDPM sampling with guidance 4 at
   batch 64 (timed over `--timed-steps` steps and reported as per step x 250: every step costs
   the same).

Rows run in priority order; a row is skipped (not started) when the time left is below what it
is expected to need, and a row that fails (e.g. out of memory) is recorded with its error.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import functools
import gc
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ditkit.atomic import atomic_write_text
from ditkit.bench import correctness as cx
from ditkit.bench.report import environment, markdown_table
from ditkit.bench.sample import SampleBenchConfig, bench_sample
from ditkit.bench.syncs import count_host_syncs
from ditkit.bench.timing import matmul_peak_tflops
from ditkit.bench.train import TrainBenchConfig, bench_train, build_model

MODEL = "DiT-XL/2"
# The dry run: a tiny model on the CPU, compiled by the tracing-only backend. Its compiled training rows
# run in fp32: the backward of a compiled bf16-autocast training step fails on the CPU with torch 2.13
# ("expected scalar type BFloat16 but found Float", seen 2026-11-26), a CPU-only path a GPU run never takes.
DRY_RUN = {"model": "DiT-T/2", "input_size": 8, "num_classes": 10, "device": "cpu", "backend": "aot_eager"}
# Memory of the GPU the memory target refers to (an 80 GB H100), in GB as torch reports them.
TARGET_GPU_GB = 80.0
# Official DiT on an H200 (issue 7): training images/s in TF32 and in bf16 autocast; sampling images/s.
OFFICIAL_TRAIN_TF32, OFFICIAL_TRAIN_BF16, OFFICIAL_SAMPLE_TF32 = 181.0, 329.0, 1.35
TRAIN_COLUMNS = [
    ("precision", "precision"), ("compile", "compile"), ("draws", "draws"), ("checkpointing", "ckpt blocks"),
    ("checkpoint_policy", "ckpt policy"), ("batch", "batch"),
    ("step_ms", "step ms"), ("images_per_s", "images/s"), ("tflops", "TFLOP/s"), ("mfu", "MFU"),
    ("mfu_bf16_peak", "MFU vs bf16 peak"), ("peak_mem_gb", "peak GB"),
    ("fits", f"fits {TARGET_GPU_GB:.0f} GB"),
    ("warmup_s", "warm-up s"), ("status", "status"),
]  # fmt: skip
SAMPLE_COLUMNS = [
    ("precision", "precision"), ("compile", "compile"), ("cuda_graph", "CUDA graph"), ("batch", "batch"),
    ("step_ms", "step ms"), ("sample_s", "250-step chain s"), ("images_per_s", "images/s"), ("mfu", "MFU"),
    ("timing", "timing"), ("peak_mem_gb", "peak GB"), ("warmup_s", "warm-up s"), ("status", "status"),
]  # fmt: skip


def log(msg: str) -> None:
    print(msg, flush=True)


class Guard:
    """Wall-clock budget: `allows(need)` is False once fewer than `need` seconds remain."""

    def __init__(self, budget_s: float) -> None:
        self.start = time.monotonic()
        self.budget_s = budget_s

    def left(self) -> float:
        return self.budget_s - (time.monotonic() - self.start)

    def allows(self, need: float) -> bool:
        return self.left() >= need


def attempt(fn: Callable[[], Any]) -> tuple[Any, str]:
    """Run fn; return (result, "ok") or (None, one-line error), freeing GPU memory either way."""
    try:
        return fn(), "ok"
    except Exception as err:  # a failed row must not stop the others
        traceback.print_exc(limit=3)
        kind = "out of memory" if isinstance(err, torch.cuda.OutOfMemoryError) else type(err).__name__
        return None, f"{kind}: {str(err).splitlines()[0][:160] if str(err) else ''}"
    finally:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def correctness(guard: Guard, setup: argparse.Namespace) -> list[dict[str, Any]]:
    """`ditkit.bench.correctness.check_plan` at the table's batch size (so that the compilations are
    the ones the table reuses), as rows {name, value, tolerance, passed} or {name, error}."""
    device = torch.device(setup.device)
    model = cx.perturb_zero_init_(build_model(setup.model, setup.input_size, setup.num_classes, device))
    rows: list[dict[str, Any]] = []
    for check in cx.check_plan(model, setup.batch, compile="blocks", backend=setup.backend):
        if not guard.allows(check.seconds):
            rows.append({"name": check.name, "error": "skipped: out of time"})
            continue
        value, status = attempt(check.run)
        if value is None:
            rows.append({"name": check.name, "error": status})
            continue
        for c in check.evaluate(value):
            rows.append(c.as_dict())
            log(f"  {c.name}: {c.value:.2e} (tolerance {c.tolerance:.0e}) {'ok' if c.passed else 'FAIL'}")
    if device.type == "cuda":
        rows.append(host_sync_row(guard, model))
    return rows


def host_sync_row(guard: Guard, model: torch.nn.Module) -> dict[str, Any]:
    """Synchronisations per trainer step (bf16, eager, batch 8) counted by CUDA's sync debug mode;
    valid only if the counter sees the one deliberate read that follows the steps."""
    name = "trainer step: host synchronisations per step"
    if not guard.allows(20):
        return {"name": name, "error": "skipped: out of time"}
    counts, status = attempt(lambda: count_host_syncs(copy.deepcopy(model).train(), batch=8))
    if counts is None:
        return {"name": name, "error": status}
    if counts["read"] < 1:
        return {"name": name, "error": "the sync counter missed the deliberate read; count not valid"}
    check = cx.Check(name, counts["step"], 0.0)
    log(f"  {name}: {check.value:g} (the read: {counts['read']:g}) {'ok' if check.passed else 'FAIL'}")
    return check.as_dict()


def _run_row(cfg: TrainBenchConfig | SampleBenchConfig, bf16_peak: float | None) -> dict[str, Any]:
    """One benchmark row: the config, the result (or the error) and the derived columns."""
    if isinstance(cfg, TrainBenchConfig):
        result, status = attempt(lambda: bench_train(cfg))
    else:
        result, status = attempt(lambda: bench_sample(cfg))
    row = {**vars(cfg), **(result or {}), "status": status}
    if isinstance(cfg, TrainBenchConfig) and not row["checkpointing"]:
        row["checkpoint_policy"] = "-"  # no block is checkpointed
    if result is None:
        return row
    if isinstance(cfg, TrainBenchConfig):
        row["fits"] = "yes" if result["peak_mem_gb"] <= TARGET_GPU_GB else "no"
        row["mfu_bf16_peak"] = result["tflops"] / bf16_peak if bf16_peak else None
    else:
        row["timing"] = f"per step x {cfg.steps}" if result["extrapolated"] else "whole chain"
    log(
        f"    {result['images_per_s']:.1f} images/s, {result['step_ms']:.1f} ms/step, "
        f"{result['peak_mem_gb']:.1f} GB, warm-up {result['warmup_s']:.0f} s"
    )
    return row


def throughput(guard: Guard, setup: argparse.Namespace, bf16_peak: float | None) -> tuple[list, list]:
    """The training and sampling rows, in priority order: headline rows, baselines, then memory."""
    b, timed = setup.batch, setup.timed_steps
    common = dict(
        model=setup.model, input_size=setup.input_size, num_classes=setup.num_classes, device=setup.device,
        compile_backend=setup.backend,
    )  # fmt: skip

    def train(
        batch: int,
        precision: str,
        compile: str,
        ckpt: int = 0,
        steps: int = 10,
        draws: str = "per-sample",
        policy: str = "full",
    ) -> TrainBenchConfig:
        if setup.dry_run and compile != "none":
            precision = "fp32"
        return TrainBenchConfig(
            **common, batch=batch, precision=precision, compile=compile, checkpointing=ckpt,
            checkpoint_policy=policy, steps=steps, warmup=min(3, steps), draws=draws,
        )  # fmt: skip

    def sample(precision: str, compile: str, graph: bool) -> SampleBenchConfig:
        return SampleBenchConfig(
            **common, batch=b, precision=precision, compile=compile, cuda_graph=graph, timed_steps=timed
        )

    plan: list[tuple[TrainBenchConfig | SampleBenchConfig, float]] = [  # (config, seconds it needs left)
        (train(b, "bf16", "blocks"), 60),
        (sample("bf16", "blocks", True), 45),
        (train(b, "tf32", "none"), 30),
        (train(b, "bf16", "none"), 25),
        (train(b, "bf16", "blocks", draws="device"), 25),  # the cost of the trainer's host-side draws
        (sample("tf32", "none", False), 30),
        (sample("bf16", "none", True), 25),
        # Memory at batch 256: eager (no recompilation for the new batch size), then compiled. Selective
        # checkpointing (`ditkit.model.checkpointing`) first: the fallback.
        (train(256, "bf16", "none", ckpt=-1, steps=3, policy="selective"), 30),
        (train(256, "bf16", "none", ckpt=-1, steps=3), 30),
        (train(256, "bf16", "none", ckpt=14, steps=3), 30),
        (train(256, "bf16", "none", ckpt=0, steps=3), 30),
        (train(256, "bf16", "blocks", ckpt=0, steps=3), 120),
    ]
    train_rows: list[dict[str, Any]] = []
    sample_rows: list[dict[str, Any]] = []
    if setup.device == "cpu":  # TF32 is a CUDA mode
        plan = [(cfg, need) for cfg, need in plan if cfg.precision != "tf32"]
    for cfg, need in plan:
        is_train = isinstance(cfg, TrainBenchConfig)
        rows = train_rows if is_train else sample_rows
        label = f"{'train' if is_train else 'sample'} {cfg.precision} compile={cfg.compile} batch={cfg.batch}"
        if isinstance(cfg, TrainBenchConfig):
            policy = f" ({cfg.checkpoint_policy})" if cfg.checkpointing else ""
            label += f" checkpointing={cfg.checkpointing}{policy} draws={cfg.draws}"
        if not guard.allows(need):
            log(f"  {label}: skipped ({guard.left():.0f} s left, needs {need:.0f})")
            rows.append({**vars(cfg), "status": "skipped: out of time"})
            continue
        log(f"  {label} ({guard.left():.0f} s left)")
        rows.append(_run_row(cfg, bf16_peak))
    return train_rows, sample_rows


def write_outputs(out_dir: Path, results: dict[str, Any]) -> None:
    env = results["environment"]
    peaks = ", ".join(f"{k} {v:.3g}" for k, v in results["peaks"].items() if v)
    checks = "\n".join(
        f"| {c['name']} | {c['value']:.2e} | {c['tolerance']:.0e} | {'pass' if c['passed'] else 'FAIL'} |"
        if "error" not in c else f"| {c['name']} | - | - | {c['error']} |"
        for c in results["correctness"]
    )  # fmt: skip
    md = "\n\n".join(
        [
            f"# {results['model']} on {env.get('gpu', results['device'])} ({results['date']})",
            f"torch {env['torch']}, CUDA {env['cuda']}; command `{results['command']}`; "
            f"measured matmul peaks (TFLOP/s): {peaks}; total {results['elapsed_s']:.0f} s",
            "## Correctness (relative L2 error against float32 eager)",
            "| check | error | tolerance | result |\n|---|---|---|---|\n" + checks,
            f"## Training, 256x256 (32x32x4 latents); official on an H200: "
            f"{OFFICIAL_TRAIN_TF32:g} images/s TF32, "
            f"{OFFICIAL_TRAIN_BF16:g} bf16",
            markdown_table(results["train"], TRAIN_COLUMNS),
            f"## Sampling, 250-step DDPM, guidance 4 ([cond; null] in one batch); official on an H200: "
            f"{OFFICIAL_SAMPLE_TF32:g} images/s TF32",
            markdown_table(results["sample"], SAMPLE_COLUMNS),
        ]
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "gpu_results.json", json.dumps(results, indent=2, default=str) + "\n")
    atomic_write_text(out_dir / "gpu_results.md", md + "\n")
    log("\n" + md + f"\n\nwritten to {out_dir}/gpu_results.{{json,md}}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--budget", type=float, default=270, help="seconds for the whole run (default 270)")
    parser.add_argument("--batch", type=int, default=64, help="training and sampling batch (default 64)")
    parser.add_argument(
        "--timed-steps", type=int, default=25, help="sampling steps timed, of 250 (default 25)"
    )
    parser.add_argument("--out", default=os.environ.get("OUT") or "runs/bench_gpu", help="output folder")
    parser.add_argument(
        "--dry-run", action="store_true", help="tiny model on the CPU: checks the script only"
    )
    args = parser.parse_args(argv)
    guard = Guard(args.budget)
    setup = dict(model=MODEL, input_size=32, num_classes=1000, device="cuda", backend="inductor")
    if args.dry_run:
        setup.update(DRY_RUN)
    elif not torch.cuda.is_available():
        print(
            "error: no CUDA device; this script measures a GPU (--dry-run runs it on the CPU)",
            file=sys.stderr,
        )
        return 2
    vars(args).update(setup)
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 16)
    env = environment()
    log(f"{env}")
    peaks: dict[str, float | None] = {}
    for prec in ("bf16", "tf32", "fp32") if args.device == "cuda" else ("bf16", "fp32"):
        peaks[prec], status = attempt(functools.partial(matmul_peak_tflops, args.device, prec))
        log(f"  matmul peak {prec}: {peaks[prec] or status} TFLOP/s")
    log("correctness:")
    checks = correctness(guard, args)
    log("throughput:")
    train_rows, sample_rows = throughput(guard, args, peaks.get("bf16"))
    results = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(
            ["PYTHONPATH=src python bench/gpu.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "model": args.model,
        "device": args.device,
        "environment": env,
        "peaks": peaks,
        "correctness": checks,
        "train": train_rows,
        "sample": sample_rows,
        "elapsed_s": time.monotonic() - guard.start,
    }
    write_outputs(Path(args.out), results)
    failed = [c["name"] for c in checks if "error" in c or not c["passed"]]
    if failed:
        log(f"correctness checks failed or did not run: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
