"""Image grids: tile uint8 images into one picture and save it as a PNG, atomically.

Arrays are uint8 (N, H, W, C) with C = 1 (grey) or 3 (RGB), the layout samples are saved in.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ditkit.atomic import atomic_path

# Pixels between tiles and around the grid, and their grey level (white).
DEFAULT_PADDING = 2
DEFAULT_PAD_VALUE = 255


def images_to_uint8(images: torch.Tensor) -> np.ndarray:
    """Images (N, C, H, W) in about [-1, 1] -> uint8 (N, H, W, C), rounding to the nearest level."""
    if images.ndim != 4:
        raise ValueError(f"expected images of shape (N, C, H, W), got {tuple(images.shape)}")
    scaled = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return scaled.permute(0, 2, 3, 1).cpu().numpy()  # (N, H, W, C)


def _as_nhwc(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"grid images must be uint8, got {images.dtype}")
    if images.ndim == 3:
        images = images[..., None]  # (N, H, W) -> (N, H, W, 1)
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or len(images) == 0:
        raise ValueError(f"expected uint8 images (N, H, W[, 1|3]) with N > 0, got shape {images.shape}")
    return images


def make_grid(
    images: np.ndarray, nrow: int, padding: int = DEFAULT_PADDING, pad_value: int = DEFAULT_PAD_VALUE
) -> np.ndarray:
    """Tile images row by row, `nrow` per row.

    Args:
        images: uint8 (N, H, W), (N, H, W, 1) or (N, H, W, 3).
        nrow: images per row (the last row may be short).
        padding: pixels between tiles and around the border.
        pad_value: grey level of the padding.

    Returns:
        uint8 (rows * (H + p) + p, ncol * (W + p) + p, C) with rows = ceil(N / nrow).
    """
    images = _as_nhwc(images)
    if nrow < 1:
        raise ValueError(f"nrow must be positive, got {nrow}")
    n, h, w, c = images.shape
    ncol = min(nrow, n)
    rows = -(-n // ncol)
    grid = np.full((rows * (h + padding) + padding, ncol * (w + padding) + padding, c), pad_value, np.uint8)
    for i, image in enumerate(images):
        top = padding + (i // ncol) * (h + padding)
        left = padding + (i % ncol) * (w + padding)
        grid[top : top + h, left : left + w] = image
    return grid


def grid_image(images: np.ndarray, nrow: int, padding: int = DEFAULT_PADDING, scale: int = 1) -> Image.Image:
    """`make_grid` as a PIL image ("L" or "RGB"), optionally enlarged `scale` times (nearest neighbour)."""
    grid = make_grid(images, nrow, padding)
    image = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    return image


def save_grid(
    images: np.ndarray,
    path: str | os.PathLike[str],
    nrow: int,
    padding: int = DEFAULT_PADDING,
    scale: int = 1,
) -> Path:
    """Write the grid of `images` to a PNG file atomically and return its path."""
    target = Path(path)
    image = grid_image(images, nrow, padding, scale)
    with atomic_path(target) as tmp:
        image.save(tmp, format="PNG")
    return target
