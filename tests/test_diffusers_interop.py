"""diffusers interop: numerical agreement with diffusers' own DiT, export/import round trips, DiTPipeline."""

import json

import pytest
import torch
from diffusers import AutoencoderKL, DiTPipeline, DiTTransformer2DModel
from helpers import random_dit, random_tiny_dit, tiny_dit_config

from ditkit.checkpoints import (
    export_diffusers,
    import_diffusers,
    load_checkpoint,
    load_model,
    save_model,
    to_diffusers_transformer,
)
from ditkit.cli.main import main
from ditkit.errors import UserError


def with_dit_frequencies(transformer):
    """Give diffusers' timestep features DiT's frequency spacing exp(-ln(1e4) i / half) instead of its
    hard-coded i / (half - 1) (`downscale_freq_shift=1`): the one difference weights cannot carry."""
    for block in transformer.transformer_blocks:
        block.norm1.emb.time_proj.downscale_freq_shift = 0
    return transformer


def batch(config, seed=1, n=4):
    g = torch.Generator().manual_seed(seed)
    h, w = config.size_hw
    x = torch.randn(n, config.in_channels, h, w, generator=g)
    t = torch.cat([torch.tensor([0.0, 999.0]), torch.rand(n - 2, generator=g) * 999])
    y = torch.randint(0, max(config.num_classes, 1), (n,), generator=g)
    return x, t, y


def assert_agree(ours, theirs):
    """float32 agreement relative to the output scale."""
    scale = ours.abs().max().item()
    assert scale > 0.1  # random weights: a dead network would agree trivially
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize(
    "fields",
    [
        dict(),  # learned sigma, 10 classes
        dict(learn_sigma=False, patch_size=4, num_heads=4, input_size=16),
        dict(num_classes=0),  # unconditional: exported as one class whose label rows are zero
        dict(activation="gelu"),  # the exact GELU: diffusers' activation_fn "gelu"
    ],
    ids=["sigma", "fixed-sigma-p4", "unconditional", "exact-gelu"],
)
def test_forward_agrees_with_diffusers_with_and_without_labels(fields):
    config = tiny_dit_config(**fields)
    model = random_dit(config)
    transformer = with_dit_frequencies(to_diffusers_transformer(model))
    x, t, y = batch(config)
    null = torch.full_like(y, config.num_classes if config.conditional else 0)
    with torch.no_grad():
        if config.conditional:
            assert_agree(model(x, t, y), transformer(x, timestep=t, class_labels=y).sample)
            assert_agree(model(x, t.long(), y), transformer(x, timestep=t.long(), class_labels=y).sample)
        # No label: ditkit's y=None / null class against diffusers' null row.
        assert_agree(model(x, t, None), transformer(x, timestep=t, class_labels=null).sample)
    assert transformer.config.out_channels == model.out_channels


def test_stock_diffusers_timestep_features_differ_from_dit():
    """Documents the one mismatch: identical at t = 0, different for t > 0 unless the spacing is fixed."""
    model = random_tiny_dit()
    transformer = to_diffusers_transformer(model)
    x, _, y = batch(model.config)
    with torch.no_grad():
        zero = torch.zeros(len(x))
        assert_agree(model(x, zero, y), transformer(x, timestep=zero, class_labels=y).sample)
        late = torch.full((len(x),), 999.0)
        gap = (model(x, late, y) - transformer(x, timestep=late, class_labels=y).sample).abs().max()
    assert gap > 1e-3


@pytest.mark.parametrize(
    ("activation", "activation_fn"), [("gelu-tanh", "gelu-approximate"), ("gelu", "gelu")]
)
def test_transformer_folder_round_trip(tmp_path, activation, activation_fn):
    model = random_tiny_dit(activation=activation)
    out = export_diffusers(model, tmp_path / "hf", pipeline=False)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["_class_name"] == "DiTTransformer2DModel" and cfg["norm_eps"] == 1e-6
    assert cfg["activation_fn"] == activation_fn
    assert (cfg["sample_size"], cfg["patch_size"], cfg["out_channels"]) == (8, 2, 8)
    reloaded = with_dit_frequencies(DiTTransformer2DModel.from_pretrained(out).eval())
    x, t, y = batch(model.config)
    with torch.no_grad():
        assert_agree(model(x, t, y), reloaded(x, timestep=t, class_labels=y).sample)
    back = import_diffusers(out)
    assert back.config == model.config
    for k, v in model.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    assert load_checkpoint(out).kind == "diffusers"


def tiny_vae(folder):
    """A randomly initialised 2-level AutoencoderKL (downsampling 2) with 4 latent channels."""
    torch.manual_seed(0)
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 8),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=16,
    )
    vae.save_pretrained(folder)
    return folder


def test_complete_pipeline_loads_and_samples_with_guidance(tmp_path):
    # 1000 classes: DiTPipeline's guidance uses label 1000 as the null class.
    model = random_tiny_dit(num_classes=1000)
    names = [f"class {i}, alias {i}" for i in range(1000)]
    out = export_diffusers(model, tmp_path / "pipe", vae=tiny_vae(tmp_path / "vae"), class_names=names)
    sched = json.loads((out / "scheduler" / "scheduler_config.json").read_text())
    assert sched["_class_name"] == "DDIMScheduler" and sched["beta_schedule"] == "linear"
    assert (sched["num_train_timesteps"], sched["beta_start"], sched["beta_end"]) == (1000, 1e-4, 0.02)

    pipe = DiTPipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.get_label_ids(["alias 7"]) == [7]
    g = torch.Generator().manual_seed(0)
    images = pipe(
        class_labels=[3, 7], num_inference_steps=2, guidance_scale=4.0, generator=g, output_type="pt"
    )
    assert images.images.shape == (2, 3, 16, 16) and torch.isfinite(images.images).all()

    loaded = load_checkpoint(out)
    assert loaded.extra["class_names"] == names
    assert loaded.extra["diffusion"] == {"noise_schedule": "linear", "diffusion_steps": 1000}
    assert loaded.extra["first_stage"]["kind"] == "sd-vae" and loaded.extra["first_stage"]["downsample"] == 2
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[k], v), k


