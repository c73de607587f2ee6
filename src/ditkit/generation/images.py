"""Single images and animations: uint8 arrays to PNG files and looping GIFs (grids: `ditkit.visual`).

All arrays here are uint8 (H, W, C) or (N, H, W, C) with C = 1 (grey) or 3 (RGB); files are written
atomically.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ditkit.atomic import atomic_path
from ditkit.errors import UserError
from ditkit.visual import save_image, to_pil

# Frame time of walk GIFs in milliseconds (about 8 frames per second).
DEFAULT_GIF_DURATION_MS = 125


def save_png(path: str | os.PathLike[str], image: np.ndarray) -> Path:
    """Write one uint8 (H, W, 1 or 3) image as PNG, atomically."""
    return save_image(to_pil(image), path)


def save_gif(
    path: str | os.PathLike[str],
    frames: np.ndarray | Sequence[np.ndarray] | Sequence[Image.Image],
    duration_ms: int = DEFAULT_GIF_DURATION_MS,
) -> Path:
    """Write frames (uint8 (F, H, W, 1 or 3), or PIL images) as an animated GIF that loops forever, atomically."""
    if len(frames) == 0:
        raise UserError("an animation needs at least one frame")
    if duration_ms <= 0:
        raise UserError(f"the frame duration must be positive, got {duration_ms} ms")
    pictures = [f if isinstance(f, Image.Image) else to_pil(np.asarray(f)) for f in frames]
    with atomic_path(path) as tmp:
        pictures[0].save(
            tmp, format="GIF", save_all=True, append_images=pictures[1:], duration=duration_ms, loop=0
        )
    return Path(path)
