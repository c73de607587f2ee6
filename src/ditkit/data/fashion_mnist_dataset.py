"""Fashion-MNIST as a torch Dataset, padded or resized to the requested size.

The 28x28 images are padded with their black background to sizes up to 32 (32 = 28 + 2 + 2 is the
usual choice: it divides by the patch sizes 2, 4 and 8); other sizes are resized with bicubic
interpolation, which keeps the item filling the frame.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from ditkit.data.fashion_mnist import DEFAULT_FASHION_MNIST_DIR, FASHION_MNIST_CLASSES, load_fashion_mnist
from ditkit.data.pixel_dataset import PixelDataset
from ditkit.errors import UserError

FASHION_MNIST_SIZE = 28  # side of the stored images (Xiao et al. 2017)
# Largest size reached by padding in "auto" mode; beyond it the item would float in an empty frame.
MAX_AUTO_PAD_SIZE = 32
FIT_MODES = ("auto", "pad", "resize")


def parse_class_list(text: str) -> tuple[int, ...]:
    """The Fashion-MNIST labels of a `--classes` list ("5,6,7,8,9"), in the order given.

    Raises:
        UserError: a part that is not a label 0..9, or a label given twice.
    """
    parts = [part.strip() for part in text.split(",")]
    n = len(FASHION_MNIST_CLASSES)
    if not all(part.isdigit() and int(part) < n for part in parts):
        raise UserError(f"--classes takes Fashion-MNIST labels 0..{n - 1} separated by commas; got {text!r}")
    labels = tuple(int(part) for part in parts)
    if len(set(labels)) != len(labels):
        raise UserError(f"--classes names a label twice: {text!r}")
    return labels


def fit_fashion_image(image: np.ndarray, image_size: int, fit: str = "auto") -> np.ndarray:
    """Pad (black border, centred) or bicubic-resize one uint8 (28, 28) image to (image_size, image_size).

    With an odd size difference the extra row and column of padding go to the bottom and right.
    """
    if fit not in FIT_MODES:
        raise UserError(f"unknown fit mode {fit!r}; use one of {', '.join(FIT_MODES)}")
    side = image.shape[0]
    if image_size == side:
        return image
    pad = fit == "pad" or (fit == "auto" and side < image_size <= MAX_AUTO_PAD_SIZE)
    if pad:
        if image_size < side:
            raise UserError(f"cannot pad {side}x{side} images down to {image_size}; use fit='resize'")
        before = (image_size - side) // 2
        padded = np.zeros((image_size, image_size), dtype=image.dtype)  # black background
        padded[before : before + side, before : before + side] = image
        return padded
    resized = Image.fromarray(image, mode="L").resize((image_size, image_size), Image.Resampling.BICUBIC)
    return np.asarray(resized)


class FashionMNISTDataset(PixelDataset):
    """Fashion-MNIST items `(image, label)`: image float32 (channels, S, S) in [-1, 1], label in 0..9.

    Flips and epochs work as in `PixelDataset`.

    Args:
        root: folder with the four IDX files; default Debian's dataset-fashion-mnist location.
        split: "train" (60,000 images) or "test" (10,000).
        image_size: output side; 28 keeps the originals, up to 32 pads, others resize (see `fit`).
        channels: 1 (greyscale) or 3 (grey replicated, e.g. for the SD VAE).
        flip: "random" or "none"; horizontal flips keep every Fashion-MNIST label valid.
        seed: seed of the per-item random streams.
        fit: "auto" (pad up to 32, else resize), "pad" or "resize".
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        split: str = "train",
        *,
        image_size: int = MAX_AUTO_PAD_SIZE,
        channels: int = 1,
        flip: str = "random",
        seed: int = 0,
        fit: str = "auto",
        classes: Sequence[int] | None = None,
    ) -> None:
        super().__init__(image_size, channels, flip, seed)
        if fit not in FIT_MODES:
            raise UserError(f"unknown fit mode {fit!r}; use one of {', '.join(FIT_MODES)}")
        self.root = root if root is not None else DEFAULT_FASHION_MNIST_DIR
        self.split = split
        self.fit = fit
        self.images, self.labels = load_fashion_mnist(self.root, split)  # (N, 28, 28) uint8, (N,) int64
        self.classes = FASHION_MNIST_CLASSES
        self.selected = None if classes is None else parse_class_list(",".join(map(str, classes)))
        if self.selected is not None:
            keep = np.isin(self.labels, self.selected)  # the split's order is kept
            relabel = np.full(len(FASHION_MNIST_CLASSES), -1, dtype=np.int64)
            relabel[list(self.selected)] = np.arange(len(self.selected))
            self.images, self.labels = self.images[keep], relabel[self.labels[keep]]
            self.classes = tuple(FASHION_MNIST_CLASSES[c] for c in self.selected)

    def __len__(self) -> int:
        return len(self.labels)

    def label(self, index: int) -> int:
        return int(self.labels[index])

    def item_name(self, index: int) -> str:
        return f"fashion-mnist {self.split}[{index}]"

    def try_load(self, index: int) -> tuple[np.ndarray | None, str | None]:
        image = fit_fashion_image(self.images[index], self.image_size, self.fit)
        return np.repeat(image[:, :, None], self.channels, axis=2), None  # never fails: IDX checked whole

    def fingerprint(self) -> str:
        """SHA-256 of the split's images and labels."""
        digest = hashlib.sha256(np.ascontiguousarray(self.images).tobytes())
        digest.update(np.ascontiguousarray(self.labels).tobytes())
        return digest.hexdigest()

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "fashion-mnist",
            "root": str(os.path.abspath(self.root)),
            "split": self.split,
            "fit": self.fit,
            **({} if self.selected is None else {"classes": list(self.selected)}),
            "num_images": len(self),
        }
