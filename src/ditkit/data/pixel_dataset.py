"""What the pixel datasets (image folder, Fashion-MNIST) share: options, epochs, flips, [-1, 1] tensors.

A subclass says how to decode one item (`try_load`, which may fail) and what its label is; this base
turns that into `(image, label)` items, replacing unreadable items so a long run never stops on one
bad file, and drawing each item's flip from a generator seeded by (seed, epoch, index).
"""

from __future__ import annotations

import abc
import logging
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ditkit.data.transforms import to_unit_range
from ditkit.errors import UserError
from ditkit.seeding import coin_flip, item_generator

logger = logging.getLogger(__name__)

FLIP_MODES = ("random", "none")


class PixelDataset(Dataset[tuple[torch.Tensor, int]], abc.ABC):
    """Items `(image, label)`: image float32 (channels, image_size, image_size) in [-1, 1], label int.

    Call `set_epoch` before each epoch (and do not use persistent DataLoader workers, which would keep
    a stale copy of the epoch). An unreadable item is logged, remembered in `skipped` (per process:
    each DataLoader worker keeps its own) and replaced by the next readable one.

    Args:
        image_size: side of the square images in pixels.
        channels: 1 (greyscale) or 3 (RGB).
        flip: "random" (horizontal flip with probability 1/2, as in DiT) or "none".
        seed: seed of the per-item random streams.
    """

    classes: tuple[str, ...]

    def __init__(self, image_size: int, channels: int, flip: str, seed: int) -> None:
        if flip not in FLIP_MODES:
            raise UserError(f"unknown flip mode {flip!r}; use one of {', '.join(FLIP_MODES)}")
        if channels not in (1, 3):
            raise UserError(f"images have 1 or 3 channels, not {channels}")
        if image_size < 1:
            raise UserError(f"image size must be positive, got {image_size}")
        self.image_size, self.channels, self.flip, self.seed = image_size, channels, flip, seed
        self.epoch = 0
        self.skipped: dict[str, str] = {}  # item name -> why it could not be read

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def label(self, index: int) -> int:
        """Label of item `index`."""

    @abc.abstractmethod
    def try_load(self, index: int) -> tuple[np.ndarray | None, str | None]:
        """Item `index` unflipped: (uint8 (S, S, channels), None), or (None, reason) if unreadable."""

    @abc.abstractmethod
    def item_name(self, index: int) -> str:
        """Where item `index` comes from, for messages."""

    @abc.abstractmethod
    def fingerprint(self) -> str:
        """A hash that changes when the underlying data changes."""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """Plain-data description of the source, stored in latent-cache manifests."""

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose flips the following items use."""
        self.epoch = epoch

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        array, label = self._load_or_replace(index)
        image = to_unit_range(torch.from_numpy(array))  # (C, S, S)
        if self.flip == "random" and coin_flip(item_generator(self.seed, self.epoch, index)):
            image = image.flip(-1)
        return image, label

    def _load_or_replace(self, index: int) -> tuple[np.ndarray, int]:
        for offset in range(len(self)):
            candidate = (index + offset) % len(self)
            array, reason = self.try_load(candidate)
            if array is not None:
                return array, self.label(candidate)
            name = self.item_name(candidate)
            if name not in self.skipped:
                self.skipped[name] = reason or "unreadable"
                logger.warning("skipping unreadable image %s (%s)", name, reason)
        raise UserError(f"no image of {self.describe().get('root')} could be read; check the files")
