"""The sampling flags of `ditkit sample`, `walk` and `serve`: one set, generated from `SamplingSettings`,
and a checkpoint's recorded settings as the defaults when none is given (issue 25)."""

import json

import pytest
from helpers import sampling_dit

from ditkit.checkpoints import save_model
from ditkit.cli.main import build_parser, main
from ditkit.generation.sharded import MANIFEST_FILE

IDENTITY = {"first_stage": {"kind": "identity", "channels": 1}}
# What a run records as the settings it was evaluated with, and the flags that ask for the same.
RECORDED = {"sampler": "ddim", "steps": 3, "guidance_scale": 2.0, "seed": 4}
FLAGS = ["--sampler", "ddim", "--steps", "3", "--cfg-scale", "2", "--seed", "4"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """The same weights saved twice: plain, and recording the sampling settings it was evaluated with."""
    root = tmp_path_factory.mktemp("ckpts")
    model = sampling_dit()
    save_model(model, root / "plain", extra=IDENTITY)
    save_model(model, root / "recorded", extra={**IDENTITY, "sampling": RECORDED})
    return root / "plain", root / "recorded"


@pytest.mark.parametrize("command", ["sample", "walk", "serve"])
def test_every_sampling_command_has_the_same_generated_flags(command):
    sub = build_parser()._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]
    flags = {f for a in sub._actions for f in a.option_strings}
    assert {"--sampler", "--steps", "--guidance-scale", "--cfg-scale", "--guided-channels"} <= flags
    assert {"--guidance-interval", "--eta", "--seed"} <= flags


def test_both_spellings_of_the_guidance_scale_set_one_field():
    parser = build_parser()
    for flag in ("--guidance-scale", "--cfg-scale"):
        args = parser.parse_args(["sample", "ckpt", flag, "1.5"])
        assert args.guidance_scale == 1.5 and not hasattr(args, "cfg_scale")


def test_a_bad_sampling_value_is_one_line_before_loading(tmp_path, capsys):
    assert main(["sample", str(tmp_path / "absent"), "--steps", "0"]) == 2
    err = capsys.readouterr().err
    assert err == "error: steps must be a whole number of at least 1, got 0\n"


def _sample(ckpt, out, *flags):
    argv = ["sample", str(ckpt), "--class", "1", "--class", "7", "--num-per-class", "2", "--out", str(out)]
    assert main([*argv, *flags, "--quiet"]) == 0
    return (out / "grid.png").read_bytes(), json.loads((out / "samples.json").read_text())["settings"]


def test_sample_without_flags_uses_the_recorded_settings(checkpoints, tmp_path):
    plain, recorded = checkpoints
    grid, settings = _sample(recorded, tmp_path / "recorded")
    same_grid, same_settings = _sample(plain, tmp_path / "flags", *FLAGS)
    assert grid == same_grid
    del settings["checkpoint"], same_settings["checkpoint"]
    assert settings == same_settings and settings["seed"] == 4 and settings["num_steps"] == 3
    # a flag given still wins over the record
    changed, _ = _sample(recorded, tmp_path / "changed", "--cfg-scale", "1")
    assert changed != grid


def test_sample_without_a_record_keeps_todays_defaults(checkpoints, tmp_path):
    plain, _ = checkpoints
    _, settings = _sample(plain, tmp_path / "plain", "--sampler", "ddim", "--steps", "2")
    assert (
        settings["guidance_scale"] == 4.0 and settings["seed"] == 0 and settings["guided_channels"] == "all"
    )


def _walk(ckpt, out, *flags):
    argv = [
        "walk",
        str(ckpt),
        "--mode",
        "noise",
        "--class",
        "3",
        "--seed",
        "0",
        "--seed",
        "1",
        "--frames",
        "2",
    ]
    assert main([*argv, "--out", str(out), *flags, "--quiet"]) == 0
    return (out / "noise_walk_grid.png").read_bytes()


def test_walk_without_flags_keeps_a_recorded_deterministic_sampler(checkpoints, tmp_path):
    plain, recorded = checkpoints
    walk_flags = [f for f in FLAGS if f not in ("--seed", "4")]  # a walk's --seed is its path
    assert _walk(recorded, tmp_path / "recorded") == _walk(plain, tmp_path / "flags", *walk_flags)


def test_walk_without_a_record_walks_with_ddim_and_guidance_4(checkpoints, tmp_path):
    plain, _ = checkpoints
    default = _walk(plain, tmp_path / "default", "--steps", "3")
    assert default == _walk(
        plain, tmp_path / "named", "--sampler", "ddim", "--steps", "3", "--cfg-scale", "4"
    )


def _fid(ckpt, out, *flags):
    argv = ["sample", str(ckpt), "--num", "2", "--shard-size", "2", "--fid-out", str(out), "--quiet"]
    assert main([*argv, "--sampler", "ddim", "--steps", "2", *flags]) == 0
    return json.loads((out / MANIFEST_FILE).read_text())["settings"]


def test_fid_mode_guides_at_1_5_unless_a_scale_is_given_or_recorded(checkpoints, tmp_path):
    plain, recorded = checkpoints
    assert _fid(plain, tmp_path / "plain")["guidance_scale"] == 1.5  # the paper's best FID
    assert _fid(plain, tmp_path / "given", "--guidance-scale", "3")["guidance_scale"] == 3.0
    assert _fid(recorded, tmp_path / "recorded")["guidance_scale"] == 2.0
