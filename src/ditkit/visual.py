"""Image grids for people to look at: tiles enlarged when small, class names beside the rows, saved as PNG.

Arrays are uint8 (N, H, W, C) with C = 1 (grey) or 3 (RGB), the layout samples are saved in. Small images
(e.g. 28x28 Fashion-MNIST) are enlarged by a whole factor with nearest-neighbour sampling, so every
pixel stays a sharp square; large ones (e.g. 256x256 ImageNet samples) are left as they are. Only grids
are enlarged: single images and sample arrays stay at the model's resolution.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ditkit.atomic import atomic_path

# Pixels between tiles and around the grid, and their grey level (white).
DEFAULT_PADDING = 2
DEFAULT_PAD_VALUE = 255
# Grid tiles are enlarged until their shorter side is at least this many pixels (28-px images: x4).
MIN_TILE_SIDE = 112
# Label text: its height is about this fraction of a tile's, within these bounds (pixels).
LABEL_FONT_FRACTION = 1 / 7
MIN_FONT_SIZE, MAX_FONT_SIZE = 12, 24
# Space around label text (pixels), its grey level, and a label column's widest (in tile widths).
LABEL_MARGIN = 8
TEXT_LEVEL = 40
MAX_LABEL_COLUMN_TILES = 1.5
# Between panels placed side by side: blank pixels, with a grey rule in the middle.
PANEL_GAP = 24
RULE_LEVEL = 160
ELLIPSIS = "..."


def images_to_uint8(images: torch.Tensor) -> np.ndarray:
    """Images (N, C, H, W) in about [-1, 1] -> uint8 (N, H, W, C), rounding to the nearest level."""
    if images.ndim != 4:
        raise ValueError(f"expected images of shape (N, C, H, W), got {tuple(images.shape)}")
    scaled = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return scaled.permute(0, 2, 3, 1).cpu().numpy()  # (N, H, W, C)


# Channels of an image a PNG holds: grey or RGB.
IMAGE_CHANNELS = (1, 3)


def _as_nhwc(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"grid images must be uint8, got {images.dtype}")
    if images.ndim == 3:
        images = images[..., None]  # (N, H, W) -> (N, H, W, 1)
    if images.ndim != 4 or images.shape[-1] not in IMAGE_CHANNELS or len(images) == 0:
        raise ValueError(f"expected uint8 images (N, H, W[, 1|3]) with N > 0, got shape {images.shape}")
    return images


def to_pil(image: np.ndarray) -> Image.Image:
    """One uint8 (H, W, 1 or 3) image as a PIL image ("L" or "RGB")."""
    return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)


def display_scale(height: int, width: int, min_side: int = MIN_TILE_SIDE) -> int:
    """The smallest whole factor that brings an image's shorter side to `min_side` (1 if already there)."""
    side = min(height, width)
    if side < 1:
        raise ValueError(f"an image needs a positive size, got {height}x{width}")
    return max(1, -(-min_side // side))


def upscale_nearest(images: np.ndarray, scale: int) -> np.ndarray:
    """Enlarge images `scale` times with nearest-neighbour sampling (each pixel becomes a square).

    Args:
        images: an array whose last three axes are (H, W, C), e.g. one (H, W, C) image or (N, H, W, C).
        scale: a whole factor >= 1.

    Returns:
        The same dtype, (..., H * scale, W * scale, C).
    """
    if scale < 1 or int(scale) != scale:
        raise ValueError(f"the scale must be a whole number >= 1, got {scale}")
    images = np.asarray(images)
    if scale == 1:
        return images
    return images.repeat(scale, axis=-3).repeat(scale, axis=-2)


def make_grid(
    images: np.ndarray, nrow: int, padding: int = DEFAULT_PADDING, pad_value: int = DEFAULT_PAD_VALUE
) -> np.ndarray:
    """Tile images row by row, `nrow` per row, at their own size.

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


@functools.lru_cache(maxsize=8)
def label_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's built-in font at `size` pixels (no font file is read or downloaded).

    Pillow >= 10.1 with FreeType scales it; without FreeType this is its fixed small bitmap font.
    """
    return ImageFont.load_default(size=size)


def _text_width(font: ImageFont.FreeTypeFont | ImageFont.ImageFont, text: str) -> int:
    return int(np.ceil(font.getlength(text)))


def _line_height(font: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> int:
    left, top, right, bottom = font.getbbox("Ag/")
    return int(bottom) + 2


def _shorten(font: ImageFont.FreeTypeFont | ImageFont.ImageFont, text: str, width: int) -> str:
    """`text`, cut and ended with an ellipsis where it is wider than `width` pixels."""
    if _text_width(font, text) <= width:
        return text
    while text and _text_width(font, text + ELLIPSIS) > width:
        text = text[:-1]
    return text.rstrip() + ELLIPSIS if text else ""


def wrap_label(
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont, text: str, width: int, max_lines: int
) -> list[str]:
    """Break `text` at spaces into at most `max_lines` lines of at most `width` pixels (the last cut short)."""
    lines: list[str] = []
    for word in text.split():
        if lines and _text_width(font, f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    if len(lines) > max_lines:
        lines = [*lines[: max_lines - 1], " ".join(lines[max_lines - 1 :])]
    return [_shorten(font, line, width) for line in lines]


@dataclass(frozen=True)
class GridLayout:
    """Where `grid_image` puts things, in output pixels.

    Attributes:
        scale: enlargement of every tile; tile_h, tile_w: a tile's size after it.
        ncol, rows: tiles per row and number of rows.
        padding: pixels between tiles (not enlarged).
        left: width of the row-label column (0 without labels); top: height of the title strip.
    """

    scale: int
    tile_h: int
    tile_w: int
    ncol: int
    rows: int
    padding: int
    left: int
    top: int

    def tile_box(self, i: int) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of tile i, row by row."""
        x = self.left + self.padding + (i % self.ncol) * (self.tile_w + self.padding)
        y = self.top + self.padding + (i // self.ncol) * (self.tile_h + self.padding)
        return x, y, x + self.tile_w, y + self.tile_h


def _font_for(tile_h: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    size = int(round(tile_h * LABEL_FONT_FRACTION))
    return label_font(min(MAX_FONT_SIZE, max(MIN_FONT_SIZE, size)))


def grid_image(
    images: np.ndarray,
    nrow: int,
    padding: int = DEFAULT_PADDING,
    scale: int | None = None,
    row_labels: Sequence[str] | None = None,
    title: str | None = None,
) -> Image.Image:
    """A grid of `images` as a PIL image ("L" or "RGB"), ready to look at.

    Args:
        images: uint8 (N, H, W), (N, H, W, 1) or (N, H, W, 3).
        nrow: images per row.
        padding: pixels between tiles and around them (not enlarged).
        scale: whole enlargement of each tile (nearest neighbour); None: `display_scale` of the images,
            so that small images reach MIN_TILE_SIDE pixels and large ones stay as they are.
        row_labels: text written left of each row (e.g. class names), wrapped onto several lines where
            needed; left out where a row is lower than one line of text. One per row.
        title: text centred above the tiles (e.g. a column header).
    """
    images = _as_nhwc(images)
    layout, font, column = _plan(images, nrow, padding, scale, row_labels, title)
    tiles = make_grid(upscale_nearest(images, layout.scale), nrow, padding)  # (gh, gw, C)
    mode, grey = ("L", TEXT_LEVEL) if images.shape[-1] == 1 else ("RGB", (TEXT_LEVEL,) * 3)
    canvas = Image.new(mode, (layout.left + tiles.shape[1], layout.top + tiles.shape[0]), DEFAULT_PAD_VALUE)
    canvas.paste(to_pil(tiles), (layout.left, layout.top))
    draw = ImageDraw.Draw(canvas)
    line = _line_height(font)
    for r, lines in enumerate(column):
        row_top = layout.tile_box(r * layout.ncol)[1]
        y = row_top + (layout.tile_h - line * len(lines)) // 2  # the text block centred on the row
        for k, text in enumerate(lines):
            draw.text((LABEL_MARGIN, y + k * line), text, fill=grey, font=font)
    if title:
        text = _shorten(font, title, canvas.width - 2 * LABEL_MARGIN)
        x = layout.left + (tiles.shape[1] - _text_width(font, text)) // 2  # centred on the tiles
        draw.text((max(LABEL_MARGIN, x), LABEL_MARGIN), text, fill=grey, font=font)
    return canvas


def grid_layout(
    images: np.ndarray,
    nrow: int,
    padding: int = DEFAULT_PADDING,
    scale: int | None = None,
    row_labels: Sequence[str] | None = None,
    title: str | None = None,
) -> GridLayout:
    """Where `grid_image` with the same arguments puts each tile (e.g. to crop one out again)."""
    return _plan(_as_nhwc(images), nrow, padding, scale, row_labels, title)[0]


def _plan(
    images: np.ndarray,
    nrow: int,
    padding: int,
    scale: int | None,
    row_labels: Sequence[str] | None,
    title: str | None,
) -> tuple[GridLayout, ImageFont.FreeTypeFont | ImageFont.ImageFont, list[list[str]]]:
    """The layout, the label font and each row's label lines (none where rows are too low for text)."""
    if nrow < 1:
        raise ValueError(f"nrow must be positive, got {nrow}")
    n, h, w, _ = images.shape
    scale = display_scale(h, w) if scale is None else scale
    ncol = min(nrow, n)
    rows = -(-n // ncol)
    if row_labels is not None and len(row_labels) != rows:
        raise ValueError(f"{len(row_labels)} row labels for {rows} rows")
    tile_h, tile_w = h * scale, w * scale
    font = _font_for(tile_h)
    line = _line_height(font)
    column: list[list[str]] = []
    if row_labels is not None and any(text.strip() for text in row_labels) and line <= tile_h:
        width = min(max(_text_width(font, text) for text in row_labels), int(MAX_LABEL_COLUMN_TILES * tile_w))
        column = [wrap_label(font, text, width, tile_h // line) for text in row_labels]
    widest = max((_text_width(font, text) for lines in column for text in lines), default=0)
    left = widest + 2 * LABEL_MARGIN if column else 0
    top = line + 2 * LABEL_MARGIN if title else 0
    return GridLayout(scale, tile_h, tile_w, ncol, rows, padding, left, top), font, column


def side_by_side(panels: Sequence[Image.Image], gap: int = PANEL_GAP) -> Image.Image:
    """Panels (e.g. grids) next to each other, tops aligned, `gap` pixels apart with a grey rule between."""
    if not panels:
        raise ValueError("side_by_side needs at least one panel")
    mode = "RGB" if any(p.mode == "RGB" for p in panels) else "L"
    width = sum(p.width for p in panels) + gap * (len(panels) - 1)
    canvas = Image.new(mode, (width, max(p.height for p in panels)), DEFAULT_PAD_VALUE)
    draw = ImageDraw.Draw(canvas)
    x = 0
    for i, panel in enumerate(panels):
        if i:
            rule = x - gap // 2 - 1
            draw.line(
                [(rule, 0), (rule, canvas.height - 1)], fill=RULE_LEVEL if mode == "L" else (RULE_LEVEL,) * 3
            )
        canvas.paste(panel.convert(mode), (x, 0))
        x += panel.width + gap
    return canvas


def save_image(image: Image.Image, path: str | os.PathLike[str]) -> Path:
    """Write a PIL image as PNG atomically and return its path."""
    target = Path(path)
    with atomic_path(target) as tmp:
        image.save(tmp, format="PNG")
    return target


def save_grid(
    images: np.ndarray,
    path: str | os.PathLike[str],
    nrow: int,
    padding: int = DEFAULT_PADDING,
    scale: int | None = None,
    row_labels: Sequence[str] | None = None,
    title: str | None = None,
) -> Path:
    """Write `grid_image` of `images` (same arguments) to a PNG file atomically and return its path."""
    return save_image(grid_image(images, nrow, padding, scale, row_labels, title), path)
