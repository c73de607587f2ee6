"""DiT-XL/2 on one GPU in one 10-minute command: the official step and ditkit's, side by side.

Run from the repository root (ditkit need not be installed):

    PYTHONPATH=src python bench/gpu.py               # gpu_results.{json,md} to $OUT, else runs/bench_gpu
    PYTHONPATH=src python bench/gpu.py --budget 300  # a tighter time limit (seconds)
    PYTHONPATH=src python bench/gpu.py --dry-run     # the script's flow on the CPU: tiny model, aot_eager

In order; a row starts only when the time it is expected to need is left, and rows skipped for
time are listed at the end (the exit status stays 0; it is 1 only when a check ran and failed):

1. Headline. Training at batch 64: the official step as its code runs (`ditkit.bench.official_step`:
   eager, TF32, PyTorch's default AdamW, the per-parameter EMA loop), the same under bf16
   autocast, then the trainer's own step (`ditkit.training.step.TrainStep`) with compiled blocks
   in bf16 at batch 64 and at 256 (selective activation checkpointing: the 80 GB target), then
   guided 250-step DDPM sampling (compiled, CUDA-graphed bf16; timed over `--timed-steps` steps
   and reported per step x 250). Every training row gives its speed over both official rows.
2. The fp32 compiled-vs-eager training-step check (compiled blocks once gave wrong gradients on
   the CPU), then the other numerical checks (`ditkit.bench.correctness`) and the number of host
   synchronisations per trainer step (CUDA's sync debug mode).
3. More rows: eager ditkit steps, batch 256 without checkpointing, eager sampling; then the
   experiments of issue 11 (whole-model compile, max-autotune blocks, cuDNN attention).

Blocks compile with dynamic=False (one graph per batch size); each row reports the dynamo graphs
it compiled, and the header the attention kernel SDPA actually ran. The CUDA allocator uses
expandable segments, and inductor keeps its cache in runs/inductor_cache (both set before torch
is imported, unless the environment sets them).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(ROOT / "runs" / "inductor_cache"))

import argparse  # noqa: E402
import copy  # noqa: E402
import datetime  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import replace  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
from torch._dynamo.utils import counters  # noqa: E402

from ditkit.atomic import atomic_write_text  # noqa: E402
from ditkit.bench import correctness as cx  # noqa: E402
from ditkit.bench.report import environment, markdown_table  # noqa: E402
from ditkit.bench.sample import SampleBenchConfig, bench_sample  # noqa: E402
from ditkit.bench.syncs import count_host_syncs  # noqa: E402
from ditkit.bench.timing import matmul_peak_tflops  # noqa: E402
from ditkit.bench.train import TrainBenchConfig, bench_train, build_model, synthetic_batch  # noqa: E402
from ditkit.model.attention_kernel import sdpa_kernels_used  # noqa: E402
from ditkit.model.precision import autocast  # noqa: E402

MODEL = "DiT-XL/2"
# The dry run: a tiny model on the CPU, compiled by the tracing-only backend, and small matmul peaks (a
# CPU without bf16 instructions takes tens of seconds for one 1024^3 bf16 matmul).
DRY_RUN = {
    "model": "DiT-T/2", "input_size": 8, "num_classes": 10, "device": "cpu", "backend": "aot_eager",
    "peak_size": 256,
}  # fmt: skip
# Memory of the GPU the memory target refers to (an 80 GB H100), in GB as torch reports them.
TARGET_GPU_GB = 80.0
# The default budget: the whole command within 10 minutes, start-up and writing included.
DEFAULT_BUDGET_S = 540.0
SKIPPED = "skipped: out of time"
TRAIN_COLUMNS = [
    ("recipe", "recipe"), ("precision", "precision"), ("compile", "compile"), ("note", "note"),
    ("recompute_blocks", "ckpt blocks"), ("recompute_policy", "ckpt policy"), ("batch", "batch"),
    ("step_ms", "step ms"), ("images_per_s", "images/s"), ("x_official", "x official fp32/TF32"),
    ("x_official_bf16", "x official bf16"), ("mfu_bf16_peak", "MFU vs bf16 peak"),
    ("peak_mem_gb", "peak GB"), ("fits", f"fits {TARGET_GPU_GB:.0f} GB"), ("graphs", "graphs compiled"),
    ("warmup_s", "warm-up s"), ("status", "status"),
]  # fmt: skip
SAMPLE_COLUMNS = [
    ("precision", "precision"), ("compile", "compile"), ("cuda_graph", "CUDA graph"), ("batch", "batch"),
    ("step_ms", "step ms"), ("sample_s", "250-step chain s"), ("images_per_s", "images/s"), ("mfu", "MFU"),
    ("timing", "timing"), ("peak_mem_gb", "peak GB"), ("graphs", "graphs compiled"),
    ("warmup_s", "warm-up s"), ("status", "status"),
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


def graphs_compiled() -> int:
    """Dynamo graphs compiled so far in this process (a new batch size or a recompile adds one)."""
    return int(counters["stats"]["unique_graphs"])


def label(row: dict[str, Any]) -> str:
    """A row's short name: what it runs, its precision, compilation, batch and checkpointing."""
    train = "recompute_blocks" in row
    name = f"{'train ' + row['recipe'] if train else 'sample'} {row['precision']} compile={row['compile']}"
    name += f" batch={row['batch']}" + (f" ({row['note']})" if row.get("note") else "")
    if train and row["recompute_blocks"]:
        name += f" recompute_blocks={row['recompute_blocks']} ({row['recompute_policy']})"
    return name


