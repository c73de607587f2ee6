"""`ditkit sample`: images from a checkpoint, for looking at (grid + PNGs) or at FID scale (.npz)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from ditkit.choices import COMPILE_CHOICES, OBJECTIVES, PRECISION_MODES
from ditkit.cli.config_flags import add_model_overrides
from ditkit.cli.formatting import add_command, add_hidden_alias, plural, positive_int
from ditkit.cli.sampling_flags import add_sampling_arguments, given_sampling

if TYPE_CHECKING:
    from ditkit.generation.pipeline import DiTPipeline

SUMMARY = "generate images from a checkpoint (grid, PNGs, or an FID-scale .npz)"
DESCRIPTION = (
    "Generate class-conditional images from any checkpoint ditkit loads (ditkit, official "
    ".pt, diffusers). Classes are given by index or by name (ImageNet's 1000 names with their synonyms "
    "ship with ditkit). Writes a grid PNG, the single images and samples.json; with --num-samples, writes "
    "resumable shards and a samples.npz in the ADM evaluator's layout."
)
EPILOG = """examples:
  ditkit sample DiT-XL-2-256x256.pt --class "golden retriever" --class 88 --num-per-class 4
  ditkit sample runs/fmnist --class sneaker --sampler ddim --steps 50 --out samples/   # newest checkpoint
  ditkit sample ckpt --class "golden retreiver"            # a typo: the closest names are suggested
  ditkit sample --list-classes retriever                   # ImageNet classes whose names contain a word
  ditkit sample ckpt --class 88 --precision fp32 --no-cuda-graph   # exact float32 on a GPU, no graphs

  # flow models (SiT): trained with --objective flow they say so; SiT's released .pt files do not
  ditkit sample SiT-XL-2-256x256.pt --objective flow --class 207 --first-stage sd-vae-ft-mse
  ditkit sample runs/flow --class 3 --sampler heun --steps 25   # or dopri5 (the default), euler, sde-euler

  # FID-50K (ADM layout, resumable; any number of processes gives the same images):
  ditkit sample DiT-XL-2-256x256.pt --num-samples 50000 --guidance-scale 1.5 --guided-channels first3 --fid-out fid/
  torchrun --nproc-per-node 8 -m ditkit sample DiT-XL-2-256x256.pt --num-samples 50000 --compile blocks --fid-out fid/

sampling flags left out take the checkpoint's recorded settings (a run that records what it was evaluated
with, as the demo's, is sampled as its report shows), else the defaults above; --cfg-scale is another
spelling of --guidance-scale.

