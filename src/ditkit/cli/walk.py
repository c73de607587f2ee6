"""`ditkit walk`: the paper's latent walks (noise slerp, class-embedding interpolation) as grids and GIFs."""

from __future__ import annotations

import argparse

from ditkit.cli.formatting import add_command, plural, positive_int
from ditkit.cli.sample import add_class_arguments, add_pipeline_arguments, chosen_classes, open_pipeline
from ditkit.cli.sampling_flags import add_sampling_arguments, given_sampling

SUMMARY = "latent walks: slerp between noises, or interpolate class embeddings (grids and GIFs)"
DESCRIPTION = (
    "Latent walks as in the DiT paper: spherical interpolation between the initial noises "
    "of several seeds sampled deterministically (DDIM, or the ODE of flow models) (--mode noise), or linear interpolation between "
    "class embeddings with the noise fixed (--mode class). Writes grids, strips and animated GIFs."
)
EPILOG = """examples:
  # slerp through the noises of seeds 0, 1, 2 (deterministic DDIM), one row per class:
  ditkit walk DiT-XL-2-256x256.pt --mode noise --class "golden retriever" --class 88 --seed 0 --seed 1 --seed 2
  # noise fixed, class embedding moved from one class to the next, one row per seed:
  ditkit walk DiT-XL-2-256x256.pt --mode class --class "golden retriever" --class "tennis ball" --seed 0 --seed 1
  ditkit walk ckpt --mode noise --class 3 --seed 0 --seed 1 --frames 16 --loop --gif-ms 80
  ditkit walk ckpt --mode class --class 1 --class 7 --precision fp32   # exact float32 on a GPU too
  ditkit walk runs/flow --mode noise --class 3 --seed 0 --seed 1   # a flow model: the deterministic ODE

sampler: the checkpoint's recorded one when deterministic (as `ditkit sample` draws the same noise), else
ddim with eta 0, or dopri5 for flow models; ddpm and sde-* only for class walks.

writes OUT/<mode>_walk_grid.png (rows = walks, columns = frames) and, per walk, a strip
OUT/<mode>_walk_<i>.png and an animated OUT/<mode>_walk_<i>.gif.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, "walk", run, SUMMARY, DESCRIPTION, EPILOG)
    p.add_argument("checkpoint", help="checkpoint file or folder")
    p.add_argument("--mode", required=True, choices=["noise", "class"], help="what to walk through")
    add_class_arguments(p)
    p.add_argument(
        "--seed",
        dest="seeds",
        action="append",
        type=int,
        metavar="S",
        help="seed (repeatable; default 0 1 2 / 0)",
    )
    p.add_argument("--frames", type=positive_int, default=8, help="frames per segment, both ends included")
    p.add_argument("--loop", action="store_true", help="walk back from the last point to the first")
    p.add_argument("--bounce", action="store_true", help="GIFs play forward then backward")
    p.add_argument("--gif-ms", type=positive_int, default=125, help="GIF frame duration in milliseconds")
    add_sampling_arguments(p, skip=("seed",))  # --seed here is the repeatable path
    add_pipeline_arguments(p)
    p.add_argument("--device", help="device (default: cuda when present, else cpu)")
    p.add_argument("--batch-size", type=positive_int, help="frames per forward pass (default: all of a walk)")
    p.add_argument("--out", default="walks", help="output folder")


def run(args: argparse.Namespace) -> int:
    from ditkit.atomic import check_output_folder
    from ditkit.generation.walks import make_walks, save_walks

    check_output_folder(args.out)  # before the walk is sampled, not after
    given = given_sampling(args)
    pipe = open_pipeline(args, args.device)
    seeds = args.seeds or ([0, 1, 2] if args.mode == "noise" else [0])
    walks = make_walks(
        pipe,
        args.mode,
        chosen_classes(args, pipe),
        seeds,
        args.frames,
        loop=args.loop,
        sampler=given.pop("sampler", None),  # named or not: see `walk_settings`
        num_steps=given.pop("steps", None),
        settings=pipe.sampling.replace(**given),
        batch_size=args.batch_size,
        progress=not args.no_progress,
    )
    paths = save_walks(walks, args.out, f"{args.mode}_walk", args.gif_ms, args.bounce)
    for walk in walks:
        print(f"walk: {walk.title} ({plural(len(walk.images), 'frame')})")
    print(
        f"wrote {paths[0]}, {plural(len(walks), 'strip')} and {plural(len(walks), 'GIF')} in {paths[0].parent}/"
    )
    return 0
