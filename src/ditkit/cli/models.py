"""`ditkit models`: the presets with their parameter counts and Gflops."""

from __future__ import annotations

import argparse

from ditkit.choices import BLOCK_DESIGNS, MLPS, MODEL_FAMILIES, NORMS
from ditkit.cli.formatting import add_command

SUMMARY = "list model presets with parameters and Gflops"
DESCRIPTION = (
    "List DiT presets with their parameter count and Gflops (multiply-accumulates of one "
    "forward pass, attention included, as the paper counts them), in closed form (checked against torch's "
    "FLOP counter in the tests)."
)
EPILOG = """examples:
  ditkit models                      # the paper's 12 configs at 256x256 (32x32x4 latents)
  ditkit models --image-size 512     # at 512x512 (64x64 latents)
  ditkit models --all --json         # every preset, as JSON
  ditkit models --block in-context   # the cost of another conditioning design
  ditkit models --family lightningdit                # LightningDiT's presets on VA-VAE f16d32 latents
  ditkit models --family lightningdit --no-rope --qk-norm --mlp mlp   # ... with other block options
"""
# First-stage downsampling and latent channels of each family's default latents: DiT's SD-VAE (f8, 4
# channels) and LightningDiT's VA-VAE (f16, 32 channels).
FAMILY_LATENTS = {"dit": (8, 4), "lightningdit": (16, 32)}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, "models", run, SUMMARY, DESCRIPTION, EPILOG)
    p.add_argument("--image-size", type=int, default=256, help="image size in pixels")
    p.add_argument(
        "--family", default="dit", choices=MODEL_FAMILIES, help="whose presets: DiT's or LightningDiT's"
    )
    p.add_argument(
        "--downsample",
        type=int,
        default=None,
        help="first-stage downsampling factor (default 8, the SD VAE; 16, VA-VAE, for lightningdit)",
    )
    p.add_argument(
        "--in-channels", type=int, default=None, help="latent channels (default 4; 32 for lightningdit)"
    )
    p.add_argument("--num-classes", type=int, default=1000, help="number of classes")
    p.add_argument(
        "--block",
        default="adaln-zero",
        choices=BLOCK_DESIGNS,
        help="conditioning design",
    )
    p.add_argument("--norm", choices=NORMS, help="blocks' norm (default: the family's)")
    p.add_argument("--mlp", choices=MLPS, help="blocks' feed-forward (default: the family's)")
    for flag, what in (
        ("rope", "2-D rotary embeddings"),
        ("qk-norm", "norm of queries and keys"),
        ("adaln-shift", "adaLN shift"),
    ):
        p.add_argument(
            f"--{flag}",
            action=argparse.BooleanOptionalAction,
            default=None,
            help=f"{what} (default: the family's)",
        )
    p.add_argument("--all", action="store_true", help="include the small presets (T, XS)")
    p.add_argument(
        "--json", action="store_true", help="print a JSON list of {name, params, gflops} (null: does not fit)"
    )


def run(args: argparse.Namespace) -> int:
    import json

    from ditkit.errors import UserError
    from ditkit.model.cost import model_table

    downsample, in_channels = FAMILY_LATENTS[args.family]
    downsample = args.downsample or downsample
    in_channels = args.in_channels or in_channels
    options = {
        k: getattr(args, k)
        for k in ("norm", "mlp", "rope", "qk_norm", "adaln_shift")
        if getattr(args, k) is not None
    }
    if args.image_size % downsample:
        raise UserError(
            f"image size {args.image_size} is not a multiple of the downsampling {downsample}; for a "
            "pixel-space model (no VAE, e.g. Fashion-MNIST) pass --downsample 1 --in-channels 1 (or 3)"
        )
    rows = model_table(
        input_size=args.image_size // downsample,
        in_channels=in_channels,
        num_classes=args.num_classes,
        block=args.block,
        include_small=args.all,
        family=args.family,
        options=options,
    )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    latent = args.image_size // downsample
    family = "LightningDiT" if args.family == "lightningdit" else "DiT"
    print(f"{family} presets at {args.image_size}x{args.image_size} ({latent}x{latent}x{in_channels} inputs)")
    width = max(12, *(len(r["name"]) + 1 for r in rows))
    print(
        f"{'model':<{width}}{'depth':>6}{'hidden':>8}{'heads':>7}{'patch':>7}{'tokens':>8}{'params':>11}{'Gflops':>10}"
    )
    for r in rows:
        fits = r["params"] is not None
        print(
            f"{r['name']:<{width}}{r['depth']:>6}{r['hidden_size']:>8}{r['num_heads']:>7}{r['patch_size']:>7}"
            + (
                f"{r['tokens']:>8}{r['params'] / 1e6:>10.1f}M{r['gflops']:>10.2f}"
                if fits
                else f"{'n/a':>8}{'n/a':>11}{'n/a':>10}"
            )
        )
    if any(r["params"] is None for r in rows):
        print(f"n/a: the patch does not divide the {latent}x{latent} input")
    return 0
