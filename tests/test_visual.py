"""Grids for people: small tiles enlarged (nearest neighbour), large ones kept, labels drawn where they fit."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ditkit.visual import (
    DEFAULT_PAD_VALUE,
    MIN_TILE_SIDE,
    PANEL_GAP,
    display_scale,
    grid_image,
    grid_layout,
    label_font,
    save_grid,
    side_by_side,
    upscale_nearest,
    wrap_label,
)

NAMES = ["T-shirt/top", "Trouser", "Ankle boot"]


def _images(n: int, side: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, side, side, channels), dtype=np.uint8)


def _ink(region: np.ndarray) -> int:
    """Pixels that are not background white (text or rules)."""
    return int((region < DEFAULT_PAD_VALUE - 40).sum())


def test_display_scale_reaches_the_minimum_side_and_leaves_large_images():
    assert display_scale(28, 28) == 4 and 28 * 4 >= MIN_TILE_SIDE
    assert display_scale(8, 8) == 14 and display_scale(32, 32) == 4 and display_scale(100, 100) == 2
    assert display_scale(MIN_TILE_SIDE, MIN_TILE_SIDE) == 1 and display_scale(256, 256) == 1
    assert display_scale(28, 300) == 4  # the shorter side decides
    with pytest.raises(ValueError):
        display_scale(0, 5)


def test_upscale_nearest_turns_each_pixel_into_a_square():
    image = np.arange(6, dtype=np.uint8).reshape(2, 3, 1)
    big = upscale_nearest(image, 3)
    assert big.shape == (6, 9, 1) and big.dtype == np.uint8
    assert np.array_equal(big[..., 0], np.kron(image[..., 0], np.ones((3, 3), np.uint8)))
    batch = upscale_nearest(_images(4, 5, 3), 2)
    assert batch.shape == (4, 10, 10, 3)
    assert upscale_nearest(image, 1) is image or np.array_equal(upscale_nearest(image, 1), image)
    with pytest.raises(ValueError, match="whole"):
        upscale_nearest(image, 0)


def test_small_grid_tiles_are_enlarged_and_rows_labelled():
    images = _images(6, 28)  # 3 rows of 2, Fashion-MNIST size
    picture = np.asarray(grid_image(images, 2, row_labels=NAMES))
    layout = grid_layout(images, 2, row_labels=NAMES)
    assert layout.scale == 4 and layout.tile_h >= MIN_TILE_SIDE and layout.tile_w >= MIN_TILE_SIDE
    assert layout.left > 0 and layout.top == 0
    for i, image in enumerate(images):
        x0, y0, x1, y1 = layout.tile_box(i)
        assert np.array_equal(picture[y0:y1, x0:x1], upscale_nearest(image, 4)[..., 0])
    for row in range(3):  # each row's label strip holds text
        _, y0, _, y1 = layout.tile_box(2 * row)
        assert _ink(picture[y0:y1, : layout.left]) > 20
    assert picture.shape == (3 * (112 + 2) + 2, layout.left + 2 * (112 + 2) + 2)


def test_no_labels_no_label_column_and_large_images_stay_native(tmp_path):
    images = _images(2, 256, 3)
    layout = grid_layout(images, 2, row_labels=["golden retriever"])
    assert layout.scale == 1 and (layout.tile_h, layout.tile_w) == (256, 256)
    path = save_grid(images, tmp_path / "g.png", nrow=2)
    picture = np.asarray(Image.open(path))
    assert picture.shape == (256 + 4, 2 * 258 + 2, 3)  # no label column, no enlargement
    assert np.array_equal(picture[2:258, 260:516], images[1])


def test_labels_are_left_out_where_rows_are_too_low():
    layout = grid_layout(_images(2, 8), 2, scale=1, row_labels=["Sneaker"])
    assert layout.left == 0  # an 8-px row cannot hold a line of text
    assert grid_layout(_images(2, 28), 2, row_labels=[""]).left == 0  # nothing to write, no column


def test_long_labels_wrap_and_shorten_within_the_column():
    font = label_font(16)
    lines = wrap_label(font, "American Staffordshire terrier, Staffordshire bull terrier", 120, 3)
    assert 1 < len(lines) <= 3 and all(font.getlength(line) <= 120 for line in lines)
    assert lines[-1].endswith("...")
    assert wrap_label(font, "Bag", 120, 2) == ["Bag"]
    images = _images(1, 28)
    layout = grid_layout(images, 1, row_labels=["a very long class name " * 10])
    assert layout.left <= 1.5 * layout.tile_w + 20  # the column is capped, the text wrapped into it


def test_title_strip_and_side_by_side_panels():
    images = _images(4, 28, 3)
    left = grid_image(images, 2, row_labels=["a", "b"], title="real")
    right = grid_image(images, 2, title="generated")
    layout = grid_layout(images, 2, title="generated")
    assert layout.top > 0 and _ink(np.asarray(right)[: layout.top]) > 10
    assert left.height == right.height and left.mode == right.mode == "RGB"
    both = side_by_side([left, right])
    assert both.size == (left.width + PANEL_GAP + right.width, left.height)
    gap = np.asarray(both)[:, left.width : left.width + PANEL_GAP]
    assert _ink(gap) >= both.height  # a rule runs down between the panels
    assert np.array_equal(np.asarray(both)[:, left.width + PANEL_GAP :], np.asarray(right))


def test_wrong_label_count_is_an_error():
    with pytest.raises(ValueError, match="2 row labels for 3 rows"):
        grid_image(_images(3, 28), 1, row_labels=["a", "b"])
