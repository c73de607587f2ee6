"""ADM-layout npz batches: streaming reads, greyscale, reference statistics, labels, and clear errors."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
from helpers import assert_junk_and_missing_files_rejected

from ditkit.errors import UserError
from ditkit.evaluation.npz_io import (
    STATS_SHAPES,
    NpzImages,
    read_labels,
    read_npz,
    read_reference_stats,
    write_npz,
    write_npz_streamed,
    write_reference,
)


def images(n=10, h=6, w=5, c=3, seed=0):
    shape = (n, h, w) if c is None else (n, h, w, c)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def fake_stats(seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(shape) for k, shape in STATS_SHAPES.items()}


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
@pytest.mark.parametrize("batch_size", [1, 3, 10, 64])
def test_streamed_batches_equal_the_array(tmp_path, save, batch_size):
    arr = images()
    save(tmp_path / "s.npz", arr_0=arr)
    reader = NpzImages(tmp_path / "s.npz")
    assert len(reader) == 10 and reader.image_shape == (6, 5, 3)
    batches = list(reader.batches(batch_size))
    assert all(len(b) <= batch_size for b in batches)
    assert np.array_equal(np.concatenate(batches), arr)
    assert np.array_equal(np.concatenate(list(reader.batches(batch_size, limit=4))), arr[:4])


@pytest.mark.parametrize("c", [None, 1])
def test_greyscale_is_broadcast_to_rgb(tmp_path, c):
    arr = images(c=c)
    np.savez(tmp_path / "g.npz", arr_0=arr)
    out = np.concatenate(list(NpzImages(tmp_path / "g.npz").batches(4)))
    grey = arr if c is None else arr[..., 0]
    assert out.shape == (10, 6, 5, 3) and all(np.array_equal(out[..., i], grey) for i in range(3))


def test_images_key_is_read_when_there_is_no_arr_0(tmp_path):
    arr = images()
    np.savez(tmp_path / "demo.npz", images=arr[..., 0], labels=np.arange(10))  # as `ditkit demo` writes
    assert np.array_equal(
        np.concatenate(list(NpzImages(tmp_path / "demo.npz").batches(4)))[..., 2], arr[..., 0]
    )
    np.savez(tmp_path / "both.npz", arr_0=arr, images=arr[:2])
    assert len(NpzImages(tmp_path / "both.npz")) == 10


def test_fortran_ordered_array_is_read_correctly(tmp_path):
    arr = np.asfortranarray(images())
    np.savez(tmp_path / "f.npz", arr_0=arr)
    assert np.array_equal(np.concatenate(list(NpzImages(tmp_path / "f.npz").batches(3))), arr)


def test_bad_files_are_clear_errors(tmp_path):
    assert_junk_and_missing_files_rejected(NpzImages, tmp_path, ".npz", "not a readable .npz", "no such file")
    np.savez(tmp_path / "nokey.npz", pictures=images())
    with pytest.raises(UserError, match="no .arr_0. array .*holds pictures"):
        NpzImages(tmp_path / "nokey.npz")
    np.savez(tmp_path / "float.npz", arr_0=images().astype(np.float32) / 255)
    with pytest.raises(UserError, match="float32, expected uint8"):
        NpzImages(tmp_path / "float.npz")
    np.savez(tmp_path / "shape.npz", arr_0=images(c=4))
    with pytest.raises(UserError, match=r"shape \(10, 6, 5, 4\)"):
        NpzImages(tmp_path / "shape.npz")
    np.savez(tmp_path / "empty.npz", arr_0=np.zeros((0, 4, 4, 3), np.uint8))
    with pytest.raises(UserError, match="no images"):
        NpzImages(tmp_path / "empty.npz")


def test_truncated_file_is_a_clear_error(tmp_path):
    np.savez(tmp_path / "t.npz", arr_0=images(n=50, h=32, w=32))
    data = (tmp_path / "t.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="not a readable .npz|truncated|corrupt"):
        list(NpzImages(tmp_path / "cut.npz").batches(8))


def test_corrupted_compressed_data_is_a_clear_error(tmp_path):
    np.savez_compressed(tmp_path / "c.npz", arr_0=images(n=50, h=32, w=32))
    data = bytearray((tmp_path / "c.npz").read_bytes())
    with zipfile.ZipFile(tmp_path / "c.npz") as zf:
        info = zf.getinfo("arr_0.npy")
    middle = info.header_offset + 30 + len(info.filename) + info.compress_size // 2
    data[middle : middle + 64] = bytes(64)
    (tmp_path / "bad.npz").write_bytes(bytes(data))
    with pytest.raises(UserError, match="corrupt|not a readable"):
        list(NpzImages(tmp_path / "bad.npz").batches(8))


def test_reference_round_trip_and_stats(tmp_path):
    stats = fake_stats()
    write_reference(tmp_path / "ref.npz", images(), stats)
    assert not list(tmp_path.glob(".*tmp*")) and (tmp_path / "ref.npz").exists()
    got = read_reference_stats(tmp_path / "ref.npz")
    assert got is not None and all(np.array_equal(got[k], stats[k]) for k in STATS_SHAPES)
    assert np.array_equal(np.concatenate(list(NpzImages(tmp_path / "ref.npz").batches(4))), images())
    np.savez(tmp_path / "plain.npz", arr_0=images())
    assert read_reference_stats(tmp_path / "plain.npz") is None  # ADM batches without stats are fine


def test_partial_or_mismatched_stats_are_clear_errors(tmp_path):
    stats = fake_stats()
    np.savez(tmp_path / "partial.npz", arr_0=images(), mu=stats["mu"], sigma=stats["sigma"])
    with pytest.raises(UserError, match="not mu_s, sigma_s"):
        read_reference_stats(tmp_path / "partial.npz")
    stats["mu_s"] = np.zeros(2048)  # pool-sized spatial mean: wrong network/layer
    np.savez(tmp_path / "wrong.npz", arr_0=images(), **stats)
    with pytest.raises(UserError, match=r"mu_s has shape \(2048,\), expected \(2023,\)"):
        read_reference_stats(tmp_path / "wrong.npz")
    stats = fake_stats()
    stats["sigma"][0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", arr_0=images(), **stats)
    with pytest.raises(UserError, match="NaN"):
        read_reference_stats(tmp_path / "nan.npz")


def test_labels_from_labels_or_arr_1(tmp_path):
    labels = np.arange(10) % 3
    np.savez(tmp_path / "a.npz", arr_0=images(), labels=labels)
    np.savez(tmp_path / "b.npz", images(), labels)  # ADM's sampler: arr_0, arr_1
    np.savez(tmp_path / "c.npz", arr_0=images())
    assert np.array_equal(read_labels(tmp_path / "a.npz"), labels)
    assert np.array_equal(read_labels(tmp_path / "b.npz"), labels)
    assert read_labels(tmp_path / "c.npz") is None
    np.savez(tmp_path / "d.npz", arr_0=images(), labels=labels.astype(np.float32))
    with pytest.raises(UserError, match="integer class labels"):
        read_labels(tmp_path / "d.npz")


def test_written_batches_have_one_layout_and_both_are_read(tmp_path):
    arr, labels = images(c=None), np.arange(10, dtype=np.int32) % 3
    write_npz(tmp_path / "s.npz", arr, labels)
    with np.load(tmp_path / "s.npz") as npz:
        assert npz.files == ["arr_0", "labels"] and npz["labels"].dtype == np.int64
    got, got_labels = read_npz(tmp_path / "s.npz")
    assert np.array_equal(got, arr) and np.array_equal(got_labels, labels)
    np.savez(tmp_path / "old.npz", images=arr, labels=labels)  # as `ditkit demo` wrote them before
    got, got_labels = read_npz(tmp_path / "old.npz")
    assert np.array_equal(got, arr) and np.array_equal(got_labels, labels)
    write_npz(tmp_path / "u.npz", arr)
    assert read_npz(tmp_path / "u.npz")[1] is None


def test_streamed_writing_gives_the_file_of_the_whole_array(tmp_path):
    arr, labels = images(n=7), np.arange(7)
    parts = [(arr[:3], labels[:3]), (arr[3:], labels[3:])]
    write_npz_streamed(tmp_path / "s.npz", arr.shape, parts)
    write_npz(tmp_path / "w.npz", arr, labels)
    with np.load(tmp_path / "s.npz") as a, np.load(tmp_path / "w.npz") as b:
        assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)
    with pytest.raises(ValueError, match="3 images were written"):
        write_npz_streamed(tmp_path / "short.npz", arr.shape, parts[:1])
    assert not (tmp_path / "short.npz").exists()
