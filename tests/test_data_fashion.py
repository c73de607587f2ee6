"""FashionMNISTDataset: padding/resizing, channels, flips, build_dataset; on tiny IDX files made here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import fashion_mnist_missing, write_fake_fmnist

from ditkit.data.build import build_dataset
from ditkit.data.fashion_mnist import DEFAULT_FASHION_MNIST_DIR, FASHION_MNIST_CLASSES
from ditkit.data.fashion_mnist_dataset import FashionMNISTDataset, fit_fashion_image, parse_class_list
from ditkit.errors import UserError
from ditkit.training.config import TrainConfig


def make_fashion_idx(root: Path, n: int = 12, seed: int = 0) -> Path:
    """Write a tiny Fashion-MNIST lookalike (train and test) as gzipped IDX files."""
    return write_fake_fmnist(root, n, seed, min_pixel=1)  # never 0, so padding is recognisable


def test_pad_to_32_with_black_border(tmp_path):
    root = make_fashion_idx(tmp_path / "fm")
    dataset = FashionMNISTDataset(root, image_size=32, flip="none")
    assert len(dataset) == 12 and dataset.classes == FASHION_MNIST_CLASSES
    image, label = dataset[3]
    assert image.shape == (1, 32, 32) and label == 3
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert torch.all(image[0][border] == -1.0)  # background black = -1
    expected = torch.tensor(dataset.images[3], dtype=torch.float32) / 127.5 - 1
    torch.testing.assert_close(image[0, 2:30, 2:30], expected)


def test_resize_and_channels(tmp_path):
    root = make_fashion_idx(tmp_path / "fm")
    small = FashionMNISTDataset(root, image_size=16, channels=3, flip="none")[0][0]
    assert small.shape == (3, 16, 16)
    torch.testing.assert_close(small[0], small[2])  # grey replicated
    big = FashionMNISTDataset(root, image_size=64, flip="none")[0][0]
    assert big.shape == (1, 64, 64) and big[0, 0, 0] > -1.0  # resized, not padded
    padded = fit_fashion_image(np.full((28, 28), 9, np.uint8), 31, "pad")
    # 3 extra pixels: 1 before, 2 after
    assert padded.shape == (31, 31) and padded[0, 0] == 0 and padded[1, 1] == 9 and padded[28, 28] == 9
    assert padded[29, 29] == 0 and padded[30, 30] == 0
    assert FashionMNISTDataset(root, image_size=28, flip="none")[0][0].shape == (1, 28, 28)


def test_flips_and_split(tmp_path):
    root = make_fashion_idx(tmp_path / "fm")
    plain = FashionMNISTDataset(root, flip="none")
    flipping = FashionMNISTDataset(root, seed=1)
    flipped = [not torch.equal(flipping[i][0], plain[i][0]) for i in range(len(plain))]
    assert any(flipped) and not all(flipped)
    for i in np.flatnonzero(flipped):
        torch.testing.assert_close(flipping[int(i)][0], plain[int(i)][0].flip(-1))
    test = FashionMNISTDataset(root, "test", flip="none")
    assert not torch.equal(test[0][0], plain[0][0])


def test_errors(tmp_path):
    root = make_fashion_idx(tmp_path / "fm")
    with pytest.raises(UserError, match="fit"):
        FashionMNISTDataset(root, fit="stretch")
    with pytest.raises(UserError, match="cannot pad"):
        fit_fashion_image(np.zeros((28, 28), np.uint8), 20, "pad")
    with pytest.raises(UserError):
        FashionMNISTDataset(tmp_path / "missing")


def test_build_dataset_fashion(tmp_path):
    root = make_fashion_idx(tmp_path / "fm")
    dataset, info = build_dataset("fashion-mnist", data_dir=root)
    assert info.kind == "fashion-mnist" and info.num_classes == 10
    assert (info.channels, info.input_size, info.num_items) == (1, 32, 12)
    assert dataset[0][0].shape == (1, 32, 32)


def test_classes_keep_those_labels_relabelled_in_order(tmp_path):
    """--classes 7,5: sneakers become label 0 and sandals label 1, the names follow, the rest is gone."""
    root = make_fashion_idx(tmp_path / "fm", n=30)
    full = FashionMNISTDataset(root, image_size=28, flip="none")
    dataset, info = build_dataset("fashion-mnist", data_dir=root, image_size=28, flip="none", classes=(7, 5))
    assert info.class_names == ("Sneaker", "Sandal") and info.num_items == 6
    assert dataset.describe()["classes"] == [7, 5]
    kept = [i for i in range(len(full)) if full.label(i) in (7, 5)]  # the split's order is kept
    for j, i in enumerate(kept):
        image, label = dataset[j]
        assert label == (0 if full.label(i) == 7 else 1)
        torch.testing.assert_close(image, full[i][0])
    assert dataset.fingerprint() != full.fingerprint()


@pytest.mark.parametrize("text", ["5,10", "5,5", "sandal", "5,,6"])
def test_bad_class_lists_are_refused_in_one_line(text):
    with pytest.raises(UserError, match="--classes"):
        parse_class_list(text)


def test_classes_only_for_fashion_mnist(tmp_path):
    with pytest.raises(UserError, match="sub-folders"):
        TrainConfig(data=str(tmp_path), classes="0,1", steps=1, out=str(tmp_path / "run"))
    assert parse_class_list(" 5, 6,9") == (5, 6, 9)


def test_real_fashion_mnist_test_split():
    if not DEFAULT_FASHION_MNIST_DIR.is_dir():
        fashion_mnist_missing(f"no {DEFAULT_FASHION_MNIST_DIR}")
    dataset = FashionMNISTDataset(split="test", flip="none")
    assert len(dataset) == 10_000
    image, label = dataset[0]
    assert image.shape == (1, 32, 32) and 0 <= label < 10
