"""First stages: identity, and the SD VAE loaded from folders and single files of a tiny random VAE.

Nothing is downloaded: the VAE is a randomly initialised diffusers AutoencoderKL with the SD VAE's
architecture shrunk (2 blocks of 32/64 channels), saved by the test itself.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL

from ditkit.errors import UserError
from ditkit.first_stage import sd_vae
from ditkit.first_stage.base import IdentityFirstStage
from ditkit.first_stage.load import first_stage_from_dict, load_first_stage
from ditkit.first_stage.sd_vae import SD_VAE_LATENT_SCALE, SDVAEFirstStage

TINY_VAE = {
    "block_out_channels": (32, 64),
    "down_block_types": ("DownEncoderBlock2D",) * 2,
    "up_block_types": ("UpDecoderBlock2D",) * 2,
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 32,
}


def save_tiny_vae(folder: Path, seed: int = 0) -> AutoencoderKL:
    """Save a random tiny AutoencoderKL with save_pretrained (config.json + safetensors); return it."""
    torch.manual_seed(seed)  # test-only: diffusers initialises from the global RNG
    vae = AutoencoderKL(**TINY_VAE).eval()
    with torch.no_grad():  # make the posterior std non-trivial and input-dependent
        for parameter in vae.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    vae.save_pretrained(folder)
    return vae


def _images(n: int = 2, size: int = 16) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1


def _assert_same_vae(first_stage: SDVAEFirstStage, vae: AutoencoderKL) -> None:
    x = _images()
    mean, std = first_stage.encode(x)
    with torch.no_grad():
        posterior = vae.encode(x).latent_dist
    torch.testing.assert_close(mean, posterior.mean * SD_VAE_LATENT_SCALE)
    torch.testing.assert_close(std, posterior.std * SD_VAE_LATENT_SCALE)


def test_identity_first_stage():
    first_stage = load_first_stage("identity", channels=1)
    assert isinstance(first_stage, IdentityFirstStage)
    x = torch.randn(2, 1, 8, 8)
    mean, std = first_stage.encode(x)
    assert torch.equal(mean, x) and torch.equal(std, torch.zeros_like(x))
    assert torch.equal(first_stage.decode(mean), x)
    assert first_stage.latent_shape(8) == (1, 8, 8) and first_stage.downsample == 1
    rebuilt = first_stage_from_dict(json.loads(json.dumps(first_stage.to_dict())))
    assert isinstance(rebuilt, IdentityFirstStage) and rebuilt.latent_channels == 1
    with pytest.raises(ValueError, match="shape"):
        first_stage.encode(torch.zeros(2, 3, 8, 8))


def test_vae_from_folder_matches_diffusers(tmp_path):
    vae = save_tiny_vae(tmp_path / "vae")
    first_stage = load_first_stage(str(tmp_path / "vae"))
    assert isinstance(first_stage, SDVAEFirstStage)
    assert first_stage.scale == SD_VAE_LATENT_SCALE == 0.18215
    assert (first_stage.image_channels, first_stage.latent_channels, first_stage.downsample) == (3, 4, 2)
    assert first_stage.latent_shape(16) == (4, 8, 8)
    _assert_same_vae(first_stage, vae)
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = vae.decode(z / SD_VAE_LATENT_SCALE).sample
    torch.testing.assert_close(first_stage.decode(z), expected)
    assert not any(p.requires_grad for p in first_stage.parameters())
    with pytest.raises(UserError, match="multiple of 2"):
        first_stage.latent_shape(15)


def test_vae_from_pipeline_folder_and_from_dict(tmp_path):
    vae = save_tiny_vae(tmp_path / "pipeline" / "vae")
    first_stage = load_first_stage(str(tmp_path / "pipeline"))
    _assert_same_vae(first_stage, vae)
    description = json.loads(json.dumps(first_stage.to_dict()))
    assert description["kind"] == "sd-vae" and description["scale"] == SD_VAE_LATENT_SCALE
    _assert_same_vae(first_stage_from_dict(description), vae)  # type: ignore[arg-type]
    with pytest.raises(UserError, match="latent scale"):
        first_stage_from_dict({**description, "scale": 0.5})


def test_vae_from_single_files(tmp_path):
    vae = save_tiny_vae(tmp_path / "vae")
    weights = tmp_path / "vae" / "diffusion_pytorch_model.safetensors"
    _assert_same_vae(load_first_stage(str(weights)), vae)  # diffusers layout, config.json beside

    legacy = {_legacy_name(k): v for k, v in vae.state_dict().items()}
    assert any(".query." in k for k in legacy)
    torch.save(legacy, tmp_path / "vae" / "legacy.bin")
    _assert_same_vae(load_first_stage(str(tmp_path / "vae" / "legacy.bin")), vae)

    ldm = {f"first_stage_model.{_ldm_name(k)}": _ldm_value(k, v) for k, v in vae.state_dict().items()}
    ldm["model.diffusion_model.input_blocks.0.weight"] = torch.zeros(1)  # rest of an SD checkpoint
    torch.save({"state_dict": ldm, "global_step": 7}, tmp_path / "vae" / "original.ckpt")
    _assert_same_vae(load_first_stage(str(tmp_path / "vae" / "original.ckpt")), vae)


def test_single_file_without_config_uses_sd_architecture(tmp_path):
    vae = save_tiny_vae(tmp_path / "vae")
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "tiny.safetensors").write_bytes(
        (tmp_path / "vae" / "diffusion_pytorch_model.safetensors").read_bytes()
    )
    # Without config.json the SD VAE architecture is assumed, which the tiny weights do not fit.
    with pytest.raises(UserError, match="config.json"):
        load_first_stage(str(alone / "tiny.safetensors"))
    del vae


@pytest.mark.parametrize("case", ["garbage", "suffix", "no-config", "unknown"])
def test_bad_specs_raise_user_errors(tmp_path, case):
    if case == "garbage":
        spec = tmp_path / "vae.safetensors"
        spec.write_bytes(b"\x00not safetensors")
    elif case == "suffix":
        spec = tmp_path / "vae.onnx"
        spec.write_bytes(b"x")
    elif case == "no-config":
        spec = tmp_path / "empty"
        spec.mkdir()
    else:
        spec = Path("no such thing")
    with pytest.raises(UserError):
        load_first_stage(str(spec))


def test_hub_offline_gives_a_user_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="HF_HUB_OFFLINE.*local VAE folder"):
        load_first_stage("ditkit-tests/no-such-vae")


def test_short_names_resolve_to_stabilityai_repos(monkeypatch):
    asked = []
    monkeypatch.setattr(sd_vae, "_from_hub", lambda repo: asked.append(repo) or AutoencoderKL(**TINY_VAE))
    assert load_first_stage("sd-vae-ft-mse").to_dict()["source"] == "stabilityai/sd-vae-ft-mse"
    load_first_stage("sd-vae-ft-ema")
    assert asked == ["stabilityai/sd-vae-ft-mse", "stabilityai/sd-vae-ft-ema"]


def _legacy_name(key: str) -> str:
    """diffusers < 0.14 attention names."""
    for new, old in (
        (".to_q.", ".query."),
        (".to_k.", ".key."),
        (".to_v.", ".value."),
        (".to_out.0.", ".proj_attn."),
    ):
        key = key.replace(new, old)
    return key


def _ldm_name(key: str) -> str:
    """The original LDM (CompVis) name of a diffusers AutoencoderKL weight, for 2 resolution levels."""
    num_levels = len(TINY_VAE["block_out_channels"])
    key = re.sub(r"encoder\.down_blocks\.(\d+)\.resnets\.", r"encoder.down.\1.block.", key)
    key = re.sub(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", key)
    level = lambda m: str(num_levels - 1 - int(m.group(1)))  # noqa: E731  LDM numbers decoder levels bottom-up
    key = re.sub(r"decoder\.up_blocks\.(\d+)\.resnets\.", lambda m: f"decoder.up.{level(m)}.block.", key)
    key = re.sub(
        r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.", lambda m: f"decoder.up.{level(m)}.upsample.", key
    )
    key = key.replace("mid_block.resnets.0.", "mid.block_1.").replace("mid_block.resnets.1.", "mid.block_2.")
    key = key.replace("mid_block.attentions.0.", "mid.attn_1.")
    for new, old in (
        ("group_norm", "norm"),
        ("to_q", "q"),
        ("to_k", "k"),
        ("to_v", "v"),
        ("to_out.0", "proj_out"),
    ):
        key = key.replace(f"attn_1.{new}.", f"attn_1.{old}.")
    return key.replace("conv_shortcut", "nin_shortcut").replace("conv_norm_out", "norm_out")


def _ldm_value(key: str, value: torch.Tensor) -> torch.Tensor:
    # LDM's attention projections are 1x1 convolutions; diffusers' are linear layers.
    if "attentions" in key and value.ndim == 2:
        return value[:, :, None, None]
    return value
