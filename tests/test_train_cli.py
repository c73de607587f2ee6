"""`ditkit train` from the command line: a tiny run, overrides, and one-line errors."""

from __future__ import annotations

import json

import pytest
from helpers import write_fake_fmnist

from ditkit.cli.main import main

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _args(tmp_path, *extra):
    data = tmp_path / "fmnist"
    if not data.exists():
        write_fake_fmnist(data)
    base = [
        "train",
        "--model",
        "DiT-T/2",
        "--data",
        "fashion-mnist",
        "--data-dir",
        str(data),
        "--image-size",
        "8",
    ]
    base += ["--global-batch", "8", "--device", "cpu", "--no-progress", "--out", str(tmp_path / "run")]
    return [*base, *extra]


def test_cli_trains_a_tiny_model_with_overrides(tmp_path, capsys):
    code = main(
        _args(tmp_path, "--steps", "2", "--set", "depth=1", "--set", "block=in-context", "--no-learn-sigma")
    )
    assert code == 0
    assert "trained 2 steps" in capsys.readouterr().out
    config = json.loads((tmp_path / "run" / "checkpoints" / "0000002" / "config.json").read_text())["config"]
    assert config["depth"] == 1 and config["block"] == "in-context" and config["learn_sigma"] is False
    saved = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert saved["model_overrides"] == {"depth": 1, "block": "in-context"}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "exactly one of --steps and --epochs"),
        (["--steps", "2", "--global-batch", "7", "--micro-batch", "2"], "--micro-batch 2"),
        (["--steps", "2", "--set", "hidden_size=33"], "not divisible"),
        (["--steps", "2", "--set", "hidden_size=30"], "divisible by 4"),
        (["--steps", "2", "--set", "colour=blue"], "invalid model options"),
        (["--steps", "2", "--resume", "/nonexistent/run"], "no training checkpoint"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, capsys, extra, message):
    assert main(_args(tmp_path, *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_cli_help_shows_examples(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert "torchrun" in text and "--resume" in text and "--global-batch" in text
