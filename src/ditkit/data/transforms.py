"""Image preprocessing: colour-mode conversion, ADM's centre crop, and scaling to [-1, 1].

DiT (facebookresearch/DiT, train.py) preprocesses ImageNet with ADM's `center_crop_arr`
(openai/guided-diffusion, image_datasets.py), a random horizontal flip, and a map of [0, 255] to
[-1, 1]. `center_crop_arr` below follows the same three steps so that latents and FID reference
batches line up with the paper's.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image

# Background that transparent pixels are composited onto. Images with alpha are mostly product shots
# and icons meant to be shown on a white page; dropping alpha instead would expose whatever colour
# the encoder left under transparent pixels (often black or noise).
ALPHA_BACKGROUND = (255, 255, 255)
# Pillow modes that hold 16-bit greyscale samples (16-bit PNG and TIFF open as one of these).
_SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})


class UnreadableImageError(Exception):
    """An image file that cannot be decoded (corrupt, truncated, or not an image)."""


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow image to 8-bit RGB.

    Greyscale and bilevel images are replicated over the three channels; palette images are
    expanded (keeping their transparency); images with alpha (RGBA, LA, PA, palette with a
    transparent colour) are composited onto `ALPHA_BACKGROUND`; CMYK, YCbCr, LAB and HSV go
    through Pillow's conversion; 16-bit greyscale is scaled to 8 bits (divided by 257).
    """
    if image.mode == "RGB":
        return image
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif image.mode in _SIXTEEN_BIT_MODES:
        samples = np.asarray(image, dtype=np.float64) / 257.0
        image = Image.fromarray(np.clip(np.rint(samples), 0, 255).astype(np.uint8), mode="L")
    if image.mode in _ALPHA_MODES:
        background = Image.new("RGBA", image.size, (*ALPHA_BACKGROUND, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return image.convert("RGB")


def center_crop_arr(image: Image.Image, image_size: int) -> np.ndarray:
    """ADM's centre crop: the square `image_size` crop DiT trains on.

    While the short side is at least twice the target, halve the image with a box filter (cheap
    anti-aliasing); then resize with bicubic so the short side equals `image_size`; then cut the
    centre square.

    Args:
        image: an RGB or greyscale Pillow image.
        image_size: side of the square output in pixels.

    Returns:
        uint8 array (image_size, image_size, 3) for RGB input, (image_size, image_size) for greyscale.
    """
    while min(image.size) >= 2 * image_size:
        width, height = image.size
        image = image.resize((width // 2, height // 2), resample=Image.Resampling.BOX)
    scale = image_size / min(image.size)
    # Python's round (half to even), as in ADM, so the crop offsets match the reference exactly.
    width, height = image.size
    image = image.resize((round(width * scale), round(height * scale)), resample=Image.Resampling.BICUBIC)
    array = np.asarray(image)
    top = (array.shape[0] - image_size) // 2
    left = (array.shape[1] - image_size) // 2
    return array[top : top + image_size, left : left + image_size]


def read_image(path: str | os.PathLike[str], image_size: int, channels: int = 3) -> np.ndarray:
    """Decode one image file and return its ADM centre crop.

    Args:
        path: image file (any format Pillow reads).
        image_size: side of the square crop.
        channels: 3 for RGB, 1 for greyscale.

    Returns:
        uint8 array (image_size, image_size, channels).

    Raises:
        UnreadableImageError: the file is corrupt, truncated or not an image.
    """
    try:
        with Image.open(path) as image:
            image.load()  # decode now: truncation surfaces here, not later
            rgb = to_rgb(image)
    except Exception as err:  # Pillow raises a zoo of types on corrupt input; any of them means "skip"
        raise UnreadableImageError(f"{type(err).__name__}: {err}") from err
    if channels == 1:
        rgb = rgb.convert("L")
    elif channels != 3:
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    crop = center_crop_arr(rgb, image_size)
    return crop.reshape(image_size, image_size, channels).copy()  # writable, owns its memory


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """Map uint8 images (..., H, W, C) in [0, 255] to float32 (..., C, H, W) in [-1, 1]."""
    return images.movedim(-1, -3).to(torch.float32).div(127.5).sub(1.0)
