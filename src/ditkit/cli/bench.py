"""`ditkit bench train|sample|memory|cpu-compare|check|peak`: speed, MFU, memory and numerics of the fast path."""

from __future__ import annotations

import argparse

from ditkit.choices import (
    COMPARE_VARIANTS,
    COMPILE_CHOICES,
    DEFAULT_COMPARE_VARIANTS,
    PRECISIONS,
    RECIPES,
    RECOMPUTE_POLICIES,
    SDPA_BACKENDS,
)
from ditkit.cli.formatting import HelpFormatter

EPILOG = """examples:
  ditkit bench train --model DiT-XL/2 --batch 64 --precision bf16 --compile blocks
  ditkit bench train --model DiT-XL/2 --batch 256 --recompute-blocks all      # memory at batch 256
  ditkit bench train --model DiT-XL/2 --batch 256 --recompute-blocks all --recompute-policy selective
  ditkit bench memory --threads 1              # activations saved per image, none/full/selective
  ditkit bench sample --model DiT-XL/2 --batch 64 --timed-steps 25         # 250-step DDPM, CFG 4
  ditkit bench train --model DiT-XS/2 --num-classes 10 --batch 8 --device cpu
  ditkit bench train --model DiT-XL/2 --recipe official --precision tf32   # the official step
  ditkit bench cpu-compare --threads 1         # the trainer's step vs the official one (demo model)
  ditkit bench check --model DiT-S/2 --device cpu   # bf16 / compiled / sampling vs float32
  ditkit bench peak --precision bf16           # the matmul peak MFU is measured against
  python -m ditkit bench train --help          # the same commands

Images/s use the median step time. TFLOP/s count model FLOPs (a training image is 3 x the forward,
as `ditkit models` counts it x 2 FLOPs per multiply-accumulate); MFU divides them by a dense matmul
peak measured on this device in the same precision.
"""


def _preset(
    p: argparse.ArgumentParser, model: str = "DiT-XL/2", num_classes: int = 1000, input_size: int = 32
) -> None:
    """--model, --input-size and --num-classes: the preset every benchmark builds."""
    p.add_argument("--model", default=model, help=f"preset name (default {model}; see `ditkit models`)")
    p.add_argument("--input-size", type=int, default=input_size, help=f"input side (default {input_size})")
    p.add_argument(
        "--num-classes", type=int, default=num_classes, help=f"number of classes (default {num_classes})"
    )


def _output(p: argparse.ArgumentParser) -> None:
    """--threads, --json and --out, which every benchmark takes."""
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--out", default=None, help="also write the result as JSON to this file")