class Runner:
    """Runs checks and rows in the order given while the budget allows; keeps what they return."""

    def __init__(self, guard: Guard, setup: argparse.Namespace, bf16_peak: float | None) -> None:
        self.guard, self.setup, self.bf16_peak = guard, setup, bf16_peak
        self.checks: list[dict[str, Any]] = []
        self.train: list[dict[str, Any]] = []
        self.sample: list[dict[str, Any]] = []
        self.model = cx.perturb_zero_init_(
            build_model(setup.model, setup.input_size, setup.num_classes, torch.device(setup.device))
        )
        self.plan = cx.check_plan(self.model, setup.batch, compile="blocks", backend=setup.backend)

    def check(self, planned: cx.PlannedCheck) -> None:
        if not self.guard.allows(planned.seconds):
            self.checks.append({"name": planned.name, "error": SKIPPED})
            return
        value, status = attempt(planned.run)
        if value is None:
            self.checks.append({"name": planned.name, "error": status})
            return
        for c in planned.evaluate(value):
            self.checks.append(c.as_dict())
            log(f"  {c.name}: {c.value:.2e} (tolerance {c.tolerance:.0e}) {'ok' if c.passed else 'FAIL'}")

    def row(self, cfg: TrainBenchConfig | SampleBenchConfig, need: float, note: str = "") -> None:
        is_train = isinstance(cfg, TrainBenchConfig)
        rows = self.train if is_train else self.sample
        base = {**vars(cfg), "note": note}
        if not self.guard.allows(need):
            log(f"  {label(base)}: skipped ({self.guard.left():.0f} s left, needs {need:.0f})")
            rows.append({**base, "status": SKIPPED})
            return
        log(f"  {label(base)} ({self.guard.left():.0f} s left)")
        before = graphs_compiled()
        result, status = attempt(lambda: bench_train(cfg) if is_train else bench_sample(cfg))  # type: ignore[arg-type]
        row = {**base, **(result or {}), "status": status, "graphs": graphs_compiled() - before}
        if is_train and not row["recompute_blocks"]:
            row["recompute_policy"] = "-"  # no block is checkpointed
        if result is not None:
            if is_train:
                row["fits"] = "yes" if result["peak_mem_gb"] <= TARGET_GPU_GB else "no"
                row["mfu_bf16_peak"] = result["tflops"] / self.bf16_peak if self.bf16_peak else None
            else:
                row["timing"] = f"per step x {cfg.steps}" if result["extrapolated"] else "whole chain"
            log(
                f"    {result['images_per_s']:.1f} images/s, {result['step_ms']:.1f} ms/step, "
                f"{result['peak_mem_gb']:.1f} GB, warm-up {result['warmup_s']:.0f} s, {row['graphs']} graphs"
            )
        rows.append(row)

    def host_syncs(self) -> None:
        """Synchronisations per trainer step (bf16, eager, batch 8), valid only if the counter sees
        the one deliberate read that follows the steps."""
        name = "trainer step: host synchronisations per step"
        if self.setup.device != "cuda":
            return
        if not self.guard.allows(20):
            self.checks.append({"name": name, "error": SKIPPED})
            return
        counts, status = attempt(lambda: count_host_syncs(copy.deepcopy(self.model).train(), batch=8))
        if counts is None or counts["read"] < 1:
            error = status if counts is None else "the sync counter missed the deliberate read"
            self.checks.append({"name": name, "error": error})
            return
        check = cx.Check(name, counts["step"], 0.0)
        log(f"  {name}: {check.value:g} (the read: {counts['read']:g}) {'ok' if check.passed else 'FAIL'}")
        self.checks.append(check.as_dict())


