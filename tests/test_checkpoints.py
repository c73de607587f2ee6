"""Checkpoints: official .pt files (plain and training dict), ditkit's format, errors, `ditkit convert`."""

import argparse
import json
import os

import pytest
import torch
from helpers import random_dit, random_tiny_dit, tiny_dit_config
from safetensors.torch import save_file

import ditkit
from ditkit.checkpoints import load_checkpoint, load_model, save_model
from ditkit.checkpoints.layout import infer_config
from ditkit.cli.main import main
from ditkit.errors import UserError
from ditkit.model.blocks import BLOCK_DESIGNS
from ditkit.model.dit import DiT, DiTConfig
from ditkit.model.presets import get_config


def outputs(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    h, w = model.config.size_hw
    x = torch.randn(3, model.in_channels, h, w, generator=g)
    t = torch.rand(3, generator=g) * 999
    y = torch.randint(0, max(model.num_classes, 1), (3,), generator=g) if model.num_classes else None
    with torch.no_grad():
        return model(x, t, y)


def assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def adamw_state(model):
    """The structure of torch.optim.AdamW's state_dict() after one step (built by hand: creating a real
    optimizer imports torch._dynamo, seconds of start-up)."""
    params = [p for p in model.parameters() if p.requires_grad]
    state = {
        i: {"step": torch.tensor(1.0), "exp_avg": torch.randn_like(p), "exp_avg_sq": torch.rand_like(p)}
        for i, p in enumerate(params)
    }
    group = dict(lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, foreach=None)
    group.update(maximize=False, capturable=False, differentiable=False, fused=None, params=list(state))
    return {"state": state, "param_groups": [group]}


def training_dict(model, ema, args):
    """What the official train.py saves: weights, EMA weights, AdamW state and the argparse Namespace."""
    return {"model": model.state_dict(), "ema": ema.state_dict(), "opt": adamw_state(model), "args": args}


# ---- official files ----


def test_plain_official_state_dict_loads_with_inferred_config(tmp_path):
    model = random_tiny_dit()
    torch.save(model.state_dict(), tmp_path / "DiT-T-2.pt")
    loaded = load_checkpoint(tmp_path / "DiT-T-2.pt")
    assert loaded.kind == "official" and loaded.weights == "weights"
    assert loaded.config == model.config  # every field read from the shapes, heads from the T preset
    assert loaded.config.name == "DiT-T/2"
    assert not loaded.model.training
    assert_same_weights(loaded.model, model)
    assert torch.equal(outputs(loaded.model), outputs(model))


@pytest.mark.parametrize(
    ("name", "input_size"), [("DiT-XL/2", 32), ("DiT-XL/2", 64), ("DiT-B/4", 32), ("DiT-S/8", 32)]
)
def test_infers_the_papers_models_from_shapes(name, input_size):
    expected = get_config(name, input_size=input_size)
    with torch.device("meta"):  # shapes only, no memory
        state = DiT(expected).state_dict()
    config, notes = infer_config(state)
    assert config == expected and config.name == name
    assert "preset" in notes[0]


def test_training_dict_prefers_ema_and_reads_args(tmp_path):
    # hidden 48 with 3 heads matches no paper size and is not hidden/64: heads must come from args.model.
    config = tiny_dit_config(hidden_size=48, num_heads=3)
    model, ema = random_dit(config, seed=0), random_dit(config, seed=1)
    args = argparse.Namespace(model="DiT-XS/2", image_size=64, num_classes=10, vae="ema", global_seed=0)
    torch.save(training_dict(model, ema, args), tmp_path / "0050000.pt")

    loaded = load_checkpoint(tmp_path / "0050000.pt")
    assert loaded.weights == "ema" and set(loaded.available) == {"ema", "model"}
    assert_same_weights(loaded.model, ema)
    assert loaded.config.num_heads == 3 and loaded.notes == []
    assert loaded.extra["image_size"] == 64
    assert loaded.extra["first_stage"]["source"] == "stabilityai/sd-vae-ft-ema"
    assert loaded.extra["official_args"]["model"] == "DiT-XS/2"
    json.dumps(loaded.extra)  # plain data only

    raw = load_checkpoint(tmp_path / "0050000.pt", which="model")
    assert_same_weights(raw.model, model)


def test_heads_are_guessed_with_a_note_and_can_be_overridden(tmp_path):
    model = random_tiny_dit(hidden_size=128, depth=1, num_heads=4)
    torch.save(model.state_dict(), tmp_path / "m.pt")
    guessed = load_checkpoint(tmp_path / "m.pt")
    assert guessed.config.num_heads == 2 and "guessed" in guessed.notes[0]
    assert not torch.allclose(outputs(guessed.model), outputs(model))
    fixed = load_checkpoint(tmp_path / "m.pt", config={"num_heads": 4})
    assert torch.equal(outputs(fixed.model), outputs(model))


def test_non_square_grid_needs_the_input_size(tmp_path):
    model = random_tiny_dit(input_size=(8, 16))
    torch.save(model.state_dict(), tmp_path / "wide.pt")
    with pytest.raises(UserError, match="not a square grid"):
        load_model(tmp_path / "wide.pt")
    loaded = load_model(tmp_path / "wide.pt", config={"input_size": (8, 16)})
    assert torch.equal(outputs(loaded), outputs(model))


@pytest.mark.parametrize("block", BLOCK_DESIGNS)
@pytest.mark.parametrize(("learn_sigma", "num_classes"), [(True, 10), (False, 0)])
def test_config_inference_every_design(tmp_path, block, learn_sigma, num_classes):
    model = random_tiny_dit(block=block, learn_sigma=learn_sigma, num_classes=num_classes, patch_size=4)
    torch.save(model.state_dict(), tmp_path / "m.pt")
    told = None
    if block == "adaln":  # 4 modulation vectors: also LightningDiT's adaLN-Zero without shift (issue 26)
        with pytest.raises(UserError, match="4 modulation vectors"):
            load_model(tmp_path / "m.pt")
        told = {"block": "adaln"}
    loaded = load_model(tmp_path / "m.pt", config=told)
    assert loaded.config == model.config
    assert torch.equal(outputs(loaded), outputs(model))


def test_wrapper_prefixes_and_plain_safetensors(tmp_path):
    model = random_tiny_dit()
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, tmp_path / "ddp.pt")
    assert_same_weights(load_model(tmp_path / "ddp.pt"), model)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "plain.safetensors"))
    loaded = load_checkpoint(tmp_path / "plain.safetensors")
    assert loaded.kind == "official"
    assert_same_weights(loaded.model, model)