def _common(p: argparse.ArgumentParser, batch: int) -> None:
    _preset(p)
    p.add_argument("--batch", type=int, default=batch, help=f"batch size (default {batch})")
    p.add_argument(
        "--precision", choices=PRECISIONS, default=None,
        help="fp32, tf32 (CUDA) or bf16 autocast with float32 weights (default: bf16 on CUDA, fp32 on CPU)",
    )  # fmt: skip
    p.add_argument(
        "--compile", choices=COMPILE_CHOICES, default=None,
        help="torch.compile each block, the whole model, or nothing (default: blocks on CUDA, none on CPU)",
    )  # fmt: skip
    p.add_argument("--device", default="auto", help="cuda, cuda:1, cpu or auto (default)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic data and noise")
    p.add_argument("--no-peak", action="store_true", help="skip measuring the matmul peak (no MFU)")
    _output(p)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench",
        help="benchmark training and sampling speed (images/s, TFLOP/s, MFU, memory)",
        description="Benchmark DiT training steps and DDPM sampling on synthetic data.",
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    sub = p.add_subparsers(dest="bench_command", metavar="WHAT")
    sub.required = True
    fmt = argparse.RawDescriptionHelpFormatter

    t = sub.add_parser("train", help="time training steps", epilog=EPILOG, formatter_class=fmt)
    _common(t, batch=64)
    t.add_argument(
        "--recompute-blocks", default="0", metavar="N",
        help="blocks whose activations are recomputed in backward (activation checkpointing), "
        "a count or 'all' (default 0)",
    )  # fmt: skip
    t.add_argument(
        "--recompute-policy", choices=RECOMPUTE_POLICIES, default="full",
        help="full: recompute whole blocks; selective: keep matmul and attention outputs (default full)",
    )  # fmt: skip
    t.add_argument("--steps", type=int, default=10, help="timed steps (default 10)")
    t.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    t.add_argument(
        "--attention", default="auto", choices=SDPA_BACKENDS, help="pin the attention kernel (default auto)"
    )
    t.add_argument(
        "--recipe", default="ditkit", choices=RECIPES,
        help="whose step: the trainer's (default) or the official script's (eager; the reference)",
    )  # fmt: skip
    t.set_defaults(func=run)

    s = sub.add_parser("sample", help="time DDPM sampling with guidance", epilog=EPILOG, formatter_class=fmt)
    _common(s, batch=64)
    s.add_argument("--steps", type=int, default=250, help="DDPM steps of a chain (default 250)")
    s.add_argument(
        "--timed-steps", type=int, default=None,
        help="time this many steps and report per-step time x --steps (default: the whole chain)",
    )  # fmt: skip
    s.add_argument(
        "--guidance-scale",
        "--cfg-scale",
        type=float,
        default=4.0,
        help="guidance scale; 1 disables it (default 4)",
    )
    s.add_argument(
        "--cuda-graph", choices=["on", "off"], default="on", help="replay the forward as a CUDA graph"
    )
    s.add_argument("--warmup", type=int, default=2, help="untimed 2-step chains first (default 2)")
    s.set_defaults(func=run)

    m = sub.add_parser(
        "memory", help="count the activations saved for backward under each recompute policy",
        description="Count the bytes of activations a training forward keeps for backward (unique "
        "storages, on any device), per image, with no checkpointing and with every block checkpointed "
        "under the full and selective policies, and project them to a batch. Activations only: not a "
        "GPU memory measurement.",
        epilog=EPILOG, formatter_class=fmt,
    )  # fmt: skip
    _preset(m)
    m.add_argument("--precision", choices=["fp32", "bf16"], default=None, help="default: bf16 then fp32")
    m.add_argument(
        "--policies", default="none,full,selective", help="comma-separated (default none,full,selective)"
    )
    m.add_argument(
        "--batches", default="1,2",
        help="two batch sizes counted, to split per-image from fixed bytes (default 1,2)",
    )  # fmt: skip
    m.add_argument("--project", type=int, default=256, help="batch size to project to (default 256)")
    m.add_argument("--device", default="cpu", help="device to count on (default cpu)")
    m.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    _output(m)
    m.set_defaults(func=run)

    c = sub.add_parser(
        "cpu-compare", help="the trainer's step vs the official recipe's, interleaved (demo's model)",
        description="Time the trainer's training step and the official DiT step (eager, float32, "
        "PyTorch's default AdamW, the per-parameter EMA loop, device draws) in turns, on the demo's "
        "model and batch by default, and print each step's speed relative to the official one.",
        epilog=EPILOG, formatter_class=fmt,
    )  # fmt: skip
    _preset(c, model="DiT-XS/4", num_classes=10, input_size=28)
    c.add_argument("--in-channels", type=int, default=1, help="image channels (default 1)")
    c.add_argument("--depth", type=int, default=4, help="transformer blocks (default 4; 0: the preset's)")
    c.add_argument("--batch", type=int, default=32, help="batch size (default 32)")
    c.add_argument("--steps", type=int, default=5, help="timed steps per repeat (default 5)")
    c.add_argument("--repeats", type=int, default=5, help="rounds over the variants (default 5)")
    c.add_argument("--warmup", type=int, default=2, help="untimed steps per variant (default 2)")
    c.add_argument(
        "--variants", default=None,
        help=f"comma-separated, of {', '.join(COMPARE_VARIANTS)} (default {','.join(DEFAULT_COMPARE_VARIANTS)}, "
        "without the bf16 ones on a CPU without bf16 instructions); the official float32 step always runs",
    )  # fmt: skip
    c.add_argument("--device", default="cpu", help="device (default cpu)")
    _output(c)
    c.set_defaults(func=run)

    h = sub.add_parser(
        "check", help="numerical checks: bf16 / compiled / sampling against float32 eager",
        epilog=EPILOG, formatter_class=fmt,
    )  # fmt: skip
    _preset(h, model="DiT-S/2")
    h.add_argument(
        "--batch", type=int, default=4, help="batch of the compiled and sampling checks (default 4)"
    )
    h.add_argument("--compile", choices=COMPILE_CHOICES, default="none", help="default none")
    h.add_argument("--backend", default="inductor", help="torch.compile backend (default inductor)")
    h.add_argument(
        "--sample-steps", type=int, default=10, help="DDPM steps of the sampling check (default 10)"
    )
    h.add_argument("--device", default="auto", help="cuda, cpu or auto (default)")
    _output(h)
    h.set_defaults(func=run)

    k = sub.add_parser(
        "peak", help="measure the dense matmul peak (TFLOP/s)", epilog=EPILOG, formatter_class=fmt
    )
    k.add_argument("--precision", choices=PRECISIONS, default=None, help="default: all that apply")
    k.add_argument("--size", type=int, default=None, help="matrix side (default 8192 on CUDA, 1024 on CPU)")
    k.add_argument("--device", default="auto", help="cuda, cpu or auto (default)")
    _output(k)
    k.set_defaults(func=run)