def attention_kernels(setup: argparse.Namespace, float_precision: str) -> dict[str, list[str]]:
    """The kernels SDPA ran in one eager forward of the table's model, batch and precisions."""
    device = torch.device(setup.device)
    model = build_model(setup.model, setup.input_size, setup.num_classes, device).train()
    x, y = synthetic_batch(model, setup.batch, device, 0)
    t = torch.zeros(setup.batch, dtype=torch.long, device=device)
    found = {}
    for precision in ("bf16", float_precision):
        with torch.no_grad(), autocast(precision, device):
            found[precision] = sdpa_kernels_used(lambda: model(x, t, y))
    return found


def run_all(guard: Guard, setup: argparse.Namespace, bf16_peak: float | None) -> Runner:
    """Everything after the peaks, in the module docstring's order."""
    b, timed = setup.batch, setup.timed_steps
    fp = "tf32" if setup.device == "cuda" else "fp32"
    common = dict(
        model=setup.model, input_size=setup.input_size, num_classes=setup.num_classes, device=setup.device,
        compile_backend=setup.backend, compile_dynamic=False,
    )  # fmt: skip
    train = TrainBenchConfig(**common, batch=b, precision=fp, steps=10, warmup=3)  # type: ignore[arg-type]
    official = replace(train, recipe="official")
    compiled = replace(train, precision="bf16", compile="blocks")
    large = replace(compiled, batch=256, steps=5, warmup=2, recompute_blocks=-1, recompute_policy="selective")
    sample = SampleBenchConfig(**common, batch=b, precision="bf16", compile="blocks", timed_steps=timed)  # type: ignore[arg-type]
    run = Runner(guard, setup, bf16_peak)
    log("headline:")
    run.row(official, 40, "official recipe")
    run.row(replace(official, precision="bf16"), 30, "official recipe + bf16 autocast")
    run.row(compiled, 150)
    run.row(large, 150)
    run.row(sample, 90)
    log("checks:")
    first, *others = run.plan
    run.check(first)  # the fp32 compiled-vs-eager gradient check
    for planned in others:
        run.check(planned)
    run.host_syncs()
    log("more rows:")
    run.row(replace(train, precision="bf16"), 30)
    run.row(train, 30)
    run.row(replace(large, recompute_blocks=0), 120)
    run.row(replace(sample, compile="none", cuda_graph=False, precision=fp), 40, "eager, no CUDA graph")
    run.row(replace(sample, compile="none"), 30)
    log("experiments:")
    if setup.device == "cuda":  # cuDNN attention is CUDA-only
        run.row(replace(compiled, attention="cudnn"), 60, "cuDNN attention")
    run.row(replace(compiled, compile="model"), 180, "whole-model compile")
    if setup.backend == "inductor":  # autotuning needs code generation (the dry run only traces)
        run.row(replace(compiled, compile_mode="max-autotune-no-cudagraphs"), 300, "max-autotune blocks")
    official_ips = {
        r["precision"]: r["images_per_s"]
        for r in run.train
        if r["recipe"] == "official" and r["status"] == "ok"
    }
    for r in run.train:
        if r["status"] == "ok":
            r["x_official"] = r["images_per_s"] / official_ips[fp] if fp in official_ips else None
            r["x_official_bf16"] = (
                r["images_per_s"] / official_ips["bf16"] if "bf16" in official_ips else None
            )
    return run


