"""`ditkit study`: rerun the paper's experiments (or a grid of your own) and draw its figures."""

from __future__ import annotations

import argparse

from ditkit.choices import STUDIES

SUMMARY = f"run the paper's studies ({', '.join(STUDIES)}) or a spec file; tables and plots"
DESCRIPTION = (
    "Train every run of a study with the normal trainer, evaluate each at fixed fractions of "
    "training with the same sampler, seeds and samples, and write results.json, results.md and the "
    "paper's plots (metric vs steps, Gflops, training compute, guidance scale)."
)
EPILOG = """examples:
  # model size x patch size on Fashion-MNIST (CPU, see docs/studies/ for the measured time)
  ditkit study scaling --out runs/study-scaling
  ditkit study blocks --data-dir /usr/share/datasets/fashion-mnist --out runs/study-blocks
  ditkit study guidance --out runs/study-guidance
  ditkit study techniques --plan     # LightningDiT's pieces vs the demo's recipe, at equal training time
  # a quick smoke run of a preset: fewer steps, samples and seeds
  ditkit study guidance --out runs/smoke --steps 40 --num-samples 20 --seeds 1
  # the paper's grid on ImageNet-256 latents (GPUs; one run per GPU side by side)
  ditkit prepare /data/imagenet/train --out runs/cache
  ditkit study scaling --scale gpu --data runs/cache --out runs/study-imagenet \\
      --reference VIRTUAL_imagenet256_labeled.npz --inception pt_inception-2015-12-05-6726825d.pth
  # your own grid: a TOML or JSON spec (base TrainConfig fields, axes, eval settings)
  ditkit study docs/studies/example.toml --out runs/study-depth
  ditkit study scaling --plan        # list the runs, their parameters and Gflops, and stop

Rerunning the same command continues a stopped study: finished trainings and evaluations are kept,
a half-trained run resumes from its last checkpoint. Outputs in --out: runs/<run>/ (training runs,
one per configuration and seed, samples_<step>.npz, eval_<step>.json), results.json, results.md and
PNG plots.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from ditkit.cli.config_flags import key_value
    from ditkit.cli.formatting import add_command, add_data_dir_flag, add_hidden_alias

    p = add_command(subparsers, "study", run, SUMMARY, DESCRIPTION, EPILOG)
    p.add_argument("study", metavar="NAME|SPEC", help=f"{', '.join(STUDIES)}, or a .toml/.json spec")
    p.add_argument(
        "--data",
        help="training data of every run, as `ditkit train --data`: fashion-mnist (the CPU presets), "
        "an image folder or a latent cache from `ditkit prepare` (the GPU presets)",
    )
    add_data_dir_flag(p)
    p.add_argument("--out", default=None, help="study folder (default runs/study-<name>)")
    p.add_argument(
        "--scale", default="cpu", choices=["cpu", "gpu"], help="built-in presets: cpu (default) or gpu"
    )
    p.add_argument("--steps", type=int, help="override the training steps of every run (e.g. a smoke run)")
    p.add_argument(
        "--num-samples", dest="samples", type=int, help="override the number of samples per evaluation"
    )
    add_hidden_alias(p, "--samples", "samples", type=int)  # the old name, for one release
    p.add_argument(
        "--seeds",
        type=int,
        help="training seeds of every configuration (default: the spec's `seeds`; the CPU presets 3): "
        "tables and plots show their mean and range, and an ordering holds only beyond the range",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        type=key_value,
        default=[],
        metavar="KEY=VALUE",
        help="override a base training option of every run (a TrainConfig or model field), e.g. --set lr=5e-4",
    )
    p.add_argument("--device", default="auto", help="auto (GPU if any), cpu or cuda")
    p.add_argument(
        "--jobs",
        type=int,
        help="runs side by side (default: one per GPU; on a CPU one per core, at most one per run)",
    )
    p.add_argument(
        "--reference", metavar="REF.npz", help="ADM reference batch: adds FID, sFID, IS, precision, recall"
    )
    p.add_argument(
        "--inception", metavar="PATH", help="local Inception weights for those metrics (no download)"
    )
    p.add_argument("--plan", action="store_true", help="list the runs (parameters, Gflops) and stop")
    p.add_argument(
        "--only",
        type=lambda text: tuple(n.strip() for n in text.split(",") if n.strip()),
        default=(),
        metavar="NAMES",
        help="train and evaluate only these runs or configurations (comma-separated, as --plan names "
        "them; a configuration means all its seeds); the results cover every run finished so far",
    )


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ditkit.errors import UserError
    from ditkit.study import StudyOptions, load_study, plan_table, run_study

    if args.jobs is not None and args.jobs < 1:
        raise UserError(f"--jobs must be positive, got {args.jobs}")
    spec = load_study(
        args.study,
        scale=args.scale,
        data=args.data,
        data_dir=args.data_dir,
        steps=args.steps,
        samples=args.samples,
        seeds=args.seeds,
        overrides=dict(args.overrides),
    )
    if args.plan:
        print(plan_table(spec))
        return 0
    if args.reference is not None and not Path(args.reference).is_file():
        raise UserError(f"no such reference batch: {args.reference}")
    options = StudyOptions(
        out=args.out or f"runs/study-{spec.name}",
        device=args.device,
        jobs=args.jobs,
        reference=args.reference,
        inception=args.inception,
        progress=not args.no_progress,
        only=args.only,
    )
    run_study(spec, options)
    return 0
