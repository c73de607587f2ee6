"""`ditkit prepare` from the command line."""

from __future__ import annotations

import numpy as np
import pytest
from test_data_fashion import make_fashion_idx
from test_data_imagefolder import make_image_folder
from test_first_stage import save_tiny_vae

from ditkit.cli.main import main
from ditkit.data.latent_cache import LatentCacheDataset, read_manifest


def test_prepare_fashion_mnist_identity(tmp_path, capsys):
    data = make_fashion_idx(tmp_path / "fm", n=10)
    out = tmp_path / "cache"
    argv = ["prepare", "fashion-mnist", "--data", str(data), "--out", str(out), "--shard-size", "4"]
    assert main([*argv, "--limit", "9", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "9 images in 3 shards, 0 unreadable skipped" in printed
    cache = LatentCacheDataset(out)
    assert len(cache) == 9 and cache.latent_shape == (1, 32, 32) and cache.num_classes == 10
    assert read_manifest(out)["config"]["first_stage"] == {"kind": "identity", "channels": 1}


def test_prepare_with_a_vae_folder_converts_greyscale_to_rgb(tmp_path, capsys):
    save_tiny_vae(tmp_path / "vae")
    data = make_fashion_idx(tmp_path / "fm", n=3)
    out = tmp_path / "cache"
    argv = [
        "prepare",
        "fashion-mnist",
        "--data",
        str(data),
        "--out",
        str(out),
        "--first-stage",
        str(tmp_path / "vae"),
    ]
    assert main([*argv, "--device", "cpu", "--no-progress"]) == 0
    cache = LatentCacheDataset(out)
    assert cache.latent_shape == (4, 16, 16) and read_manifest(out)["config"]["channels"] == 3
    assert np.load(out / "shard_00000.std.npy").shape == (3, 2, 4, 16, 16)


def test_prepare_reports_corrupt_images(tmp_path, capsys):
    root = make_image_folder(tmp_path / "images", corrupt=True)
    argv = ["prepare", str(root), "--out", str(tmp_path / "cache"), "--first-stage", "identity"]
    assert main([*argv, "--image-size", "16", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "6 images in 1 shard, 2 unreadable skipped" in printed
    assert "1a_truncated.jpg" in printed and "1b_text.png" in printed


def test_prepare_errors_are_one_line(tmp_path, capsys):
    assert (
        main(
            ["prepare", str(tmp_path / "missing"), "--out", str(tmp_path / "c"), "--first-stage", "identity"]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert not (tmp_path / "c").exists()


def test_prepare_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare", "--help"])
    assert exit_info.value.code == 0
    assert "examples:" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("mnist", "dataset 'mnist' not found: no such folder (did you mean 'fashion-mnist'?)"),
        ("{npz}", "is a file, not a dataset ditkit reads; pass 'fashion-mnist', an image folder"),
    ],
)
def test_a_bad_source_is_named_before_any_first_stage_loads(tmp_path, capsys, monkeypatch, source, message):
    """Issue 16 items 3 and 12: the real problem first, without loading (or downloading) the VAE."""
    import ditkit.first_stage.load as load

    def no_network(*args, **kwargs):
        raise AssertionError("the first stage must not load before the source is checked")

    monkeypatch.setattr(load, "load_first_stage", no_network)
    npz = tmp_path / "samples.npz"
    npz.write_bytes(b"x")
    assert main(["prepare", source.format(npz=npz), "--out", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not (tmp_path / "cache").exists()
