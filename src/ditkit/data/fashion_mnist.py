"""Fashion-MNIST read straight from its IDX files (Xiao et al. 2017), no download.

The default location is Debian's `dataset-fashion-mnist` package; any folder holding the four
IDX files (gzipped or not) works.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from ditkit.errors import UserError

# Where Debian's dataset-fashion-mnist package puts the files.
DEFAULT_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
# The class names, in label order, from the dataset's documentation.
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_PREFIX = {"train": "train", "test": "t10k"}
_IDX_DTYPE = {0x08: np.uint8}


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one IDX file (optionally gzipped) into an array of its stored shape."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as err:
        raise UserError(f"cannot read IDX file {path}: {err}; re-download or reinstall the dataset") from err
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPE:
        raise UserError(f"{path} is not an unsigned-byte IDX file; check the dataset folder")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        raise UserError(f"{path} is truncated ({len(data)} of {expected} bytes); reinstall the dataset")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _find(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    raise UserError(
        f"no {stem}[.gz] in {root}; install Debian's dataset-fashion-mnist package "
        "(apt-get install dataset-fashion-mnist) or pass the folder holding the IDX files"
    )


def load_fashion_mnist(
    root: str | os.PathLike[str] | None = None, split: str = "train"
) -> tuple[np.ndarray, np.ndarray]:
    """Load one split of Fashion-MNIST.

    Args:
        root: folder with the IDX files; defaults to Debian's package location.
        split: "train" (60,000 images) or "test" (10,000 images).

    Returns:
        images: uint8 array (N, 28, 28); labels: int64 array (N,) in 0..9.
    """
    if split not in _PREFIX:
        raise UserError(f"unknown Fashion-MNIST split {split!r}; use 'train' or 'test'")
    root = Path(root) if root is not None else DEFAULT_FASHION_MNIST_DIR
    if not root.is_dir():
        raise UserError(
            f"Fashion-MNIST folder {root} does not exist; run `apt-get install dataset-fashion-mnist` "
            "or pass --data-dir with the folder holding the IDX files"
        )
    prefix = _PREFIX[split]
    images = read_idx(_find(root, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find(root, f"{prefix}-labels-idx1-ubyte")).astype(np.int64)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise UserError(
            f"Fashion-MNIST files in {root} disagree: {images.shape} images, {labels.shape} labels"
        )
    return images, labels
