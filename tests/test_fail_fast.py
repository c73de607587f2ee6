"""Bad inputs fail in one line before any model is built, any VAE loaded or the network touched.

The `no_loading` fixture makes loading a first stage or opening a connection fail the test, so each
case proves that its check comes first.
"""

from __future__ import annotations

import json
import socket

import pytest
from test_data_imagefolder import make_image_folder

from ditkit import hub
from ditkit.cli.main import main
from ditkit.errors import UserError
from ditkit.first_stage import load as first_stage_load
from ditkit.first_stage.load import load_first_stage


@pytest.fixture
def no_loading(monkeypatch):
    """Any first-stage load or network connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"loaded or connected before the cheap checks: {args}")

    monkeypatch.setattr(first_stage_load, "load_first_stage", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _fails_in_one_line(argv, capsys, message):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert message in err, err
    return err


def _train(tmp_path, *extra):
    folder = make_image_folder(tmp_path / "images", per_class=1)
    return ["train", "--data", str(folder), "--steps", "1", "--out", str(tmp_path / "run"), *extra]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model", "DiT-Q/9"], "unknown model 'DiT-Q/9'"),
        (["--model", "DiT-S/2", "--image-size", "36"], "not a multiple of 8"),  # the SD VAE's factor
        (["--model", "DiT-S/4", "--image-size", "72"], "not a multiple of the patch size 4"),  # 9x9 latents
        (["--model", "DiT-S/2", "--set", "colour=blue"], "unknown field(s) colour"),
        (["--model", "DiT-S/2", "--first-stage", "no/such/vae/here"], "unknown first stage"),
    ],
)
def test_train_checks_before_loading_the_vae(tmp_path, capsys, no_loading, extra, message):
    _fails_in_one_line(_train(tmp_path, *extra), capsys, message)


def test_train_checks_resume_options_before_building(tmp_path, capsys, no_loading):
    checkpoint = tmp_path / "run" / "checkpoints" / "0000004"
    checkpoint.mkdir(parents=True)
    (checkpoint / "train_state.pt").write_bytes(b"")  # never read: the options differ first
    saved = {"model": "DiT-S/2", "lr": 0.5, "seed": 0}
    (checkpoint / "config.json").write_text(json.dumps({"extra": {"train": {"config": saved}}}))
    argv = _train(tmp_path, "--model", "DiT-S/2", "--resume")
    _fails_in_one_line(argv, capsys, "it was trained with --lr 0.5 (now 0.0001)")


@pytest.mark.parametrize(
    ("source", "extra", "message"),
    [
        ("missing", [], "'{tmp}/missing' not found"),
        ("mnist", [], "did you mean 'fashion-mnist'?"),
        ("images", ["--image-size", "30"], "not a multiple of 8"),
    ],
)
def test_prepare_checks_before_loading_the_vae(tmp_path, capsys, no_loading, source, extra, message):
    make_image_folder(tmp_path / "images", per_class=1)
    spec = source if source == "mnist" else str(tmp_path / source)
    argv = ["prepare", spec, "--out", str(tmp_path / "cache"), *extra]
    _fails_in_one_line(argv, capsys, message.format(tmp=tmp_path))
    assert not (tmp_path / "cache").exists()


def test_prepare_api_checks_options_before_loading(tmp_path, no_loading):
    from ditkit.data.cache_writer import prepare_dataset

    folder = make_image_folder(tmp_path / "images", per_class=1)
    with pytest.raises(UserError, match="--batch-size and --shard-size must be positive"):
        prepare_dataset(str(folder), tmp_path / "cache", batch_size=0)  # the CLI refuses 0 when parsing
    assert not (tmp_path / "cache").exists()


def test_unreachable_hub_is_one_line_without_retries(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: refused at once
    calls = []
    real = socket.create_connection
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: calls.append(a) or real(*a, **k))
    hub._probe.cache_clear()
    folder = make_image_folder(tmp_path / "images", per_class=1)
    argv = ["prepare", str(folder), "--out", str(tmp_path / "c"), "--first-stage", "ditkit-tests/no-such-vae"]
    err = _fails_in_one_line(argv, capsys, "hub is out of reach (cannot connect to 127.0.0.1:9")
    assert "local VAE folder" in err
    with pytest.raises(UserError, match="out of reach"):
        load_first_stage("ditkit-tests/no-such-vae")
    assert len(calls) == 1  # found out once per process
    hub._probe.cache_clear()


def test_hub_offline_flag_needs_no_probe(monkeypatch, no_loading):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.hub_unreachable_reason() == "HF_HUB_OFFLINE is set"