def _recompute_blocks(value: str) -> int:
    from ditkit.errors import UserError

    if value == "all":
        return -1
    if not value.isdigit():
        raise UserError(f"--recompute-blocks takes a block count or 'all', got {value!r}")
    return int(value)


def _ints(flag: str, value: str) -> list[int]:
    from ditkit.errors import UserError

    parts = [v.strip() for v in value.split(",") if v.strip()]
    if not parts or not all(p.isdigit() for p in parts):
        raise UserError(f"{flag} takes comma-separated whole numbers, got {value!r}")
    return [int(p) for p in parts]


def run(args: argparse.Namespace) -> int:
    import json

    import torch

    from ditkit.atomic import atomic_write_text
    from ditkit.bench import report

    if args.threads:
        torch.set_num_threads(args.threads)
    what = args.bench_command
    if what == "check":
        from ditkit.bench.correctness import run_checks

        result = run_checks(
            model=args.model, input_size=args.input_size, num_classes=args.num_classes, batch=args.batch,
            compile=args.compile, backend=args.backend, sample_steps=args.sample_steps, device=args.device,
        )  # fmt: skip
    elif what == "peak":
        result = report.peak_table(args.device, args.precision, args.size)
    elif what == "memory":
        from ditkit.bench.activations import activation_memory, format_activation_table

        result = activation_memory(
            model=args.model, input_size=args.input_size, num_classes=args.num_classes,
            precisions=[args.precision] if args.precision else ["bf16", "fp32"],
            policies=[p.strip() for p in args.policies.split(",") if p.strip()],
            batches=_ints("--batches", args.batches), project=args.project, device=args.device, seed=args.seed,
        )  # fmt: skip
    elif what == "cpu-compare":
        from ditkit.bench.compare import CompareConfig, compare_steps

        variants = (
            None if args.variants is None else tuple(v.strip() for v in args.variants.split(",") if v.strip())
        )
        result = compare_steps(
            CompareConfig(
                model=args.model, input_size=args.input_size, in_channels=args.in_channels,
                num_classes=args.num_classes, depth=args.depth or None, batch=args.batch,
                steps=args.steps, repeats=args.repeats, warmup=args.warmup, variants=variants,
                device=args.device,
            )
        )  # fmt: skip
    else:
        from ditkit.distributed import pick_device
        from ditkit.model.compilation import default_compile
        from ditkit.model.precision import default_precision

        device = pick_device(args.device, local_rank=None)
        common = dict(
            model=args.model, input_size=args.input_size, num_classes=args.num_classes, batch=args.batch,
            precision=args.precision or default_precision(device),
            compile=args.compile or default_compile(device),
            device=str(device), seed=args.seed, measure_peak=not args.no_peak, warmup=args.warmup,
        )  # fmt: skip
        if what == "train":
            from ditkit.bench.train import TrainBenchConfig, bench_train

            result = bench_train(
                TrainBenchConfig(
                    **common, recompute_blocks=_recompute_blocks(args.recompute_blocks),
                    recompute_policy=args.recompute_policy, steps=args.steps,
                    attention=args.attention, recipe=args.recipe,
                )
            )  # fmt: skip
        else:
            from ditkit.bench.sample import SampleBenchConfig, bench_sample

            result = bench_sample(
                SampleBenchConfig(
                    **common, cuda_graph=args.cuda_graph == "on", steps=args.steps,
                    timed_steps=args.timed_steps, guidance_scale=args.guidance_scale,
                )
            )  # fmt: skip
    text = json.dumps(result, indent=2)
    if args.out:
        atomic_write_text(args.out, text + "\n")
    if what == "memory":
        print(text if args.json else format_activation_table(result))
        return 0
    print(text if args.json else report.format_result(what, result))
    return 1 if what == "check" and not result["passed"] else 0