def write_outputs(out_dir: Path, results: dict[str, Any]) -> None:
    env = results["environment"]
    peaks = ", ".join(f"{k} {v:.3g}" for k, v in results["peaks"].items() if v)
    checks = "\n".join(
        f"| {c['name']} | {c['value']:.2e} | {c['tolerance']:.0e} | {'pass' if c['passed'] else 'FAIL'} |"
        if "error" not in c else f"| {c['name']} | - | - | {c['error']} |"
        for c in results["correctness"]
    )  # fmt: skip
    kernels = "; ".join(f"{p}: {', '.join(k) or '-'}" for p, k in results["attention_kernels"].items())
    md = "\n\n".join(
        [
            f"# {results['model']} on {env.get('gpu', results['device'])} ({results['date']})",
            f"torch {env['torch']}, CUDA {env['cuda']}; command `{results['command']}`; "
            f"measured matmul peaks (TFLOP/s): {peaks}; SDPA kernels (eager forward, batch "
            f"{results['batch']}): {kernels}; dynamo graphs compiled: {results['graphs_compiled']}; "
            f"total {results['elapsed_s']:.0f} s",
            "## Training, 256x256 (32x32x4 latents); x official = images/s over the official step's "
            "(TF32 on CUDA, fp32 on the CPU; and under bf16 autocast), measured in this run",
            markdown_table(results["train"], TRAIN_COLUMNS),
            "## Sampling, 250-step DDPM, guidance 4 ([cond; null] in one batch)",
            markdown_table(results["sample"], SAMPLE_COLUMNS),
            "## Correctness (relative L2 error against float32 eager)",
            "| check | error | tolerance | result |\n|---|---|---|---|\n" + checks,
            "Skipped for time: " + ("; ".join(results["skipped"]) or "none"),
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
    parser.add_argument(
        "--budget",
        type=float,
        default=DEFAULT_BUDGET_S,
        help=f"seconds for the run (default {DEFAULT_BUDGET_S:g})",
    )
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
    setup: dict[str, Any] = dict(
        model=MODEL, input_size=32, num_classes=1000, device="cuda", backend="inductor", peak_size=None
    )
    if args.dry_run:
        setup.update(DRY_RUN)
    elif not torch.cuda.is_available():
        print(
            "error: no CUDA device; this script measures a GPU (--dry-run runs it on the CPU)",
            file=sys.stderr,
        )
        return 2
    vars(args).update(setup)
    # One graph per batch size, grad mode and checkpoint policy: more than dynamo's default 8 entries.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 32)
    env = environment()
    log(f"{env}")
    fp = "tf32" if args.device == "cuda" else "fp32"
    peaks: dict[str, float | None] = {}
    for prec in ("bf16", fp):
        peaks[prec], status = attempt(lambda p=prec: matmul_peak_tflops(args.device, p, args.peak_size))  # type: ignore[misc]
        log(f"  matmul peak {prec}: {peaks[prec] or status} TFLOP/s")
    kernels, status = attempt(lambda: attention_kernels(args, fp))
    log(f"  SDPA kernels: {kernels or status}")
    run = run_all(guard, args, peaks.get("bf16"))
    skipped = [c["name"] for c in run.checks if c.get("error") == SKIPPED]
    skipped += [label(row) for row in run.train + run.sample if row["status"] == SKIPPED]
    results = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(
            ["PYTHONPATH=src python bench/gpu.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "model": args.model,
        "device": args.device,
        "batch": args.batch,
        "environment": env,
        "peaks": peaks,
        "attention_kernels": kernels or {},
        "graphs_compiled": graphs_compiled(),
        "train": run.train,
        "sample": run.sample,
        "correctness": run.checks,
        "skipped": skipped,
        "elapsed_s": time.monotonic() - guard.start,
    }
    write_outputs(Path(args.out), results)
    if skipped:
        log(f"skipped for time ({len(skipped)}): {'; '.join(skipped)}")
    failed = [
        c["name"] for c in run.checks if c.get("error", SKIPPED) != SKIPPED or not c.get("passed", True)
    ]
    if failed:
        log(f"correctness checks failed or could not run: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
