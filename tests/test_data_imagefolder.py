"""ImageFolderDataset: scanning, class index, flips, corrupt files, and build_dataset on a folder."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ditkit.data.build import build_dataset
from ditkit.data.class_index import read_class_index
from ditkit.data.imagefolder import ImageFolderDataset, scan_image_folder
from ditkit.errors import UserError


def make_image_folder(root: Path, per_class: int = 3, corrupt: bool = False) -> Path:
    """Two classes of random 24x20 images (mixed modes and suffixes); optionally two broken files."""
    rng = np.random.default_rng(0)
    for name in ("dog", "cat"):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
            image = Image.fromarray(pixels)
            if i == 1:
                image.convert("RGBA").save(folder / f"{i}.PNG")
            else:
                image.save(folder / f"{i}.jpg", quality=95)
    (root / "cat" / "notes.txt").write_text("ignored: not an image suffix")
    (root / "cat" / ".hidden.jpg").write_text("ignored: hidden")
    if corrupt:
        good = (root / "dog" / "0.jpg").read_bytes()
        (root / "dog" / "1a_truncated.jpg").write_bytes(good[: len(good) // 3])
        (root / "dog" / "1b_text.png").write_text("this is not a png")
    return root


def test_scan_sorted_classes_and_files(tmp_path):
    root = make_image_folder(tmp_path / "data")
    classes, samples = scan_image_folder(root)
    assert classes == ("cat", "dog")  # sorted, so "cat" is label 0
    names = [(p.parent.name, p.name, label) for p, label in samples]
    assert names == [
        ("cat", "0.jpg", 0),
        ("cat", "1.PNG", 0),
        ("cat", "2.jpg", 0),
        ("dog", "0.jpg", 1),
        ("dog", "1.PNG", 1),
        ("dog", "2.jpg", 1),
    ]


def test_items_and_class_index(tmp_path):
    root = make_image_folder(tmp_path / "data")
    dataset = ImageFolderDataset(root, 16, flip="none")
    assert len(dataset) == 6 and dataset.num_classes == 2
    image, label = dataset[4]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32 and label == 1
    assert -1.0 <= image.min() and image.max() <= 1.0
    written = dataset.write_class_index(tmp_path / "run")  # a missing folder is a file path...
    assert json.loads(written.read_text()) == {"cat": 0, "dog": 1}
    (tmp_path / "run_dir").mkdir()
    written = dataset.write_class_index(tmp_path / "run_dir")  # ...an existing folder gets class_index.json
    assert written.name == "class_index.json"
    assert read_class_index(tmp_path / "run_dir") == ("cat", "dog")
    grey = ImageFolderDataset(root, 8, channels=1, flip="none")[0][0]
    assert grey.shape == (1, 8, 8)


def test_flips_depend_only_on_seed_epoch_index(tmp_path):
    root = make_image_folder(tmp_path / "data")
    plain = ImageFolderDataset(root, 16, flip="none")
    flipping = ImageFolderDataset(root, 16, seed=3)
    again = ImageFolderDataset(root, 16, seed=3)
    flips = []
    for epoch in range(8):
        flipping.set_epoch(epoch)
        again.set_epoch(epoch)
        for i in range(len(plain)):
            x, _ = flipping[i]
            torch.testing.assert_close(x, again[i][0])
            if torch.equal(x, plain[i][0]):
                flips.append(False)
            else:
                torch.testing.assert_close(x, plain[i][0].flip(-1))
                flips.append(True)
    assert 0.25 < np.mean(flips) < 0.75  # 48 fair coins
    first_epoch = flips[:6]
    assert any(flips[6 * e : 6 * e + 6] != first_epoch for e in range(1, 8))  # epochs differ


def test_corrupt_files_are_skipped_and_reported(tmp_path, caplog):
    root = make_image_folder(tmp_path / "data", corrupt=True)
    dataset = ImageFolderDataset(root, 16, flip="none")
    names = [p.name for p, _ in dataset.samples]
    bad = [names.index("1a_truncated.jpg"), names.index("1b_text.png")]
    with caplog.at_level(logging.WARNING, logger="ditkit.data.pixel_dataset"):
        items = [dataset[i] for i in range(len(dataset))]
    assert len(dataset.skipped) == 2
    assert sum("skipping unreadable image" in r.message for r in caplog.records) == 2
    # Each bad item is replaced by the next readable one (here dog/2.jpg), label included.
    replacement = names.index("2.jpg", bad[1])
    for i in bad:
        torch.testing.assert_close(items[i][0], items[replacement][0])
        assert items[i][1] == items[replacement][1]


def test_all_unreadable_raises(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.jpg").write_text("nope")
    with pytest.raises(UserError, match="no image"):
        ImageFolderDataset(tmp_path, 8)[0]


@pytest.mark.parametrize("layout", ["missing", "flat", "empty-class"])
def test_bad_layouts_raise_user_errors(tmp_path, layout):
    root = tmp_path / "data"
    if layout != "missing":
        root.mkdir()
        Image.new("RGB", (8, 8)).save(root / "loose.png")
    if layout == "empty-class":
        (root / "cls").mkdir()
    with pytest.raises(UserError):
        ImageFolderDataset(root, 8)


def test_bad_options_raise(tmp_path):
    root = make_image_folder(tmp_path / "data")
    with pytest.raises(UserError, match="flip"):
        ImageFolderDataset(root, 8, flip="sometimes")
    with pytest.raises(UserError, match="channels"):
        ImageFolderDataset(root, 8, channels=4)


def test_build_dataset_on_an_image_folder(tmp_path):
    root = make_image_folder(tmp_path / "data")
    dataset, info = build_dataset(str(root), image_size=16)
    assert info.kind == "image-folder" and info.num_classes == 2 and info.class_names == ("cat", "dog")
    assert (info.channels, info.input_size, info.image_size, info.first_stage) == (3, 16, 16, None)
    assert info.num_items == len(dataset) == 6
    assert json.loads(json.dumps(info.to_dict()))["class_names"] == ["cat", "dog"]
    with pytest.raises(UserError, match="not found"):
        build_dataset(str(tmp_path / "nowhere"))