image i uses seed SEED + i (class-major: class k's j-th image is i = k * per_class + j); in FID
mode its label is fixed by --labels and SEED, so `--seed SEED+i --class LABEL --num-per-class 1`
redraws it alone.

speed: on CUDA the DiT runs in bfloat16 by default (--precision auto; the CPU stays exact float32) and
each batch shape is replayed as a CUDA graph; --compile blocks adds torch.compile for long runs.
"""


def add_class_arguments(p: argparse.ArgumentParser) -> None:
    """--class (repeatable) and --all-classes; shared with `ditkit walk`. See `chosen_classes`."""
    p.add_argument(
        "--class",
        dest="classes",
        action="append",
        metavar="C",
        help="class index or name, or the start of a word of one name (`boot`); repeatable",
    )
    p.add_argument("--all-classes", action="store_true", help="every class of the model, in label order")


def chosen_classes(args: argparse.Namespace, pipe: DiTPipeline) -> list[int | str] | None:
    """The classes `--class`/`--all-classes` ask for: None for an unconditional model.

    A class-conditional model needs one of the two (the same rule for `sample` and `walk`).
    """
    from ditkit.errors import UserError

    if pipe.num_classes == 0:
        if args.classes or args.all_classes:
            raise UserError("this model is unconditional: drop --class/--all-classes")
        return None
    if args.all_classes:
        if args.classes:
            raise UserError("give --class or --all-classes, not both")
        return list(range(pipe.num_classes))
    if not args.classes:
        raise UserError(
            f"this model is class-conditional ({plural(pipe.num_classes, 'class', 'classes')}): choose with "
            "--class NAME (repeatable) or --all-classes; `--list-classes` lists the names"
        )
    return list(args.classes)


def add_pipeline_arguments(p: argparse.ArgumentParser) -> None:
    """What `open_pipeline` reads but --device: --image-size, --first-stage, --weights, --num-classes, speed.

    Shared with `ditkit walk`.
    """
    p.add_argument(
        "--image-size", type=int, help="expected image size in pixels (checked against the checkpoint)"
    )
    p.add_argument(
        "--first-stage",
        help="decoder overriding the checkpoint's: sd-vae-ft-ema, sd-vae-ft-mse, vavae-f16d32, a folder, "
        "identity",
    )
    p.add_argument("--weights", default="ema", choices=["ema", "model"], help="weight set to use")
    p.add_argument(
        "--num-classes",
        type=int,
        help="classes of an official .pt without training arguments, when its label table has no "
        "null-class row (trained without label dropout); default: the last row is the null class",
    )
    add_model_overrides(p)
    p.add_argument(
        "--objective",
        choices=OBJECTIVES,
        help="what the checkpoint is, for files that do not say (SiT's released .pt files: flow); default: "
        "what the checkpoint records, else diffusion",
    )
    add_speed_arguments(p)


def add_speed_arguments(p: argparse.ArgumentParser) -> None:
    """--precision, --bf16, --compile and --no-cuda-graph."""
    p.add_argument(
        "--precision",
        default="auto",
        choices=PRECISION_MODES,
        help="DiT precision: auto = bf16 on CUDA with bf16 support, else exact fp32; tf32 needs CUDA",
    )
    p.add_argument(
        "--bf16",
        dest="precision",
        action="store_const",
        const="bf16",
        help="shorthand for --precision bf16 (bfloat16 autocast)",
    )
    p.add_argument(
        "--compile",
        default="none",
        choices=COMPILE_CHOICES,
        help="torch.compile the DiT's blocks or whole model; the compile time at the start only pays "
        "off over long runs such as --num-samples 50000",
    )
    p.add_argument(
        "--no-cuda-graph",
        dest="cuda_graph",
        action="store_false",
        help="call the DiT op by op instead of replaying a CUDA graph per batch shape (CUDA only)",
    )


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, "sample", run, SUMMARY, DESCRIPTION, EPILOG)
    p.add_argument(
        "checkpoint",
        nargs="?",
        help="a training run folder (its newest checkpoint), a checkpoint folder, a .safetensors or .pt file, "
        "or a diffusers folder",
    )
    add_class_arguments(p)
    p.add_argument("--num-per-class", type=positive_int, default=4, help="images per class in the grid")
    add_sampling_arguments(p)
    add_pipeline_arguments(p)
    p.add_argument(
        "--device", help="device (default: cuda when present, else cpu; cuda:LOCAL_RANK under torchrun)"
    )
    p.add_argument(
        "--batch-size", type=positive_int, help="images per forward pass (default: all / a whole shard)"
    )
    p.add_argument("--out", default="samples", help="output folder for the grid and PNGs")
    fid = p.add_argument_group("FID-scale sampling")
    fid.add_argument(
        "--num-samples",
        dest="num",
        type=int,
        help="number of samples (e.g. 50000): writes shards and samples.npz",
    )
    add_hidden_alias(p, "--num", "num", type=int)  # the old name, for one release
    fid.add_argument("--fid-out", help="folder of the shards and samples.npz (default: OUT/fid)")
    fid.add_argument(
        "--labels",
        default="uniform",
        choices=["uniform", "balanced"],
        help="uniform random labels (from the seed) or class-balanced (i mod K)",
    )
    fid.add_argument("--shard-size", type=positive_int, default=1000, help="samples per shard file")
    fid.add_argument(
        "--max-shards", type=positive_int, help="stop after computing this many shards (resume later)"
    )
    p.add_argument(
        "--list-classes",
        nargs="?",
        const="",
        metavar="QUERY",
        help="list the class names (the checkpoint's, else ImageNet's), optionally those containing QUERY",
    )


def run(args: argparse.Namespace) -> int:
    from ditkit.errors import UserError

    if args.list_classes is not None:
        return _list_classes(args)
    if not args.checkpoint:
        raise UserError("give a checkpoint (or --list-classes)")
    given = given_sampling(args)
    from ditkit.atomic import check_output_folder
    from ditkit.distributed import init_distributed, launched_by_torchrun, shutdown

    # before the model is loaded and the sampling done, not after
    if args.num is not None and args.fid_out:
        check_output_folder(args.fid_out, "--fid-out")
    else:
        check_output_folder(args.out)

    # Sampling only needs a barrier: gloo works beside CUDA and on CPU-only machines alike.
    ctx = init_distributed(args.device or "auto", backend="gloo")
    try:
        # Alone, an unset --device is left to the pipeline (it picks the checkpoint's best device).
        device = ctx.device if args.device or launched_by_torchrun() else None
        pipe = open_pipeline(args, device)
        return _fid(args, pipe, given) if args.num is not None else _grid(args, pipe, given)
    finally:
        shutdown(ctx)


def open_pipeline(args: argparse.Namespace, device: object) -> DiTPipeline:
    """The pipeline the `add_pipeline_arguments` flags describe, on `device`; prints its notes (rank 0)."""
    from pathlib import Path

    from ditkit.checkpoints.loader import newest_in_run
    from ditkit.distributed import rank
    from ditkit.errors import UserError
    from ditkit.generation.pipeline import DiTPipeline
    from ditkit.visual import IMAGE_CHANNELS

    newest = newest_in_run(Path(args.checkpoint))
    if newest is not None:  # a run folder: record the checkpoint actually used
        args.checkpoint = str(newest)
        if rank() == 0:
            print(f"note: using the run's newest checkpoint, {newest}")
    config = dict(args.model_overrides)  # --set KEY=VALUE
    if args.num_classes is not None:
        config["num_classes"] = args.num_classes
    pipe = DiTPipeline.from_pretrained(
        args.checkpoint,
        device=device,  # type: ignore[arg-type]  # a str or torch.device
        precision=args.precision,
        compile=args.compile,
        cuda_graph=args.cuda_graph,
        first_stage=args.first_stage,
        image_size=args.image_size,
        which=args.weights,
        config=config,
        objective=args.objective,
    )
    channels = pipe.first_stage.image_channels
    if channels not in IMAGE_CHANNELS:  # a latent model read with the identity first stage
        raise UserError(
            f"this model's {pipe.first_stage.kind} first stage gives {channels}-channel images, which no PNG "
            f"holds; name the first stage that decodes its latents with --first-stage"
        )
    if rank() == 0:
        for note in pipe.notes:
            print(f"note: {note}")
    return pipe


def _grid(args: argparse.Namespace, pipe: DiTPipeline, given: dict[str, Any]) -> int:
    from ditkit.generation.save import sample_to_folder

    saved = sample_to_folder(
        pipe,
        chosen_classes(args, pipe),
        args.out,
        pipe.settings(**given),
        per_class=args.num_per_class,
        batch_size=args.batch_size,
        progress=not args.no_progress,
        extra={"checkpoint": str(args.checkpoint), "precision": pipe.precision, "compile": pipe.compile},
    )
    images = plural(len(saved.images), "image")
    print(f"wrote {saved.grid}, {images} in {saved.images[0].parent}/ and {saved.record}")
    return 0


def _fid(args: argparse.Namespace, pipe: DiTPipeline, given: dict[str, Any]) -> int:
    from pathlib import Path

    from ditkit.distributed import rank
    from ditkit.generation.sharded import ShardedSettings, fid_sampling, generate_sharded

    classes = None
    if args.classes:  # else every class (--all-classes or not), drawn as --labels says
        classes = tuple(pipe.resolve_labels(args.classes))
    settings = ShardedSettings(
        num_samples=args.num,
        label_mode=args.labels,
        classes=classes,
        shard_size=args.shard_size,
        sampling=fid_sampling(pipe, **given),
    )
    out = Path(args.fid_out) if args.fid_out else Path(args.out) / "fid"
    result = generate_sharded(
        pipe,
        out,
        settings,
        batch_size=args.batch_size,
        max_shards=args.max_shards,
        progress=not args.no_progress,
    )
    if rank() != 0:
        return 0
    done = f"computed {plural(len(result.computed), 'shard')} here, {len(result.skipped)} already done"
    if result.packed is not None:
        print(f"{done}; wrote {result.packed} ({args.num} samples, ADM layout)")
    elif result.missing:
        print(
            f"{done}; {plural(len(result.missing), 'shard')} still missing in {out}: run the same command again "
            "to finish"
        )
    return 0


def _list_classes(args: argparse.Namespace) -> int:
    from ditkit.generation.class_names import ClassNames

    names = ClassNames.imagenet()
    if args.checkpoint:
        from ditkit.generation.loading import stored_class_names

        names = stored_class_names(args.checkpoint) or names
    labels = names.search(args.list_classes) if args.list_classes else range(len(names))
    for label in labels:
        print(f"{label:>5}  {', '.join(names.synonyms[label])}")
    return 0
