"""The demo's pictures: the sample grid (one labelled row per class) and real test images beside samples."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ditkit.visual import grid_image, save_grid, save_image, side_by_side

GRID_FILE = "grid.png"
REAL_VS_GENERATED_FILE = "real_vs_generated.png"
# Columns of the demo grid (samples per class shown).
GRID_PER_CLASS = 10
# Real and generated images per class in real_vs_generated.png (each side).
COMPARE_PER_CLASS = 5


def first_per_class(images: np.ndarray, labels: np.ndarray, num_classes: int, count: int) -> np.ndarray:
    """The first `count` images of each class, class 0's first: (num_classes * count, H, W).

    Raises ValueError when a class has fewer than `count` images (a grid row would be short).
    """
    rows = [images[labels == c][:count] for c in range(num_classes)]
    short = [c for c, row in enumerate(rows) if len(row) < count]
    if short:
        raise ValueError(f"classes {short} have fewer than {count} images")
    return np.concatenate(rows)


def write_grid(
    out: Path, images: np.ndarray, labels: np.ndarray, class_names: Sequence[str], per_class: int
) -> Path:
    """grid.png: up to GRID_PER_CLASS samples of each class in one row, the class name beside it."""
    count = min(GRID_PER_CLASS, per_class)
    rows = first_per_class(images, labels, len(class_names), count)
    return save_grid(rows, out / GRID_FILE, nrow=count, row_labels=list(class_names))


def write_real_vs_generated(
    out: Path,
    real: np.ndarray,
    real_labels: np.ndarray,
    images: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
) -> Path:
    """real_vs_generated.png: per class (one labelled row each), real images left, samples right.

    Both sides show the same number per class: COMPARE_PER_CLASS, or fewer where either side has fewer.
    """
    k = len(class_names)
    count = min(
        COMPARE_PER_CLASS,
        *(int((real_labels == c).sum()) for c in range(k)),
        *(int((labels == c).sum()) for c in range(k)),
    )
    left = grid_image(
        first_per_class(real, real_labels, k, count), count, row_labels=list(class_names), title="real"
    )
    right = grid_image(first_per_class(images, labels, k, count), count, title="generated")
    return save_image(side_by_side([left, right]), out / REAL_VS_GENERATED_FILE)
