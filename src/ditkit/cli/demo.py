"""`ditkit demo`: the main job on an embedded default, Fashion-MNIST on a CPU in minutes."""

from __future__ import annotations

import argparse

EPILOG = """examples:
  ditkit demo                                    # Fashion-MNIST from Debian's dataset-fashion-mnist package
  ditkit demo --data /path/to/fashion-mnist --out runs/demo
  ditkit demo --steps 50 --per-class 10 --out runs/smoke   # a quick smoke run (far below the bar)

It trains a small class-conditional DiT on 28x28 pixels, draws samples of every class, and measures
them with the Fashion-MNIST classifier shipped with ditkit: the share of samples labelled as the class
they were conditioned on (the bar is 80%) and the Frechet distance in its feature space against the
test set. Outputs in --out: samples.npz, grid.png, loss_curve.png, report.md, report.json, checkpoints/.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="train, sample and measure a small DiT on Fashion-MNIST (CPU, minutes)",
        description="Train the demo recipe on Fashion-MNIST, sample every class, write a grid, the loss curve "
        "and a report, and print the classifier agreement, the Frechet distance and the wall time.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", help="folder of the Fashion-MNIST IDX files (default: Debian's location)")
    p.add_argument(
        "--out", default="runs/demo", help="output folder (default runs/demo; an earlier demo is replaced)"
    )
    p.add_argument("--steps", type=int, help="override the recipe's training steps")
    p.add_argument("--per-class", type=int, default=100, help="samples per class (default 100)")
    p.add_argument("--device", default="auto", help="auto (GPU if any), cpu or cuda")
    p.add_argument(
        "--started-at",
        type=float,
        help="UNIX time to count the wall time from (e.g. `date +%%s` when `make demo` began)",
    )
    p.add_argument("--strict", action="store_true", help="exit with status 1 when a bar is not met")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ditkit.demo.report import verdict
    from ditkit.demo.run import run_demo

    report = run_demo(
        args.data,
        args.out,
        steps=args.steps,
        per_class=args.per_class,
        device=args.device,
        progress=not args.no_progress,
        started_at=args.started_at,
    )
    return 1 if args.strict and not all(verdict(report).values()) else 0
