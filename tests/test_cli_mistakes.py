"""A new user's mistakes get one line naming the problem and the fix, before any work (issue 28)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import sampling_dit, write_fake_fmnist

from ditkit.checkpoints import save_model
from ditkit.cli.main import main

IDENTITY = {"first_stage": {"kind": "identity", "channels": 1}}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    save_model(sampling_dit(), path, extra=IDENTITY)
    return path


def _one_line(argv, capsys, message, code=2):
    assert main([str(a) for a in argv]) == code
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert message in err, err
    return err


@pytest.mark.parametrize("command", ["evaluate", "walk", "serve"])
def test_cuda_without_a_gpu_is_one_line(command, checkpoint, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    if command == "evaluate":
        samples = tmp_path / "s.npz"
        np.savez(samples, np.zeros((4, 28, 28, 1), np.uint8))
        argv = ["evaluate", samples, "--fashion-mnist", "--device", "cuda"]
    else:
        argv = [command, checkpoint, "--device", "cuda"] + (["--mode", "noise"] if command == "walk" else [])
    _one_line(argv, capsys, "--device cuda was asked for but no GPU is visible; use --device cpu")


def _forbid_loading(monkeypatch):
    from ditkit.generation import pipeline

    def refuse(*args, **kwargs):
        raise AssertionError("loaded the model before checking --out")

    monkeypatch.setattr(pipeline.DiTPipeline, "from_pretrained", refuse)


@pytest.mark.parametrize(
    ("extra", "flag"),
    [
        (["--out", "{file}"], "--out"),
        (["--out", "{file}/grid"], "--out"),
        (["--num", "4", "--fid-out", "{file}"], "--fid-out"),
    ],
)
def test_sample_refuses_a_file_as_output_folder_before_sampling(
    extra, flag, checkpoint, tmp_path, capsys, monkeypatch
):
    _forbid_loading(monkeypatch)
    afile = tmp_path / "afile"
    afile.write_text("x")
    argv = ["sample", checkpoint, "--steps", "2", *(e.format(file=afile) for e in extra)]
    _one_line(argv, capsys, f"{flag} {afile}")


def test_walk_refuses_a_file_as_output_folder_before_sampling(checkpoint, tmp_path, capsys, monkeypatch):
    _forbid_loading(monkeypatch)
    afile = tmp_path / "afile"
    afile.write_text("x")
    _one_line(["walk", checkpoint, "--mode", "noise", "--out", afile], capsys, "is a file; name a folder")


def test_train_refuses_a_file_as_out(tmp_path, capsys):
    data = write_fake_fmnist(tmp_path / "fmnist")
    afile = tmp_path / "afile"
    afile.write_text("x")
    argv = ["train", "--model", "DiT-T/2", "--data", "fashion-mnist", "--data-dir", data, "--image-size", "8"]
    argv += ["--steps", "1", "--global-batch", "8", "--device", "cpu", "--out", afile]
    _one_line(argv, capsys, f"--out {afile} is a file")


def test_convert_refuses_a_file_name_it_would_make_a_folder_of(checkpoint, tmp_path, capsys):
    dst = tmp_path / "out.pt"
    _one_line(["convert", checkpoint, dst], capsys, "not a .pt file; name a folder")
    assert not dst.exists()
    _one_line(
        ["convert", checkpoint, tmp_path / "x.safetensors", "--to", "diffusers"], capsys, "writes a folder"
    )


def test_convert_does_not_overwrite_without_a_word(checkpoint, tmp_path, capsys):
    dst = tmp_path / "out"
    assert main(["convert", str(checkpoint), str(dst)]) == 0
    before = {p.name: p.stat().st_mtime_ns for p in dst.iterdir()}
    capsys.readouterr()
    _one_line(["convert", checkpoint, dst], capsys, "already exists; choose a new name, or pass --overwrite")
    assert {p.name: p.stat().st_mtime_ns for p in dst.iterdir()} == before
    _one_line(["convert", dst, dst, "--overwrite"], capsys, "is the checkpoint being converted")
    assert main(["convert", str(checkpoint), str(dst), "--overwrite"]) == 0


def test_an_interrupted_run_says_how_to_continue_and_exits_non_zero(tmp_path, capsys, monkeypatch):
    """Ctrl+C (the trainer saved a checkpoint first): the status is 130 and the line names --resume."""
    import ditkit.training
    from ditkit.training.result import TrainResult

    out = tmp_path / "run"

    def interrupted(config, resume=None, progress=True):
        return TrainResult(out, 3, 10, out / "checkpoints" / "0000003", "SIGINT", None, 1.0, 3.0)

    monkeypatch.setattr(ditkit.training, "train", interrupted)
    argv = ["train", "--model", "DiT-T/2", "--data", "fashion-mnist", "--steps", "10", "--out", str(out)]
    assert main(argv) == 130
    said = capsys.readouterr().out
    assert f"continue with: ditkit train --out {out} --resume" in said


def test_a_negative_guidance_scale_is_refused(checkpoint, capsys):
    _one_line(["sample", checkpoint, "--guidance-scale", "-1"], capsys, "guidance")


def test_a_negative_preview_guidance_scale_is_refused_before_any_work(tmp_path, capsys):
    argv = ["train", "--out", str(tmp_path / "run"), "--steps", "1", "--sample-guidance-scale", "-1"]
    _one_line(argv, capsys, "--sample-guidance-scale must be 0 or more")


@pytest.mark.parametrize("content", [b"hello\n", b""])
def test_a_text_file_as_checkpoint_says_what_it_is(content, tmp_path, capsys):
    path = tmp_path / "notes.pt"
    path.write_bytes(content)
    err = _one_line(["sample", path], capsys, f"{path} is not a PyTorch checkpoint")
    assert "(101)" not in err and ("text file" in err or "empty" in err)


def test_a_switch_shows_no_default_in_help(capsys):
    with pytest.raises(SystemExit):
        main(["sample", "--help"])
    assert "(default: True)" not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["walk", "ckpt", "--mode", "seed"], "invalid choice: 'seed'"),
        (["sample"], "give a checkpoint"),
        (["sample", "ckpt", "--steps", "many"], "invalid"),
        (["train", "--out", "x", "--globl-batch", "8"], "did you mean --global-batch?"),
    ],
)
def test_argparse_errors_are_one_line_pointing_to_help(argv, message, capsys):
    try:
        code = main(argv)
    except SystemExit as stop:
        code = stop.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "usage:" not in err and message in err, err
    if message != "give a checkpoint":
        assert f"see `ditkit {argv[0]} --help`" in err


def test_counts_read_right_for_one(tmp_path, checkpoint, capsys):
    from ditkit.errors import UserError
    from ditkit.training.data_order import BatchLayout

    with pytest.raises(UserError) as err:
        BatchLayout.create(8, 1, 3)
    assert "processes" not in str(err.value)
    assert main(["walk", str(checkpoint), "--mode", "noise", "--class", "1", "--seed", "0", "--seed", "1",
                 "--frames", "2", "--steps", "2", "--out", str(tmp_path / "w")]) == 0  # fmt: skip
    assert "1 strip and 1 GIF" in capsys.readouterr().out


def test_a_study_without_description_has_no_empty_line():
    from ditkit.study.results import markdown
    from ditkit.study.spec import spec_from_dict

    spec = spec_from_dict(
        {"name": "one", "base": {"model": "DiT-T/2", "steps": 2}, "axes": {"lr": [1e-3]}}, "test"
    )
    page = markdown(spec, spec.runs(), [], [])
    assert "\n\n\n" not in page and "1 run (" in page


# One name per concept across the subcommands; the old spelling parses, hidden, for one release.
SAME_CONCEPT = [
    ("sample", "--num-samples", "--num", "num"),
    ("study", "--num-samples", "--samples", "samples"),
    ("reference", "--num-samples", "--num-images", "num_images"),
    ("reference", "--image-size", "--resolution", "image_size"),
    ("demo", "--num-per-class", "--per-class", "per_class"),
    ("sample", "--num-per-class", None, "num_per_class"),
    ("train", "--sample-guidance-scale", "--sample-cfg-scale", "sample_guidance_scale"),
]


@pytest.mark.parametrize(("command", "flag", "old", "dest"), SAME_CONCEPT)
def test_one_name_per_concept_old_spelling_hidden(command, flag, old, dest, capsys):
    from ditkit.cli.main import build_parser

    parser = build_parser()
    base = {
        "sample": ["ckpt"],
        "study": ["guidance"],
        "reference": ["--fashion-mnist", "--out", "r.npz"],
        "train": ["--out", "run"],
    }
    for spelling in filter(None, (flag, old)):
        args = parser.parse_args([command, *base.get(command, []), spelling, "7"])
        assert getattr(args, dest) == 7
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    assert flag in text
    if old is not None:
        assert f"{old} " not in text and f"{old}\n" not in text and f"{old}," not in text


def test_a_run_folder_recorded_with_the_old_name_still_loads():
    """train_config.json files written before the rename keep their preview guidance scale; given again
    under the new name on resume, the new value wins (issue 28, item 10)."""
    from ditkit.training.config import TrainConfig, resumed_config

    old = {**TrainConfig(out="run", steps=3).to_dict(), "sample_cfg_scale": 2.5}
    del old["sample_guidance_scale"]
    assert TrainConfig.from_dict(old).sample_guidance_scale == 2.5
    assert resumed_config(old, {"sample_guidance_scale": 6.0}).sample_guidance_scale == 6.0


def test_a_required_flag_shows_no_default(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    out_help = text[text.index("  --out OUT") :].split("\n  --")[0]
    assert "default" not in out_help


# ---- dead ends offline (issue 28, item 11) ----------------------------------------------------------------


def test_models_at_a_pixel_size_names_the_pixel_space_flags(capsys):
    _one_line(["models", "--image-size", "28"], capsys, "--downsample 1 --in-channels 1")


def test_a_vae_out_of_reach_names_the_pixel_space_option(monkeypatch):
    from ditkit import hub
    from ditkit.errors import UserError
    from ditkit.first_stage import sd_vae

    def not_cached(repo, local_files_only):
        raise OSError("not in the cache")

    monkeypatch.setattr(sd_vae, "_hub_pretrained", not_cached)
    monkeypatch.setattr(hub, "hub_unreachable_reason", lambda: "HF_HUB_OFFLINE is set")
    with pytest.raises(UserError, match="--first-stage identity") as err:
        sd_vae._from_hub("stabilityai/sd-vae-ft-ema")
    assert "\n" not in str(err.value)


def test_the_readme_says_where_the_official_model_comes_from():
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    first_use = readme.index("DiT-XL-2-256x256.pt")
    assert (
        "https://dl.fbaipublicfiles.com/DiT/models/DiT-XL-2-256x256.pt"
        in readme[first_use - 200 : first_use + 400]
    )
