"""VA-VAE as a first stage: a tiny random autoencoder saved in their checkpoint layout, loaded from files.

No weights are downloaded. The tiny model keeps the released tokenizer's structure (LDM autoencoder,
self-attention inside the 16x16 level, a Lightning checkpoint with training-only parts beside the
autoencoder, `latents_stats.pt` with (1, C, 1, 1) tensors) at 32/64 channels and 8 latent channels.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
from helpers import random_tiny_dit
from test_data_imagefolder import make_image_folder

from ditkit.cli.main import main
from ditkit.data.build import build_dataset
from ditkit.data.latent_cache import LatentCacheDataset, read_manifest
from ditkit.errors import UserError
from ditkit.first_stage.ldm_autoencoder import LDMAutoencoderConfig, LDMAutoencoderKL
from ditkit.first_stage.load import first_stage_from_dict, load_first_stage, planned_latent_shape
from ditkit.first_stage.vavae import (
    STATS_FILE,
    VAVAE_F16D32,
    VAVAE_LATENT_MULTIPLIER,
    VAVAE_MODELS,
    VAVAEFirstStage,
)
from ditkit.generation.loading import first_stage_for
from ditkit.generation.pipeline import DiTPipeline

CHECKPOINT = VAVAE_MODELS["vavae-f16d32"].checkpoint  # their released file name
# Their YAML's `model.params` (embed_dim, ddconfig), shrunk: level 1 is 16x16, so it has attention.
TINY_PARAMS = {
    "embed_dim": 8,
    "ddconfig": {
        "double_z": True,
        "z_channels": 8,
        "resolution": 32,
        "in_channels": 3,
        "out_ch": 3,
        "ch": 32,
        "ch_mult": [1, 2],
        "num_res_blocks": 1,
        "attn_resolutions": [16],
        "dropout": 0.0,
    },
}
TINY = LDMAutoencoderConfig(
    ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(16,), resolution=32, z_channels=8, embed_dim=8
)


def random_autoencoder(cfg: LDMAutoencoderConfig, seed: int = 0) -> LDMAutoencoderKL:
    g = torch.Generator().manual_seed(seed)
    model = LDMAutoencoderKL(cfg).eval()
    with torch.no_grad():  # non-trivial, input-dependent posterior std and norm affine parameters
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


def save_tiny_vavae(folder: Path, seed: int = 0) -> tuple[LDMAutoencoderKL, torch.Tensor, torch.Tensor]:
    """Write their files for a tiny VA-VAE: the Lightning checkpoint, latents_stats.pt and config.json."""
    folder.mkdir(parents=True, exist_ok=True)
    model = random_autoencoder(TINY, seed)
    state = dict(model.state_dict())
    # Training-only parts their checkpoint also holds (ignored when loading for inference).
    state["loss.discriminator.main.0.weight"] = torch.zeros(4, 3, 4, 4)
    state["foundation_model.model.cls_token"] = torch.zeros(1, 1, 16)
    state["linear_proj.weight"] = torch.zeros(16, 8, 1, 1)
    torch.save({"state_dict": state, "global_step": 7, "epoch": 0}, folder / CHECKPOINT)
    g = torch.Generator().manual_seed(seed + 1)
    mean = torch.randn(1, 8, 1, 1, generator=g)
    std = torch.rand(1, 8, 1, 1, generator=g) + 0.5
    torch.save({"mean": mean, "std": std}, folder / STATS_FILE)
    (folder / "config.json").write_text(json.dumps(TINY_PARAMS))
    return model, mean, std


def _images(n: int = 2, size: int = 16) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(3)) * 2 - 1


def test_key_layout_is_theirs():
    with torch.device("meta"):  # the released f16d32 architecture, without allocating its weights
        full = LDMAutoencoderKL(VAVAE_F16D32).state_dict()
    shapes = {k: tuple(v.shape) for k, v in full.items()}
    assert shapes["encoder.conv_in.weight"] == (128, 3, 3, 3)
    assert shapes["encoder.down.4.attn.1.q.weight"] == (512, 512, 1, 1)  # attention at 16x16 only
    assert not any(k.startswith(("encoder.down.3.attn", "decoder.up.3.attn")) for k in shapes)
    assert shapes["encoder.down.1.downsample.conv.weight"] == (128, 128, 3, 3)
    assert shapes["encoder.down.2.block.0.nin_shortcut.weight"] == (256, 128, 1, 1)
    assert shapes["encoder.mid.attn_1.proj_out.weight"] == (512, 512, 1, 1)
    assert shapes["encoder.conv_out.weight"] == (64, 512, 3, 3)  # mean and log-variance of 32 channels
    assert shapes["quant_conv.weight"] == (64, 64, 1, 1) and shapes["post_quant_conv.weight"] == (
        32,
        32,
        1,
        1,
    )
    assert shapes["decoder.conv_in.weight"] == (512, 32, 3, 3)
    assert shapes["decoder.up.4.attn.2.norm.weight"] == (512,)  # num_res_blocks + 1 decoder blocks
    assert shapes["decoder.up.3.block.0.nin_shortcut.weight"] == (256, 512, 1, 1)
    assert (
        "decoder.up.0.upsample.conv.weight" not in shapes
        and "encoder.down.4.downsample.conv.weight" not in shapes
    )
    assert shapes["decoder.conv_out.weight"] == (3, 128, 3, 3)
    assert VAVAE_F16D32.downsample == 16


def test_matches_diffusers_autoencoder_without_level_attention():
    """An independent implementation: diffusers' AutoencoderKL with the weights converted by diffusers."""
    cfg = LDMAutoencoderConfig(
        ch=32, ch_mult=(1, 2), num_res_blocks=1, resolution=32, z_channels=4, embed_dim=4
    )
    ours = random_autoencoder(cfg)
    theirs = AutoencoderKL(
        block_out_channels=(32, 64),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1,
        latent_channels=4,
    ).eval()
    theirs.load_state_dict(convert_ldm_vae_checkpoint(dict(ours.state_dict()), theirs.config), strict=True)
    x = _images()
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        mean, std = ours.encode(x)
        posterior = theirs.encode(x).latent_dist
        torch.testing.assert_close(mean, posterior.mean, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(std, posterior.std, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours.decode(z), theirs.decode(z).sample, atol=1e-5, rtol=1e-5)


def test_folder_and_file_load_with_their_normalisation(tmp_path):
    model, mean, std = save_tiny_vavae(tmp_path / "vavae")
    for spec in (tmp_path / "vavae", tmp_path / "vavae" / CHECKPOINT):
        stage = load_first_stage(str(spec))
        assert isinstance(stage, VAVAEFirstStage) and stage.scale == VAVAE_LATENT_MULTIPLIER == 1.0
        assert (stage.image_channels, stage.latent_channels, stage.downsample) == (3, 8, 2)
        assert stage.latent_shape(16) == (8, 8, 8)
        assert not any(p.requires_grad for p in stage.parameters())
    assert planned_latent_shape(str(tmp_path / "vavae"), 3, 16) == (8, 8, 8)

    x = _images()
    with torch.no_grad():
        z_mean, z_std = model.encode(x)
    got_mean, got_std = stage.encode(x)
    # LightningDiT: (z - mean) / std * latent_multiplier, per channel.
    torch.testing.assert_close(got_mean, (z_mean - mean) / std * 1.0)
    torch.testing.assert_close(got_std, z_std / std)
    latents = torch.randn(2, 8, 8, 8, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(stage.normalise(stage.denormalise(latents)), latents)
    with torch.no_grad():
        expected = model.decode(latents * std / 1.0 + mean)  # their sampling: x * std / multiplier + mean
    decoded = stage.decode(latents)
    assert decoded.shape == (2, 3, 16, 16)
    torch.testing.assert_close(decoded, expected)

    description = json.loads(json.dumps(stage.to_dict()))
    assert description["kind"] == "vavae" and len(description["latent_std"]) == 8
    torch.testing.assert_close(first_stage_from_dict(description).decode(latents), expected)


def test_stored_statistics_must_match(tmp_path):
    save_tiny_vavae(tmp_path / "a", seed=0)
    save_tiny_vavae(tmp_path / "b", seed=1)
    description = load_first_stage(str(tmp_path / "a")).to_dict()
    with pytest.raises(UserError, match="another latent mean"):
        first_stage_from_dict(description, source=str(tmp_path / "b"))
    with pytest.raises(UserError, match="another latent mean"):  # sample --first-stage over a recorded one
        first_stage_for({"first_stage": description}, in_channels=8, override=str(tmp_path / "b"))
    assert isinstance(
        first_stage_for({"first_stage": description}, 8, str(tmp_path / "a"))[0], VAVAEFirstStage
    )


@pytest.mark.parametrize("case", ["missing", "unexpected", "shape", "stats", "no-stats"])
def test_bad_files_are_one_line_errors(tmp_path, case):
    folder = tmp_path / "vavae"
    save_tiny_vavae(folder)
    checkpoint = torch.load(folder / CHECKPOINT, weights_only=True)
    state = checkpoint["state_dict"]
    if case == "missing":
        del state["decoder.up.1.attn.1.q.bias"]
        message = "1 weights missing \\(e.g. decoder.up.1.attn.1.q.bias\\)"
    elif case == "unexpected":
        state["encoder.down.0.attn.0.q.weight"] = torch.zeros(32, 32, 1, 1)
        message = "1 unexpected weights"
    elif case == "shape":
        state["quant_conv.weight"] = torch.zeros(8, 16, 1, 1)
        message = "another shape \\(e.g. quant_conv.weight\\)"
    elif case == "stats":
        torch.save({"mean": torch.zeros(1, 4, 1, 1), "std": torch.ones(1, 4, 1, 1)}, folder / STATS_FILE)
        message = "'mean' and 'std' tensors of 8 channels"
    else:
        (folder / STATS_FILE).unlink()
        message = f"no {STATS_FILE} in .*vavae: VA-VAE needs"
    torch.save(checkpoint, folder / CHECKPOINT)
    with pytest.raises(UserError, match=message) as caught:
        load_first_stage(str(folder))
    assert "\n" not in str(caught.value)


def test_short_name_reads_the_documented_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert planned_latent_shape("vavae-f16d32", 3, 256) == (32, 16, 16)
    with pytest.raises(UserError) as caught:
        load_first_stage("vavae-f16d32")
    message = str(caught.value)
    assert "\n" not in message and str(tmp_path / "cache" / "ditkit" / "vavae-f16d32") in message
    assert CHECKPOINT in message and STATS_FILE in message and "huggingface.co/hustvl" in message
    # A 32-channel checkpoint that names no first stage (LightningDiT's released files) asks for the same.
    with pytest.raises(UserError, match="vavae-f16d32 needs"):
        first_stage_for({}, in_channels=32)


def test_prepare_then_sample_decodes_with_the_stored_statistics(tmp_path):
    """`ditkit prepare` stores normalised latents; a pipeline rebuilt from the cache's record decodes them."""
    save_tiny_vavae(tmp_path / "vavae")
    images = make_image_folder(tmp_path / "images", per_class=2)
    cache = tmp_path / "cache"
    argv = ["prepare", str(images), "--out", str(cache), "--first-stage", str(tmp_path / "vavae")]
    assert main([*argv, "--image-size", "16", "--dtype", "float32", "--no-progress"]) == 0
    dataset = LatentCacheDataset(cache)
    assert dataset.latent_shape == (8, 8, 8) and len(dataset) == 4
    stored = read_manifest(cache)["config"]["first_stage"]
    assert stored["kind"] == "vavae" and stored["latent_channels"] == 8 and stored["downsample"] == 2

    stage = first_stage_from_dict(stored)  # what training records in its checkpoints and sampling rebuilds
    cached = torch.from_numpy(np.load(cache / "shard_00000.mean.npy"))  # (N, 2 flips, C, h, w)
    pixels, _ = build_dataset(str(images), image_size=16, flip="none")
    x = torch.stack([pixels[i][0] for i in range(4)])
    torch.testing.assert_close(cached[:, 0], stage.encode(x)[0], atol=1e-5, rtol=1e-5)  # normalised
    torch.testing.assert_close(cached[:, 1], stage.encode(x.flip(-1))[0], atol=1e-5, rtol=1e-5)

    model = random_tiny_dit(in_channels=8, input_size=8, num_classes=2)
    pipe = DiTPipeline(model, stage, "flow", device="cpu")
    latents = pipe.sample_latents([0, 1], seeds=[0, 1], num_steps=2, sampler="euler", progress=False)
    images_out = pipe([0, 1], num_steps=2, sampler="euler", output_type="tensor", progress=False)
    assert images_out.shape == (2, 3, 16, 16)
    torch.testing.assert_close(pipe.decode(latents), stage.autoencoder.decode(stage.denormalise(latents)))
