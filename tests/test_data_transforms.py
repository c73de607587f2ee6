"""Image preprocessing: ADM centre crop, colour-mode conversion, [-1, 1] scaling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ditkit.data.transforms import (
    ALPHA_BACKGROUND,
    UnreadableImageError,
    center_crop_arr,
    read_image,
    to_rgb,
    to_unit_range,
)


def _noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_center_crop_follows_adm_steps():
    # 130x70 -> short side 70 >= 2*32: box-halve to 65x35; 35 < 64: stop; bicubic to
    # (round(65*32/35), 32) = (59, 32); crop columns (59-32)//2 = 13 .. 45.
    image = _noise_image(130, 70)
    halved = image.resize((65, 35), resample=Image.Resampling.BOX)
    resized = np.asarray(halved.resize((59, 32), resample=Image.Resampling.BICUBIC))
    expected = resized[0:32, 13:45]
    out = center_crop_arr(image, 32)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)


def test_center_crop_halves_repeatedly_and_keeps_exact_size():
    image = _noise_image(300, 260)  # 260 -> 130 -> 65 (>= 2*16 twice more) -> 32 ... until short side < 32
    out = center_crop_arr(image, 16)
    assert out.shape == (16, 16, 3)
    same = _noise_image(16, 16)
    np.testing.assert_array_equal(center_crop_arr(same, 16), np.asarray(same))


def test_center_crop_takes_the_middle():
    array = np.zeros((20, 60, 3), dtype=np.uint8)
    array[:, 20:40] = 255  # a white band in the middle third of a wide image
    out = center_crop_arr(Image.fromarray(array), 20)
    assert out.min() >= 250  # only the band survives the crop


def test_to_rgb_conversions():
    grey = Image.fromarray(np.full((4, 4), 77, dtype=np.uint8), mode="L")
    assert np.all(np.asarray(to_rgb(grey)) == 77)

    rgba = Image.new("RGBA", (4, 4), (10, 20, 30, 0))  # fully transparent
    assert np.all(np.asarray(to_rgb(rgba)) == np.array(ALPHA_BACKGROUND))
    opaque = Image.new("RGBA", (4, 4), (10, 20, 30, 255))
    assert np.all(np.asarray(to_rgb(opaque)) == np.array([10, 20, 30]))
    half = np.asarray(to_rgb(Image.new("LA", (2, 2), (0, 128))))
    assert np.all(np.abs(half.astype(int) - 127) <= 1)  # black at 50% over white

    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    assert np.all(np.asarray(to_rgb(palette)) == np.array([200, 100, 50]))
    palette.info["transparency"] = 1
    assert np.all(np.asarray(to_rgb(palette)) == np.array(ALPHA_BACKGROUND))

    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))  # pure red in naive CMYK
    np.testing.assert_array_equal(np.asarray(to_rgb(cmyk)), np.asarray(cmyk.convert("RGB")))
    assert tuple(np.asarray(to_rgb(cmyk))[0, 0]) == (255, 0, 0)

    sixteen = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))
    assert sixteen.mode.startswith("I")
    assert np.all(np.asarray(to_rgb(sixteen)) == 255)


def test_read_image_modes_and_channels(tmp_path):
    path = tmp_path / "a.png"
    Image.new("RGBA", (40, 24), (255, 0, 0, 255)).save(path)
    rgb = read_image(path, 16)
    assert rgb.shape == (16, 16, 3) and np.all(rgb == np.array([255, 0, 0]))
    grey = read_image(path, 16, channels=1)
    assert grey.shape == (16, 16, 1)
    assert np.all(grey == np.asarray(Image.new("RGB", (1, 1), (255, 0, 0)).convert("L"))[0, 0])


def test_read_image_rejects_corrupt_files(tmp_path):
    text = tmp_path / "fake.png"
    text.write_text("not an image")
    with pytest.raises(UnreadableImageError):
        read_image(text, 8)
    full = tmp_path / "full.jpg"
    _noise_image(64, 64).save(full, quality=95)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(full.read_bytes()[:600])
    with pytest.raises(UnreadableImageError, match="(?i)truncated"):
        read_image(truncated, 8)


def test_to_unit_range_maps_bytes_and_moves_channels():
    images = torch.tensor([0, 255, 128], dtype=torch.uint8).view(1, 1, 3)  # (H=1, W=1, C=3)
    out = to_unit_range(images)
    assert out.shape == (3, 1, 1) and out.dtype == torch.float32
    torch.testing.assert_close(out.flatten(), torch.tensor([-1.0, 1.0, 128 / 127.5 - 1]))
    batch = torch.zeros(2, 5, 6, 3, dtype=torch.uint8)
    assert to_unit_range(batch).shape == (2, 3, 5, 6)
