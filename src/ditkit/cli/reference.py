"""`ditkit reference`: build an ADM-layout reference batch from an image folder or Fashion-MNIST."""

from __future__ import annotations

import argparse

from ditkit.cli.formatting import add_command, add_data_dir_flag, add_hidden_alias, positive_int

SUMMARY = "build an ADM-layout reference batch (images + Inception statistics)"
DESCRIPTION = (
    "Compute the Inception statistics (FID pool_3 and sFID spatial) of a set of real "
    "images and store them with a random subset of the images in ADM's reference-batch layout."
)
EPILOG = """examples:
  ditkit reference --fashion-mnist --image-size 32 --out refs/fmnist32.npz
      statistics of the 60,000 training images, black-padded to 32x32 as a 32x32 model trains on them
  ditkit reference --images /data/imagenet/train --image-size 256 --out refs/imagenet256.npz
      ADM/DiT centre crop to 256x256, statistics over every image, 10,000 stored in arr_0
  ditkit reference --images my_real_images/ --out ref.npz --inception pt_inception-2015-12-05-6726825d.pth

The result holds arr_0 (uint8 (N, H, W, 3), a seeded random subset of at most --num-samples images)
and mu, sigma (pool_3, 2048-d) and mu_s, sigma_s (spatial, 2023-d) over all images, as ADM's
reference batches do; use it as REFERENCE.npz of `ditkit evaluate`.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, "reference", run, SUMMARY, DESCRIPTION, EPILOG)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", metavar="FOLDER", help="folder of images (searched recursively)")
    src.add_argument("--fashion-mnist", action="store_true", help="Fashion-MNIST (see --data-dir)")
    add_data_dir_flag(p)
    p.add_argument("--out", required=True, metavar="REF.npz", help="the reference batch to write")
    p.add_argument("--split", default="train", choices=["train", "test"], help="Fashion-MNIST split")
    p.add_argument(
        "--image-size",
        type=int,
        metavar="N",
        help="the images' size: folder images are centre-cropped to N x N (ADM's crop; default: as they "
        "are); Fashion-MNIST is the size a model trained on (28; padded up to 32, bicubic-resized beyond)",
    )
    add_hidden_alias(p, "--resolution", "image_size", type=int)  # the old name, for one release
    p.add_argument(
        "--num-samples",
        dest="num_images",
        type=positive_int,
        default=10_000,
        help="images stored in arr_0 (default 10,000)",
    )
    add_hidden_alias(p, "--num-images", "num_images", type=positive_int)
    p.add_argument("--seed", type=int, default=0, help="seed of the stored subset")
    p.add_argument(
        "--inception", metavar="PATH", help="local pt_inception-2015-12-05-6726825d.pth (no download)"
    )
    p.add_argument("--batch-size", type=positive_int, default=64, help="images per Inception batch")
    p.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda if available)")


def run(args: argparse.Namespace) -> int:
    from ditkit.data.fashion_mnist_dataset import FASHION_MNIST_SIZE
    from ditkit.distributed import pick_device
    from ditkit.errors import UserError
    from ditkit.evaluation.inception_weights import load_inception
    from ditkit.evaluation.reference import FashionMNISTImages, FolderImages, build_reference

    if args.batch_size < 1 or args.num_images < 1:
        raise UserError("--batch-size and --num-samples must be positive")
    if args.images is not None:
        source: FolderImages | FashionMNISTImages = FolderImages(args.images, args.image_size)
    else:
        size = FASHION_MNIST_SIZE if args.image_size is None else args.image_size
        source = FashionMNISTImages(args.data_dir, args.split, size)
    model = load_inception(args.inception, device=str(pick_device(args.device or "auto", local_rank=None)))
    info = build_reference(
        source, args.out, model, args.num_images, args.seed, args.batch_size, progress=not args.no_progress
    )
    print(
        f"wrote {args.out}: statistics of {info['num_images']} images, {info['num_stored']} stored in arr_0"
    )
    return 0
