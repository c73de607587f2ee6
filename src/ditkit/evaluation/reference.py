"""Build a reference batch in ADM's layout from an image folder or Fashion-MNIST.

ADM's reference batches (e.g. `VIRTUAL_imagenet256_labeled.npz`) hold 10,000 real images in `arr_0`
and the Inception statistics of the whole training set in `mu`, `sigma` (pool_3) and `mu_s`,
`sigma_s` (spatial). `build_reference` makes the same: statistics over every image, streamed in
batches, and a seeded random subset of 10,000 images (all of them if fewer) for precision/recall.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ditkit.errors import UserError
from ditkit.evaluation.adm_metrics import DEFAULT_BATCH_SIZE, compute_activations
from ditkit.evaluation.inception import FIDInceptionV3
from ditkit.evaluation.npz_io import to_rgb, write_reference
from ditkit.evaluation.precision_recall import PR_REFERENCE_SIZE

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(path) as f:
            return f.size
    except Exception as err:  # Pillow raises many types on corrupt input
        raise UserError(f"cannot read image {path}: {err}") from err


class FolderImages:
    """Images of a folder tree (sorted paths) as uint8 RGB (H, W, 3).

    With `resolution`, each image gets ADM's centre crop (as DiT's training data does); without it,
    all images must already share one size.
    """

    def __init__(self, root: str | os.PathLike[str], resolution: int | None = None) -> None:
        self.root, self.resolution = Path(root), resolution
        if not self.root.is_dir():
            raise UserError(f"image folder {self.root} does not exist")
        self.paths = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.paths:
            raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {self.root}")
        if resolution is None:  # check the headers up front rather than fail hours in
            first = _image_size(self.paths[0])
            for path in self.paths:
                if (size := _image_size(path)) != first:
                    raise UserError(
                        f"{path} is {size[0]}x{size[1]} but {self.paths[0]} is {first[0]}x{first[1]}; "
                        "pass --image-size N to centre-crop every image to N x N"
                    )

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """uint8 (B, H, W, 3) images at `indices`."""
        from PIL import Image

        from ditkit.data.transforms import UnreadableImageError, read_image, to_rgb

        out = []
        for i in indices:
            path = self.paths[i]
            try:
                if self.resolution is not None:
                    out.append(read_image(path, self.resolution))
                else:
                    with Image.open(path) as f:
                        out.append(np.asarray(to_rgb(f)))
            except (UnreadableImageError, OSError) as err:
                raise UserError(f"cannot read image {path}: {err}") from err
        return np.stack(out)


class ArrayImages:
    """uint8 images held in memory: (N, H, W), (N, H, W, 1) or (N, H, W, 3)."""

    def __init__(self, images: np.ndarray) -> None:
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim not in (3, 4):
            raise UserError(f"images must be uint8 (N, H, W[, C]), got {images.dtype} {images.shape}")
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def read(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """uint8 (B, H, W, 3) images at `indices`."""
        return np.ascontiguousarray(to_rgb(self.images[np.asarray(indices)]))


class FashionMNISTImages(ArrayImages):
    """Fashion-MNIST fitted to `image_size` as the training data is (black padding up to 32, else
    bicubic resize: `ditkit.data.fashion_mnist_dataset.fit_fashion_image`), grey as RGB."""

    def __init__(
        self, root: str | os.PathLike[str] | None, split: str = "train", image_size: int = 28
    ) -> None:
        from ditkit.data.fashion_mnist import load_fashion_mnist

        images, _ = load_fashion_mnist(root, split=split)
        super().__init__(images)
        self.image_size = image_size

    def read(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        from ditkit.data.fashion_mnist_dataset import fit_fashion_image

        fitted = np.stack([fit_fashion_image(self.images[i], self.image_size) for i in indices])
        return np.ascontiguousarray(to_rgb(fitted))


def build_reference(
    source: FolderImages | ArrayImages,
    out: str | os.PathLike[str],
    model: FIDInceptionV3,
    num_images: int = PR_REFERENCE_SIZE,
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = True,
) -> dict[str, int]:
    """Write an ADM-layout reference batch: statistics of all images, `num_images` of them as `arr_0`.

    Args:
        source: the real images.
        out: the `.npz` to write (atomically).
        model: the FID Inception.
        num_images: how many images to store in `arr_0` (a seeded random subset, in source order).
        seed: seed of that subset.
        batch_size: images per forward pass.
        progress: show a progress bar.

    Returns:
        {"num_images": all images, "num_stored": images in arr_0}.
    """
    n = len(source)
    if n < 2:
        raise UserError(f"need at least 2 images for reference statistics, got {n}")
    keep = np.sort(np.random.default_rng(seed).choice(n, size=min(num_images, n), replace=False))
    stored: list[np.ndarray] = []

    def batches() -> Iterator[np.ndarray]:
        for start in range(0, n, batch_size):
            idx = np.arange(start, min(start + batch_size, n))
            batch = source.read(idx)  # uint8 (B, H, W, 3)
            stored.append(batch[np.isin(idx, keep)])
            yield batch

    acts = compute_activations(model, batches(), n, keep_pool=0, progress=progress, desc="reference")
    (mu, sigma), (mu_s, sigma_s) = acts.pool_stats.mean_cov(), acts.spatial_stats.mean_cov()
    write_reference(out, np.concatenate(stored), {"mu": mu, "sigma": sigma, "mu_s": mu_s, "sigma_s": sigma_s})
    return {"num_images": n, "num_stored": len(keep)}
