"""DiTPipeline: outputs, seeds, names, loading from checkpoints, bf16, errors, and `ditkit sample`."""

import json

import numpy as np
import pytest
import torch
from helpers import sampling_dit
from PIL import Image

from ditkit.checkpoints import save_model
from ditkit.cli.main import main
from ditkit.diffusion.settings import DiffusionSettings
from ditkit.errors import UserError
from ditkit.first_stage.base import IdentityFirstStage
from ditkit.generation.pipeline import DiTPipeline
from ditkit.visual import grid_layout, upscale_nearest

FAST = dict(num_steps=3, sampler="ddim", progress=False)
NAMES = ["tee", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]


@pytest.fixture(scope="module")
def pipe():
    return DiTPipeline(sampling_dit(), class_names=NAMES, device="cpu")


def test_output_types(pipe):
    images = pipe([1, "sneaker"], seeds=[0, 1], **FAST)
    assert images.shape == (2, 8, 8, 1) and images.dtype == np.uint8
    tensor = pipe([1, 7], seeds=[0, 1], output_type="tensor", **FAST)
    assert tensor.shape == (2, 1, 8, 8) and tensor.dtype == torch.float32
    expected = np.clip(127.5 * tensor.numpy() + 128, 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    assert np.array_equal(images, expected)
    pils = pipe([1], seeds=[0], output_type="pil", **FAST)
    assert isinstance(pils[0], Image.Image) and pils[0].size == (8, 8)
    with pytest.raises(UserError, match="output_type"):
        pipe([1], output_type="png", **FAST)


def test_image_depends_only_on_its_seed_and_class(pipe):
    batch = pipe.sample_latents(
        [1, 2, 3], seeds=[5, 6, 7], batch_size=1, num_steps=3, sampler="ddim", progress=False
    )
    alone = pipe.sample_latents([2], seeds=[6], num_steps=3, sampler="ddim", progress=False)
    assert torch.equal(batch[1], alone[0])
    together = pipe.sample_latents([1, 2, 3], seeds=[5, 6, 7], num_steps=3, sampler="ddim", progress=False)
    # Only float rounding differs: batched matmuls round differently from single ones (observed up to
    # 3e-5 on an AMD EPYC CPU after a few steps); a wrong seed or label differs by order 1.
    torch.testing.assert_close(together, batch, rtol=1e-4, atol=1e-4)
    # ddpm draws fresh noise every step from the sample's own stream
    a = pipe.sample_latents([4, 4], seeds=[3, 9], num_steps=4, progress=False)
    b = pipe.sample_latents([4], seeds=[9], num_steps=4, progress=False)
    torch.testing.assert_close(a[1], b[0], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(a[0], a[1])


def test_labels_and_guidance_change_the_images(pipe):
    x = pipe.sample_latents([1, 2], seeds=[0, 0], num_steps=3, sampler="ddim", progress=False)
    assert (x[0] - x[1]).abs().max() > 1e-3
    weak = pipe.sample_latents(
        [1], seeds=[0], guidance_scale=1.0, num_steps=3, sampler="ddim", progress=False
    )
    assert (weak[0] - x[0]).abs().max() > 1e-3


def test_default_seeds_and_names(pipe):
    assert np.array_equal(pipe(["tee", "bag"], **FAST), pipe([0, 8], seeds=[0, 1], **FAST))
    assert pipe.class_name(9) == "ankle boot"
    with pytest.raises(UserError, match=r"did you mean: sneaker \(7\)"):
        pipe(["sneakers"], **FAST)
    plain = DiTPipeline(sampling_dit(), device="cpu")  # 10 classes, no names: indices only
    with pytest.raises(UserError, match="no class names"):
        plain(["tee"], **FAST)
    assert plain.resolve_labels(["3", 4]) == [3, 4]


def test_bf16_autocast_close_to_fp32():
    model = sampling_dit()
    fp32 = DiTPipeline(model, device="cpu").sample_latents(
        [1], seeds=[0], num_steps=3, sampler="ddim", progress=False
    )
    bf16 = DiTPipeline(model, device="cpu", dtype="bf16")
    out = bf16.sample_latents([1], seeds=[0], num_steps=3, sampler="ddim", progress=False)
    assert out.dtype == torch.float32
    assert (out - fp32).abs().max() < 0.1 * fp32.abs().max() and not torch.equal(out, fp32)
    with pytest.raises(UserError, match="dtype"):
        DiTPipeline(model, device="cpu", dtype="int8")


def test_unconditional_model():
    pipe = DiTPipeline(sampling_dit(num_classes=0), device="cpu")
    images = pipe(None, seeds=[0, 1], **FAST)
    assert images.shape == (2, 8, 8, 1)
    with pytest.raises(UserError, match="unconditional"):
        pipe([1], **FAST)
    with pytest.raises(UserError, match="seeds"):
        pipe(None, **FAST)


def test_errors():
    with pytest.raises(UserError, match="channels"):
        DiTPipeline(sampling_dit(in_channels=4), IdentityFirstStage(3), device="cpu")
    with pytest.raises(UserError, match="class names"):
        DiTPipeline(sampling_dit(), class_names=["a", "b"], device="cpu")
    pipe = DiTPipeline(sampling_dit(), device="cpu")
    with pytest.raises(UserError, match="seed"):
        pipe.sample_latents([1, 2], seeds=[0], progress=False)
    with pytest.raises(UserError, match="noise"):
        pipe.sample_latents([1], seeds=[0], noise=torch.zeros(1, 3, 8, 8), progress=False)


def test_diffusion_settings_from_checkpoint_records():
    assert DiffusionSettings.from_dict(None) == DiffusionSettings()
    settings = DiffusionSettings.from_dict({"noise_schedule": "cosine", "sigma_small": True, "other": 1})
    assert settings == DiffusionSettings("cosine", 1000, "small")


def test_from_pretrained_ditkit_checkpoint(tmp_path):
    model = sampling_dit()
    extra = {"first_stage": {"kind": "identity", "channels": 1}, "class_names": NAMES}
    save_model(model, tmp_path / "ckpt", ema=model, extra=extra)
    loaded = DiTPipeline.from_pretrained(tmp_path / "ckpt", device="cpu")
    assert loaded.image_size == (8, 8) and loaded.notes == []
    direct = DiTPipeline(model, class_names=NAMES, device="cpu")
    assert np.array_equal(loaded(["sneaker", "bag"], **FAST), direct([7, 8], **FAST))
    with pytest.raises(UserError, match="not 16"):
        DiTPipeline.from_pretrained(tmp_path / "ckpt", image_size=16)


def test_from_pretrained_official_state_dict(tmp_path):
    model = sampling_dit(in_channels=4, num_classes=1000)
    torch.save(model.state_dict(), tmp_path / "official.pt")
    pipe = DiTPipeline.from_pretrained(tmp_path / "official.pt", first_stage="identity", device="cpu")
    assert pipe.resolve_labels(["golden retriever"]) == [207]  # 1000 classes: ImageNet's names
    assert pipe(["tennis ball"], **FAST).shape == (1, 8, 8, 4)


@pytest.mark.slow  # imports diffusers (several seconds)
def test_official_state_dict_implies_the_sd_vae(tmp_path, monkeypatch):
    torch.save(sampling_dit(in_channels=4, num_classes=1000).state_dict(), tmp_path / "official.pt")
    # without an override, an official file implies DiT's SD VAE (not cached here: a clear error)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="sd-vae-ft-ema"):
        DiTPipeline.from_pretrained(tmp_path / "official.pt", device="cpu")


def test_cli_sample_writes_grid_images_and_record(tmp_path, capsys):
    model = sampling_dit()
    save_model(
        model,
        tmp_path / "ckpt",
        extra={"first_stage": {"kind": "identity", "channels": 1}, "class_names": NAMES},
    )
    out = tmp_path / "out"
    args = ["sample", str(tmp_path / "ckpt"), "--class", "coat", "--class", "7", "--num-per-class", "3"]
    args += [
        "--sampler",
        "ddim",
        "--steps",
        "3",
        "--seed",
        "10",
        "--out",
        str(out),
        "--quiet",
        "--device",
        "cpu",
    ]
    assert main(args) == 0
    assert "grid.png" in capsys.readouterr().out
    record = json.loads((out / "samples.json").read_text())
    assert [(e["class"], e["seed"]) for e in record["images"]] == [
        (4, 10),
        (4, 11),
        (4, 12),
        (7, 13),
        (7, 14),
        (7, 15),
    ]
    assert record["images"][3]["class_name"] == "sneaker"
    grid = np.asarray(Image.open(out / "grid.png"))
    layout = grid_layout(np.zeros((6, 8, 8), np.uint8), 3, row_labels=["coat", "sneaker"])
    assert layout.rows == 2 and layout.scale == 14 and layout.left > 0  # 8-px images shown 112 px, labelled
    assert grid.shape == (2 * (112 + 2) + 2, layout.left + 3 * (112 + 2) + 2)
    single = np.asarray(Image.open(out / record["images"][4]["file"]))
    assert single.shape == (8, 8)  # single images stay at the model's resolution
    redrawn = DiTPipeline(model, device="cpu")([7], seeds=[14], **FAST)[0, ..., 0]
    assert np.array_equal(single, redrawn)
    x0, y0, x1, y1 = layout.tile_box(4)  # row 1, column 1 of the grid
    assert np.array_equal(grid[y0:y1, x0:x1], upscale_nearest(redrawn[..., None], 14)[..., 0])
    assert (grid[y0:y1, : layout.left] < 200).sum() > 20  # the row's class name


def test_cli_sample_typo_exits_2(tmp_path, capsys):
    save_model(sampling_dit(), tmp_path / "c.safetensors", extra={"class_names": NAMES})
    code = main(
        [
            "sample",
            str(tmp_path / "c.safetensors"),
            "--class",
            "sneakr",
            "--steps",
            "2",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 2
    assert "did you mean: sneaker (7)" in capsys.readouterr().err


def test_cli_list_classes_of_a_checkpoint(tmp_path, capsys):
    save_model(sampling_dit(), tmp_path / "c.safetensors", extra={"class_names": NAMES})
    assert main(["sample", str(tmp_path / "c.safetensors"), "--list-classes", "boot"]) == 0
    assert capsys.readouterr().out.splitlines() == ["    9  ankle boot"]


def test_cli_sample_unconditional(tmp_path, capsys):
    save_model(
        sampling_dit(num_classes=0),
        tmp_path / "u.safetensors",
        extra={"first_stage": {"kind": "identity", "channels": 1}},
    )
    out = tmp_path / "out"
    args = [
        "sample",
        str(tmp_path / "u.safetensors"),
        "--num-per-class",
        "3",
        "--sampler",
        "ddim",
        "--steps",
        "2",
    ]
    assert main([*args, "--out", str(out), "--quiet", "--device", "cpu"]) == 0
    record = json.loads((out / "samples.json").read_text())
    assert [(e["class"], e["seed"]) for e in record["images"]] == [(None, 0), (None, 1), (None, 2)]
    conditional = tmp_path / "c.safetensors"
    save_model(sampling_dit(), conditional, extra={"first_stage": {"kind": "identity", "channels": 1}})
    assert main(["sample", str(conditional), "--steps", "2", "--out", str(out)]) == 2
    assert "--class" in capsys.readouterr().err


@pytest.mark.slow  # imports diffusers (several seconds)
def test_from_pretrained_diffusers_transformer_folder(tmp_path):
    from ditkit.checkpoints import export_diffusers

    model = sampling_dit()
    export_diffusers(model, tmp_path / "hf", pipeline=False)
    loaded = DiTPipeline.from_pretrained(tmp_path / "hf", first_stage="identity", device="cpu")
    direct = DiTPipeline(model, device="cpu")
    torch.testing.assert_close(
        loaded([3, 4], output_type="tensor", **FAST), direct([3, 4], output_type="tensor", **FAST)
    )


def test_cli_all_classes_and_the_same_rule_for_sample_and_walk(tmp_path, capsys):
    """Item 7: --all-classes samples every class; without a class, `sample` and `walk` refuse alike."""
    ckpt = tmp_path / "c.safetensors"
    save_model(
        sampling_dit(), ckpt, extra={"first_stage": {"kind": "identity", "channels": 1}, "class_names": NAMES}
    )
    out = tmp_path / "out"
    argv = ["sample", str(ckpt), "--all-classes", "--num-per-class", "1", "--sampler", "ddim", "--steps", "2"]
    assert main([*argv, "--out", str(out), "--quiet", "--device", "cpu"]) == 0
    record = json.loads((out / "samples.json").read_text())
    assert [e["class"] for e in record["images"]] == list(range(10))
    capsys.readouterr()
    for argv in (["sample", str(ckpt)], ["walk", str(ckpt), "--mode", "noise"]):
        assert main([*argv, "--steps", "2", "--out", str(out), "--device", "cpu"]) == 2
        err = capsys.readouterr().err
        assert "class-conditional (10 classes): choose with --class NAME (repeatable) or --all-classes" in err
