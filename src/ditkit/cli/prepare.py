"""`ditkit prepare`: encode a dataset once into a latent cache, so training never runs the VAE encoder."""

from __future__ import annotations

import argparse

from ditkit.cli.formatting import add_command, add_data_dir_flag, plural, positive_int

SUMMARY = "encode a dataset into a latent cache"
DESCRIPTION = (
    "Encode a dataset once with the first stage (SD VAE, VA-VAE or identity) into a sharded, "
    "memory-mapped latent cache that `ditkit train` reads instead of images."
)
EPILOG = """examples:
  ditkit prepare fashion-mnist --out runs/fmnist-32                  # pixels (identity), 32x32, 1 channel
  ditkit prepare fashion-mnist --data-dir ~/fmnist --split test --out runs/fmnist-test
  ditkit prepare fashion-mnist --first-stage sd-vae-ft-ema --out runs/fmnist-vae   # 4x4x4 latents
  ditkit prepare ~/imagenet/train --image-size 256 --first-stage sd-vae-ft-mse --out runs/in256 --device cuda
  ditkit prepare photos/ --first-stage ~/vae/ --out runs/photos      # a local diffusers VAE folder
  ditkit prepare photos/ --first-stage vavae-f16d32 --out runs/photos-vavae   # LightningDiT's VA-VAE

Both flips of every image are encoded and the posterior's mean and std stored (float16 by default),
in shards of --shard-size images with a manifest (cache.json). Rerun the same command after an
interruption to resume; unreadable images are skipped and listed in cache.json.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, "prepare", run, SUMMARY, DESCRIPTION, EPILOG)
    p.add_argument("source", help='"fashion-mnist", or an image folder with one sub-folder per class')
    p.add_argument("--out", required=True, help="cache folder (created; resumed if unfinished)")
    p.add_argument(
        "--first-stage",
        default=None,
        help="identity, sd-vae-ft-ema, sd-vae-ft-mse, a hub repo id, a diffusers VAE folder or a "
        ".safetensors/.ckpt file; vavae-f16d32 or a VA-VAE folder (checkpoint + latents_stats.pt) "
        "(default: identity for fashion-mnist, sd-vae-ft-ema otherwise)",
    )
    add_data_dir_flag(p, "--data")
    p.add_argument("--split", default="train", choices=["train", "test"], help="Fashion-MNIST split")
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="image side in pixels (default 32 Fashion-MNIST, 256 else)",
    )
    p.add_argument(
        "--channels",
        type=int,
        default=None,
        choices=[1, 3],
        help="image channels (default: what the first stage takes)",
    )
    p.add_argument("--batch-size", type=positive_int, default=64, help="images per encoder call")
    p.add_argument("--shard-size", type=positive_int, default=4096, help="images per shard file")
    p.add_argument("--dtype", default="float16", choices=["float16", "float32"], help="stored precision")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1...")
    p.add_argument("--workers", type=int, default=0, help="image-decoding processes")
    p.add_argument("--limit", type=positive_int, default=None, help="encode only the first N images")
    p.add_argument("--overwrite", action="store_true", help="replace a cache made with other settings")


def run(args: argparse.Namespace) -> int:
    from ditkit.data.cache_writer import prepare_dataset

    summary = prepare_dataset(
        args.source,
        args.out,
        first_stage=args.first_stage,
        data_dir=args.data_dir,
        split=args.split,
        image_size=args.image_size,
        channels=args.channels,
        device=args.device,
        batch_size=args.batch_size,
        shard_size=args.shard_size,
        dtype=args.dtype,
        workers=args.workers,
        limit=args.limit,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    work = (
        f"encoded {summary.encoded_now} now in {summary.seconds:.1f} s ({summary.images_per_second:.0f} images/s)"
        if summary.encoded_now
        else "already complete, nothing encoded"
    )
    print(
        f"cache {summary.out}: {plural(summary.num_images, 'image')} in {plural(summary.num_shards, 'shard')}, "
        f"{summary.num_skipped} unreadable skipped; {work}"
    )
    for entry in summary.skipped[:10]:
        print(f"  skipped {entry['item']}: {entry['reason']}")
    if len(summary.skipped) > 10:
        print(f"  ... and {len(summary.skipped) - 10} more (listed in {summary.out}/cache.json)")
    return 0