def test_convert_cli_to_pipeline_and_back(tmp_path, capsys):
    model = random_tiny_dit()
    extra = {"diffusion": {"noise_schedule": "cosine", "diffusion_steps": 500}}
    src = save_model(model, tmp_path / "ckpt", extra=extra)
    vae = tiny_vae(tmp_path / "vae")
    dst = tmp_path / "pipe"
    assert (
        main(
            [
                "convert",
                str(src),
                str(dst),
                "--to",
                "diffusers-pipeline",
                "--vae",
                str(vae),
                "--scheduler",
                "ddpm",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "guidance_scale=1" in printed  # 10 classes: DiTPipeline's null label 1000 does not exist
    sched = json.loads((dst / "scheduler" / "scheduler_config.json").read_text())
    assert (sched["_class_name"], sched["beta_schedule"], sched["num_train_timesteps"]) == (
        "DDPMScheduler",
        "squaredcos_cap_v2",
        500,
    )
    assert main(["convert", str(dst), str(tmp_path / "back")]) == 0
    back = load_checkpoint(tmp_path / "back")
    assert back.extra["diffusion"] == extra["diffusion"]
    for k, v in model.state_dict().items():
        assert torch.equal(back.model.state_dict()[k], v), k


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (dict(block="adaln"), "only has adaLN-Zero blocks"),
        (dict(input_size=(8, 16)), "square inputs only"),
        (dict(mlp_ratio=2.0), "mlp_ratio 4"),
    ],
)
def test_export_refuses_what_diffusers_cannot_hold(tmp_path, fields, message):
    with pytest.raises(UserError, match=message):
        export_diffusers(random_tiny_dit(**fields), tmp_path / "o", pipeline=False)


def test_export_errors(tmp_path):
    model = random_tiny_dit()
    with pytest.raises(UserError, match="needs the first-stage VAE weights"):
        export_diffusers(model, tmp_path / "o")
    with pytest.raises(UserError, match="4 latent channels but the DiT takes 3"):
        export_diffusers(random_tiny_dit(in_channels=3), tmp_path / "o", vae=tiny_vae(tmp_path / "v"))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="refusing to replace"):
        export_diffusers(model, tmp_path / "mine", pipeline=False)
    moved = random_tiny_dit()
    with torch.no_grad():
        moved.pos_embed.add_(0.1)
    with pytest.raises(UserError, match="not the fixed sin-cos table"):
        export_diffusers(moved, tmp_path / "o", pipeline=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "v"]  # nothing partial written


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("activation_fn", "geglu", "activation_fn='geglu'; a DiT needs 'gelu-approximate' or 'gelu'"),
        ("norm_type", "layer_norm", "norm_type='layer_norm'; a DiT needs 'ada_norm_zero'"),
    ],
)
def test_import_refuses_what_a_dit_cannot_hold(tmp_path, key, value, message):
    out = export_diffusers(random_tiny_dit(), tmp_path / "hf", pipeline=False)
    cfg = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**cfg, key: value}))
    with pytest.raises(UserError, match=message):
        load_model(out)


def test_import_refuses_embedders_that_differ_between_blocks(tmp_path):
    transformer = to_diffusers_transformer(random_tiny_dit())
    with torch.no_grad():
        transformer.transformer_blocks[1].norm1.emb.timestep_embedder.linear_1.bias.add_(1.0)
    transformer.save_pretrained(tmp_path / "hf")
    with pytest.raises(UserError, match="embedders differ between blocks 0 and 1"):
        load_model(tmp_path / "hf")


def test_convert_to_a_transformer_folder_and_back_keeps_class_names_and_first_stage(tmp_path, capsys):
    """Issue 16 item 8: `ditkit sample back/ --class sneaker` works after a round trip through diffusers."""
    from helpers import sampling_dit

    names = ["tee", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]
    extra = {"first_stage": {"kind": "identity", "channels": 1}, "class_names": names}
    src = save_model(sampling_dit(), tmp_path / "ckpt", extra=extra)
    assert main(["convert", str(src), str(tmp_path / "hf"), "--to", "diffusers"]) == 0
    assert main(["convert", str(tmp_path / "hf"), str(tmp_path / "back")]) == 0
    printed = capsys.readouterr().out
    assert "weights weights" not in printed and "(ditkit, its one weight set, DiT-T/2)" in printed
    back = load_checkpoint(tmp_path / "back")
    assert back.extra["class_names"] == names and back.extra["first_stage"] == extra["first_stage"]
    argv = ["sample", str(tmp_path / "back"), "--class", "sneaker", "--num-per-class", "1", "--steps", "2"]
    assert (
        main([*argv, "--sampler", "ddim", "--out", str(tmp_path / "out"), "--quiet", "--device", "cpu"]) == 0
    )
