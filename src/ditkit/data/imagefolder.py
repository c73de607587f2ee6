"""An image-folder dataset laid out like ImageNet's train folder: one sub-folder per class.

    root/
      n01440764/  a.JPEG  b.JPEG ...
      n01443537/  ...

Class names are the sub-folder names in sorted order; label i is the i-th name. Images are found
recursively inside each class folder by extension (case-insensitive); hidden files and folders
(names starting with ".") are ignored. Files are decoded lazily, so a corrupt or truncated file is
only found when it is read: it is then logged, remembered in `skipped`, and replaced by the next
readable image, so a long training run never stops on one bad file. `ditkit prepare` instead drops
such files from the cache and lists them in the cache manifest.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from ditkit.data.class_index import write_class_index
from ditkit.data.pixel_dataset import PixelDataset
from ditkit.data.transforms import UnreadableImageError, read_image
from ditkit.errors import UserError

# Raster formats Pillow decodes; matched case-insensitively against the file suffix.
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".pbm", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
)


def scan_image_folder(root: str | os.PathLike[str]) -> tuple[tuple[str, ...], list[tuple[Path, int]]]:
    """List the classes and (file, label) pairs of an image folder, both in sorted order.

    Raises:
        UserError: the folder is missing, has no class sub-folders, or a class folder has no images.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"image folder {root} does not exist; pass a folder with one sub-folder per class")
    classes = sorted(
        entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith(".")
    )
    if not classes:
        raise UserError(
            f"{root} has no class sub-folders; put the images in one folder per class "
            f"(e.g. {root}/cat/1.jpg), or in a single folder {root}/all/ for an unlabelled set"
        )
    samples: list[tuple[Path, int]] = []
    for label, name in enumerate(classes):
        files = sorted(_image_files(root / name))
        if not files:
            raise UserError(
                f"class folder {root / name} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))}); "
                "add images or remove the folder"
            )
        samples.extend((path, label) for path in files)
    return tuple(classes), samples


def _image_files(folder: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [name for name in dirnames if not name.startswith(".")]
        for name in filenames:
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                found.append(Path(dirpath) / name)
    return found


class ImageFolderDataset(PixelDataset):
    """Class-labelled images from a folder tree, ADM centre-cropped and randomly flipped.

    Items are `(image, label)`: image float32 (channels, image_size, image_size) in [-1, 1], label
    int (see `PixelDataset` for flips, epochs and unreadable files).

    Args:
        root: folder with one sub-folder per class.
        image_size: side of the square crop in pixels.
        channels: 3 (RGB) or 1 (greyscale).
        flip: "random" (horizontal flip with probability 1/2, as in DiT) or "none".
        seed: seed of the per-item random streams.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        image_size: int,
        *,
        channels: int = 3,
        flip: str = "random",
        seed: int = 0,
    ) -> None:
        super().__init__(image_size, channels, flip, seed)
        self.root = Path(root)
        self.classes, self.samples = scan_image_folder(self.root)

    def __len__(self) -> int:
        return len(self.samples)

    def label(self, index: int) -> int:
        return self.samples[index][1]

    def item_name(self, index: int) -> str:
        return str(self.samples[index][0])

    def try_load(self, index: int) -> tuple[np.ndarray | None, str | None]:
        try:
            return read_image(self.samples[index][0], self.image_size, self.channels), None
        except UnreadableImageError as err:
            return None, str(err)

    def write_class_index(self, path: str | os.PathLike[str]) -> Path:
        """Write {"class name": label} JSON to `path` (a file, or a folder to hold class_index.json)."""
        return write_class_index(path, self.classes)

    def fingerprint(self) -> str:
        """A hash of the relative file names and sizes: changes when files are added, removed or replaced."""
        digest = hashlib.sha256()
        for path, label in self.samples:
            size = path.stat().st_size if path.exists() else -1
            digest.update(f"{path.relative_to(self.root)}\t{label}\t{size}\n".encode())
        return digest.hexdigest()

    def describe(self) -> dict[str, Any]:
        return {"kind": "image-folder", "root": str(self.root.resolve()), "num_images": len(self)}
