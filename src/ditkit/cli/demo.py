"""`ditkit demo`: the main job on an embedded default, Fashion-MNIST on a CPU in minutes."""

from __future__ import annotations

import argparse

from ditkit.choices import OBJECTIVES
from ditkit.cli.formatting import add_command, add_data_dir_flag, add_hidden_alias, positive_int

SUMMARY = "train, sample and measure a small DiT on Fashion-MNIST (CPU, minutes)"
DESCRIPTION = (
    "Train the demo recipe on Fashion-MNIST, sample every class, write a grid, the loss curve "
    "and a report, and print the classifier agreement, the Frechet distance and the wall time."
)
EPILOG = """examples:
  ditkit demo                                    # Fashion-MNIST from Debian's dataset-fashion-mnist package
  ditkit demo --data-dir /usr/share/datasets/fashion-mnist --out runs/demo
  ditkit demo --seed 1 --out runs/demo-seed1     # another training seed
  ditkit demo --steps 50 --num-per-class 10 --out runs/smoke   # a quick smoke run (far below the bar)
  ditkit demo --objective meanflow --out runs/demo-meanflow   # MeanFlow: samples in one jump

It trains a small class-conditional DiT on 28x28 pixels, draws samples of every class, and measures
them with the Fashion-MNIST classifier shipped with ditkit: the share of samples labelled as the class
they were conditioned on (the bar is 90%) and the Frechet distance in its feature space against the
test set. Outputs in --out: samples.npz, grid.png, loss_curve.png, report.md, report.json, checkpoints/.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, "demo", run, SUMMARY, DESCRIPTION, EPILOG)
    add_data_dir_flag(p, "--data")
    p.add_argument(
        "--out", default="runs/demo", help="output folder (default runs/demo; an earlier demo is replaced)"
    )
    p.add_argument("--steps", type=positive_int, help="override the recipe's training steps")
    p.add_argument(
        "--num-per-class", dest="per_class", type=positive_int, default=100, help="samples per class"
    )
    add_hidden_alias(p, "--per-class", "per_class", type=positive_int)  # the old name, for one release
    p.add_argument("--seed", type=int, help="training seed (default: the recipe's)")
    p.add_argument(
        "--objective",
        choices=OBJECTIVES,
        default="flow",
        help="the recipe: flow matching (the demo's), DiT's diffusion, or MeanFlow sampled in one jump",
    )
    p.add_argument("--device", default="auto", help="auto (GPU if any), cpu or cuda")
    p.add_argument(
        "--started-at",
        type=float,
        help=argparse.SUPPRESS,  # internal: UNIX time `make demo` began, to count its wall time from
    )
    p.add_argument("--strict", action="store_true", help="exit with status 1 when a bar is not met")


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from ditkit.demo.recipe import DEMO_RECIPES
    from ditkit.demo.report import verdict
    from ditkit.demo.run import run_demo

    recipe = DEMO_RECIPES[args.objective]
    report = run_demo(
        args.data_dir,
        args.out,
        recipe=recipe if args.seed is None else dataclasses.replace(recipe, seed=args.seed),
        steps=args.steps,
        per_class=args.per_class,
        device=args.device,
        progress=not args.no_progress,
        started_at=args.started_at,
    )
    return 1 if args.strict and not all(verdict(report).values()) else 0
