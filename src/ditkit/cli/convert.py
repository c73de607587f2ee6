"""`ditkit convert`: any DiT checkpoint to ditkit's format or to diffusers."""

from __future__ import annotations

import argparse

from ditkit.cli.config_flags import add_model_overrides
from ditkit.cli.formatting import add_command

SUMMARY = "convert a DiT checkpoint (official .pt, diffusers, ditkit) to ditkit or diffusers"
DESCRIPTION = (
    "Convert a DiT checkpoint between the official format, diffusers and ditkit's own "
    "(safetensors + config.json). The config is read from the file, or inferred from tensor shapes."
)
EPILOG = """examples:
  ditkit convert DiT-XL-2-256x256.pt dit-xl-256/                 # official release -> ditkit folder
  ditkit convert results/000-DiT-XL-2/checkpoints/0400000.pt xl/ # official training dict (EMA + raw kept)
  ditkit convert dit-xl-256/ dit-xl-256.safetensors --which ema  # one weight set in a single file
  ditkit convert dit-xl-256/ hf-transformer/ --to diffusers      # a DiTTransformer2DModel folder
  ditkit convert dit-xl-256/ hf-pipeline/ --to diffusers-pipeline --vae ./sd-vae-ft-ema
  ditkit convert hf-pipeline/ back/                              # a diffusers folder -> ditkit
  ditkit convert custom.pt out/ --num-heads 8 --input-size 16 32 # when shapes do not tell
  ditkit convert no-dropout.pt no-dropout/ --num-classes 1000    # a label table without the null row

Sources: a ditkit folder or .safetensors, an official .pt (plain state dict or train.py's
{model, ema, opt, args}), a diffusers DiTPipeline or DiTTransformer2DModel folder.
Official files are read with weights_only=True: they can never run code.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, "convert", run, SUMMARY, DESCRIPTION, EPILOG)
    p.add_argument("src", help="checkpoint to read (file or folder)")
    p.add_argument("dst", help="folder to write (or a .safetensors file with --to ditkit)")
    p.add_argument(
        "--to",
        default="ditkit",
        choices=["ditkit", "diffusers", "diffusers-pipeline"],
        help="output format",
    )
    p.add_argument(
        "--which",
        default="ema",
        choices=["ema", "model"],
        help="weights to export when the source has both (default ema; ditkit folders keep both)",
    )
    p.add_argument(
        "--vae",
        help="VAE for --to diffusers-pipeline: a diffusers VAE folder or weights file, sd-vae-ft-ema, "
        "sd-vae-ft-mse or a Hub id (default: the first stage the checkpoint records)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace DST if it exists (refused otherwise)")
    p.add_argument("--scheduler", default="ddim", choices=["ddim", "ddpm"], help="pipeline scheduler")
    size = p.add_mutually_exclusive_group()
    size.add_argument(
        "--input-size", type=int, nargs="+", metavar="N", help="model input (latent) size: N, or H W"
    )
    size.add_argument("--image-size", type=int, help="image size in pixels; the input is 1/8 of it (SD VAE)")
    p.add_argument("--num-heads", type=int, help="attention heads (official files do not record them)")
    add_model_overrides(p)
    p.add_argument(
        "--num-classes",
        type=int,
        help="classes of an official .pt without training arguments; N rows in its label table mean "
        "N classes without the null-class row (trained without label dropout); default: rows - 1",
    )


def run(args: argparse.Namespace) -> int:
    from ditkit.checkpoints.convert import convert_checkpoint, overrides_from_cli

    overrides = {
        **dict(args.model_overrides),
        **overrides_from_cli(args.input_size, args.image_size, args.num_heads, args.num_classes),
    }
    for line in convert_checkpoint(
        args.src,
        args.dst,
        to=args.to,
        which=args.which,
        config=overrides,
        vae=args.vae,
        scheduler=args.scheduler,
        overwrite=args.overwrite,
    ):
        print(line)
    return 0