class _Exploit:
    """Unpickling this calls os.makedirs: a stand-in for arbitrary code in a malicious checkpoint."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.makedirs, (self.path,))


def test_pickled_code_is_never_run(tmp_path):
    marker = tmp_path / "pwned"
    state = random_tiny_dit().state_dict()
    torch.save({"ema": state, "args": _Exploit(str(marker))}, tmp_path / "evil.pt")
    with pytest.raises(UserError, match=r"pickled Python objects \((os|posix)\.makedirs\)"):
        load_model(tmp_path / "evil.pt")
    assert not marker.exists()


def _not_a_dit(tmp_path, case):
    path = tmp_path / "x.pt"
    if case == "other_keys":
        torch.save({"encoder.weight": torch.zeros(3), "decoder.bias": torch.zeros(2)}, path)
    elif case == "list":
        torch.save([torch.zeros(2)], path)
    elif case == "text":
        path.write_text("hello, not a checkpoint\n")
    elif case == "truncated":
        torch.save(random_tiny_dit().state_dict(), path)
        path.write_bytes(path.read_bytes()[:2000])
    elif case == "missing":
        path = tmp_path / "nope.pt"
    elif case == "folder":
        path = tmp_path / "folder"
        path.mkdir()
        (path / "notes.txt").write_text("x")
    elif case == "bad_safetensors":
        path = tmp_path / "x.safetensors"
        path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    return path


@pytest.mark.parametrize(
    ("case", "message"),
    [
        (
            "other_keys",
            r"has no DiT weights: missing keys x_embedder\.proj\.weight.*is this a DiT checkpoint\?",
        ),
        ("list", "holds a list, not a state dict"),
        ("text", "is not a PyTorch checkpoint \\(it is a text file\\)"),
        ("truncated", "cannot read .* as a PyTorch checkpoint"),
        ("missing", "does not exist"),
        ("folder", "is a folder but neither a ditkit checkpoint"),
        ("bad_safetensors", "cannot read .* as safetensors"),
    ],
)
def test_files_that_are_not_dits_give_one_line_errors(tmp_path, case, message):
    with pytest.raises(UserError, match=message) as info:
        load_model(_not_a_dit(tmp_path, case))
    assert "\n" not in str(info.value)


def test_missing_tensor_and_wrong_config_are_named(tmp_path):
    state = random_tiny_dit().state_dict()
    del state["blocks.1.mlp.fc2.bias"]
    torch.save(state, tmp_path / "m.pt")
    with pytest.raises(UserError, match=r"missing keys blocks\.1\.mlp\.fc2\.bias"):
        load_model(tmp_path / "m.pt")
    torch.save(random_tiny_dit().state_dict(), tmp_path / "ok.pt")
    with pytest.raises(UserError, match=r"label table has 11 rows, neither 5 classes"):
        load_model(tmp_path / "ok.pt", config={"num_classes": 5})
    with pytest.raises(UserError, match=r"wrong shapes x_embedder\.proj\.weight"):
        load_model(tmp_path / "ok.pt", config={"in_channels": 3})


# ---- ditkit's format ----


def test_folder_round_trip_keeps_both_weight_sets_and_extra(tmp_path):
    model, ema = random_tiny_dit(seed=0, recompute_blocks=1), random_tiny_dit(seed=1, recompute_blocks=1)
    extra = {"first_stage": {"kind": "identity", "channels": 4}, "class_names": [str(i) for i in range(10)]}
    path = save_model(model, tmp_path / "ckpt", ema=ema, extra=extra)
    assert sorted(os.listdir(path)) == ["config.json", "ema.safetensors", "model.safetensors"]
    header = json.loads((path / "config.json").read_text())
    assert header["format"] == "ditkit" and header["format_version"] == 1
    assert header["weights"] == ["ema", "model"] and header["extra"] == extra
    assert DiTConfig.from_dict(header["config"]) == model.config

    loaded = load_checkpoint(path)
    assert (loaded.kind, loaded.weights, loaded.extra) == ("ditkit", "ema", extra)
    assert loaded.config == model.config and loaded.config.recompute_blocks == 1
    assert_same_weights(loaded.model, ema)
    assert_same_weights(load_model(path, which="model"), model)
    # Each weights file carries the config too and loads on its own.
    assert_same_weights(load_model(path / "model.safetensors"), model)


@pytest.mark.parametrize("block", BLOCK_DESIGNS)
def test_folder_round_trip_every_design(tmp_path, block):
    model = random_tiny_dit(block=block, input_size=(8, 4), num_classes=0, learn_sigma=False)
    loaded = load_checkpoint(save_model(model, tmp_path / "c"))
    assert loaded.config == model.config and loaded.weights == "model"  # "ema" falls back to the only set
    assert torch.equal(outputs(loaded.model), outputs(model))


def test_single_file_form(tmp_path):
    model, ema = random_tiny_dit(seed=0), random_tiny_dit(seed=1)
    path = save_model(model, tmp_path / "m.safetensors", ema=ema, extra={"image_size": 64})
    loaded = load_checkpoint(path)
    assert (loaded.kind, loaded.weights, loaded.extra) == ("ditkit", "ema", {"image_size": 64})
    assert_same_weights(loaded.model, ema)
    with pytest.raises(UserError, match="holds only ema weights"):
        load_model(path, which="model")


def test_save_is_atomic_and_replaces_only_checkpoints(tmp_path):
    model = random_tiny_dit()
    path = tmp_path / "ckpt"

    def fail(folder):
        (folder / "train_state.pt").write_bytes(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        save_model(model, path, add_files=fail)
    assert os.listdir(tmp_path) == []  # nothing partial, no temporary folder left behind

    save_model(model, path, add_files=lambda folder: torch.save({"step": 7}, folder / "train_state.pt"))
    assert (path / "train_state.pt").is_file()
    newer = random_tiny_dit(seed=5)
    save_model(newer, path)  # replaces the whole checkpoint, extra files included
    assert sorted(os.listdir(path)) == ["config.json", "model.safetensors"]
    assert_same_weights(load_model(path), newer)
    assert os.listdir(tmp_path) == ["ckpt"]

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "images.npz").write_bytes(b"x")
    with pytest.raises(UserError, match="refusing to replace"):
        save_model(model, tmp_path / "data")


def test_model_is_ema_and_overrides_of_a_stored_config(tmp_path):
    ema = random_tiny_dit()
    path = save_model(ema, tmp_path / "c", model_is_ema=True)
    assert sorted(os.listdir(path)) == ["config.json", "ema.safetensors"]
    loaded = load_checkpoint(path, config={"class_dropout_prob": 0.0})
    assert loaded.weights == "ema" and loaded.config.class_dropout_prob == 0.0
    with pytest.raises(UserError, match="cannot apply config overrides"):
        load_model(path, config={"depth_typo": 3})


def test_newer_format_version_is_refused(tmp_path):
    path = save_model(random_tiny_dit(), tmp_path / "c")
    header = json.loads((path / "config.json").read_text())
    header["format_version"] = 99
    (path / "config.json").write_text(json.dumps(header))
    with pytest.raises(UserError, match="format 99; this ditkit reads format 1"):
        load_model(path)


def test_public_api_names():
    assert ditkit.load_model is load_model and ditkit.save_model is save_model


# ---- ditkit convert ----


def test_convert_cli_official_training_dict_to_ditkit(tmp_path, capsys):
    config = tiny_dit_config()
    model, ema = random_dit(config, 0), random_dit(config, 1)
    args = argparse.Namespace(model="DiT-T/2", image_size=64, vae="mse")
    torch.save(training_dict(model, ema, args), tmp_path / "0001000.pt")
    assert main(["convert", str(tmp_path / "0001000.pt"), str(tmp_path / "out")]) == 0
    assert "EMA and raw weights" in capsys.readouterr().out
    assert_same_weights(load_model(tmp_path / "out"), ema)
    assert_same_weights(load_model(tmp_path / "out", which="model"), model)
    assert load_checkpoint(tmp_path / "out").extra["first_stage"]["source"] == "stabilityai/sd-vae-ft-mse"

    single = tmp_path / "one.safetensors"
    assert main(["convert", str(tmp_path / "out"), str(single), "--which", "model"]) == 0
    assert_same_weights(load_model(single), model)


def test_convert_cli_overrides_and_errors(tmp_path, capsys):
    model = random_tiny_dit(hidden_size=128, depth=1, num_heads=4)
    torch.save(model.state_dict(), tmp_path / "m.pt")
    assert (
        main(
            ["convert", str(tmp_path / "m.pt"), str(tmp_path / "o"), "--num-heads", "4", "--image-size", "64"]
        )
        == 0
    )
    assert load_model(tmp_path / "o").config.num_heads == 4
    assert main(["convert", str(tmp_path / "missing.pt"), str(tmp_path / "o2")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "m.pt"), str(tmp_path / "o3"), "--image-size", "60"]) == 2
    with pytest.raises(SystemExit) as info:
        main(["convert", "--help"])
    assert info.value.code == 0
