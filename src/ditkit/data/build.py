"""One entry point from a dataset spec to a torch Dataset, as the trainer and the CLI need it.

A spec is one of:
    "fashion-mnist"           the built-in Fashion-MNIST (IDX files in `data_dir`, default Debian's)
    a latent-cache folder     made by `ditkit prepare` (holds cache.json)
    an image folder           one sub-folder per class

Every dataset yields `(x, label)` with x float32 (C, H, W) in the model's input space: pixels in
[-1, 1] for the first two, scaled latents for a cache. Each has `set_epoch(epoch)`.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from ditkit.data.fashion_mnist_dataset import MAX_AUTO_PAD_SIZE, FashionMNISTDataset
from ditkit.data.imagefolder import ImageFolderDataset
from ditkit.data.latent_cache import CACHE_MANIFEST, LatentCacheDataset
from ditkit.errors import UserError

FASHION_MNIST = "fashion-mnist"
# DiT's main resolution: ImageNet at 256x256 (Peebles & Xie 2023, sec. 5).
DEFAULT_IMAGE_SIZE = 256


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset.

    Attributes:
        kind: "fashion-mnist", "image-folder" or "latent-cache".
        num_items: len(dataset).
        class_names: names in label order.
        channels: channels of the items (the model's in_channels).
        input_size: side of the items (the model's input_size).
        image_size: side of the images in pixels.
        first_stage: for a cache, the stored description of the first stage that encoded it
            (`first_stage_from_dict` rebuilds it); None when the items are pixels.
    """

    kind: str
    num_items: int
    class_names: tuple[str, ...]
    channels: int
    input_size: int
    image_size: int
    first_stage: dict[str, Any] | None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["class_names"] = list(self.class_names)
        return data


def natural_channels(spec: str) -> int:
    """Channels a pixel source has without conversion: 1 for Fashion-MNIST, 3 for image folders."""
    return 1 if spec == FASHION_MNIST else 3


def check_dataset_spec(spec: str) -> None:
    """Raise UserError unless `spec` can name a dataset ditkit reads ("fashion-mnist" or a folder).

    Cheap (no file is read): called before any model or first stage is loaded.
    """
    if spec == FASHION_MNIST or Path(spec).is_dir():
        return
    kinds = f"pass {FASHION_MNIST!r}, an image folder (one sub-folder per class) or a latent cache from `ditkit prepare`"
    if Path(spec).exists():
        raise UserError(f"{spec} is a file, not a dataset ditkit reads; {kinds}")
    close = difflib.get_close_matches(spec.lower(), [FASHION_MNIST], n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise UserError(f"dataset {spec!r} not found: no such folder{hint}; {kinds}")


def open_image_source(
    spec: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    split: str = "train",
    image_size: int | None = None,
    channels: int | None = None,
    flip: str = "random",
    seed: int = 0,
    classes: Sequence[int] | None = None,
) -> FashionMNISTDataset | ImageFolderDataset:
    """Open a pixel dataset: Fashion-MNIST (default size 32) or an image folder (default size 256).

    `classes` keeps only those Fashion-MNIST labels, relabelled 0..len-1 (see `FashionMNISTDataset`).

    Raises:
        UserError: `spec` is neither "fashion-mnist" nor an existing folder, or is a latent cache;
            `classes` for a folder.
    """
    channels = channels if channels is not None else natural_channels(spec)
    if spec == FASHION_MNIST:
        size = image_size if image_size is not None else MAX_AUTO_PAD_SIZE
        return FashionMNISTDataset(
            data_dir, split, image_size=size, channels=channels, flip=flip, seed=seed, classes=classes
        )
    if classes is not None:
        raise UserError(
            f"--classes selects Fashion-MNIST labels; {spec}'s classes are its sub-folders: "
            "train on a folder holding only the ones you want"
        )
    path = Path(spec)
    if (path / CACHE_MANIFEST).is_file():
        raise UserError(f"{spec} is already a latent cache; pass the image folder it was made from")
    check_dataset_spec(spec)
    size = image_size if image_size is not None else DEFAULT_IMAGE_SIZE
    return ImageFolderDataset(path, size, channels=channels, flip=flip, seed=seed)


def build_dataset(
    spec: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    split: str = "train",
    image_size: int | None = None,
    channels: int | None = None,
    flip: str = "random",
    seed: int = 0,
    posterior: str = "sample",
    classes: Sequence[int] | None = None,
) -> tuple[Dataset[Any], DatasetInfo]:
    """Build the training dataset for `spec` and describe it.

    Args:
        spec: "fashion-mnist", a latent-cache folder or an image folder.
        data_dir: folder of the Fashion-MNIST IDX files (ignored otherwise).
        split: Fashion-MNIST split, "train" or "test".
        image_size: pixel size; checked against a cache, else defaults to 32 / 256.
        channels: pixel channels (1 or 3); checked against a cache's first stage.
        flip: "random" or "none" ("both" too for a cache).
        seed: seed of the per-item random streams.
        posterior: for a cache, "sample" or "mean".
        classes: Fashion-MNIST only: keep these labels, relabelled 0..len-1.

    Returns:
        (dataset, info): items are (x float32 (C, H, W), label int).
    """
    if spec != FASHION_MNIST and (Path(spec) / CACHE_MANIFEST).is_file():
        if classes is not None:
            raise UserError(f"--classes selects Fashion-MNIST labels; {spec} is a latent cache")
        cache = LatentCacheDataset(spec, flip=flip, posterior=posterior, seed=seed)
        if image_size is not None and image_size != cache.image_size:
            raise UserError(
                f"cache {spec} holds {cache.image_size}px images, not {image_size}px; prepare a new one"
            )
        cached_channels = int(cache.manifest["config"]["channels"])
        if channels is not None and channels != cached_channels:
            raise UserError(f"cache {spec} was made from {cached_channels}-channel images, not {channels}")
        info = DatasetInfo(
            kind="latent-cache",
            num_items=len(cache),
            class_names=cache.classes,
            channels=cache.latent_shape[0],
            input_size=cache.latent_shape[1],
            image_size=cache.image_size,
            first_stage=cache.first_stage,
        )
        return cache, info
    source = open_image_source(
        spec,
        data_dir=data_dir,
        split=split,
        image_size=image_size,
        channels=channels,
        flip=flip,
        seed=seed,
        classes=classes,
    )
    info = DatasetInfo(
        kind=FASHION_MNIST if spec == FASHION_MNIST else "image-folder",
        num_items=len(source),
        class_names=tuple(source.classes),
        channels=source.channels,
        input_size=source.image_size,
        image_size=source.image_size,
        first_stage=None,
    )
    return source, info
