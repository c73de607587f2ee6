"""The Stable Diffusion VAE (diffusers' AutoencoderKL) as a first stage, and its loaders.

DiT encodes images with `stabilityai/sd-vae-ft-ema` (or `-mse`: the paper reports the choice barely
matters) and multiplies latents by 0.18215. The VAE comes from a local diffusers folder, a single
weights file (diffusers or original LDM key layout), or the Hugging Face hub.
"""

from __future__ import annotations

import contextlib
import json
import re
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from ditkit.errors import UserError
from ditkit.extras import optional_dependency
from ditkit.first_stage.base import FirstStage, check_channels
from ditkit.first_stage.weights_file import first_line, read_weights

# Latent scale of the SD VAE (Rombach et al. 2022, LDM sec. 4.3.2: makes latents about unit variance);
# DiT's train.py multiplies latents by it and sample.py divides by it before decoding.
SD_VAE_LATENT_SCALE = 0.18215
# The SD VAE maps RGB (3, H, W) images to (4, H / 8, W / 8) latents (facebookresearch/DiT train.py:
# `latent_size = args.image_size // 8`, and DiT's in_channels 4).
SD_VAE_IMAGE_CHANNELS = 3
SD_VAE_LATENT_CHANNELS = 4
SD_VAE_DOWNSAMPLE = 8
# Short names -> hub repositories of the two VAEs DiT offers (train.py --vae ema|mse).
SD_VAE_REPOS = {"sd-vae-ft-ema": "stabilityai/sd-vae-ft-ema", "sd-vae-ft-mse": "stabilityai/sd-vae-ft-mse"}
# DiT's default (train.py and sample.py --vae ema): the first stage where a run or a checkpoint names none.
DEFAULT_SD_VAE = "sd-vae-ft-ema"
# config.json of stabilityai/sd-vae-ft-ema (identical for -mse): used for a weights file that has no
# config.json beside it.
SD_VAE_CONFIG: dict[str, Any] = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": SD_VAE_IMAGE_CHANNELS,
    "latent_channels": SD_VAE_LATENT_CHANNELS,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": SD_VAE_IMAGE_CHANNELS,
    "sample_size": 256,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}
# Attention weight names of diffusers < 0.14, still found in older single-file exports.
_LEGACY_ATTENTION_NAMES = {
    ".query.": ".to_q.",
    ".key.": ".to_k.",
    ".value.": ".to_v.",
    ".proj_attn.": ".to_out.0.",
}
_REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")


class SDVAEFirstStage(FirstStage):
    """A frozen diffusers `AutoencoderKL`; latents are multiplied by `scale` after encoding.

    Args:
        vae: the autoencoder (put in eval mode, gradients off).
        source: where it came from (hub repo id or absolute path), stored by `to_dict`.
    """

    kind = "sd-vae"
    deterministic = False

    def __init__(self, vae: Any, source: str) -> None:
        super().__init__()
        self.vae = vae.eval().requires_grad_(False)
        self.source = source
        config = vae.config
        self.image_channels = int(config.in_channels)
        self.latent_channels = int(config.latent_channels)
        # Each encoder block but the last halves the resolution.
        self.downsample = 2 ** (len(config.block_out_channels) - 1)
        self.scale = float(config.get("scaling_factor", SD_VAE_LATENT_SCALE))

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_channels(images, self.image_channels, "images")
        weight = next(self.vae.parameters())
        posterior = self.vae.encode(images.to(weight.device, weight.dtype)).latent_dist
        return posterior.mean * self.scale, posterior.std * self.scale

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        check_channels(latents, self.latent_channels, "latents")
        weight = next(self.vae.parameters())
        return self.vae.decode(latents.to(weight.device, weight.dtype) / self.scale).sample

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "source": self.source,
            "scale": self.scale,
            "latent_channels": self.latent_channels,
            "downsample": self.downsample,
        }


def load_sd_vae(spec: str) -> SDVAEFirstStage:
    """Load an AutoencoderKL from a folder, a weights file, a short name or a hub repo id.

    Args:
        spec: a diffusers folder (config.json + weights, or a pipeline folder with vae/), a
            .safetensors/.ckpt/.pt/.bin file, "sd-vae-ft-ema", "sd-vae-ft-mse" or "owner/name".

    Raises:
        UserError: nothing loadable at `spec`, or the hub is unreachable and the VAE not cached.
    """
    path = Path(spec).expanduser()
    if path.is_dir():
        return SDVAEFirstStage(_from_folder(path), str(path.absolute()))
    if path.is_file():
        return SDVAEFirstStage(_from_single_file(path), str(path.absolute()))
    repo = SD_VAE_REPOS.get(spec, spec)
    if not _REPO_ID.fullmatch(repo):
        raise UserError(_unknown_spec_message(spec))
    return SDVAEFirstStage(_from_hub(repo), repo)


def planned_vae_geometry(spec: str) -> tuple[int, int] | None:
    """(latent channels, downsampling factor) of the VAE `spec` names, from its config alone.

    No weights are read and the network is never touched: the short names use SD_VAE_CONFIG, local
    folders and files their config.json (a file without one SD_VAE_CONFIG, as `load_sd_vae` does).
    None for other hub repositories, whose config is only known once fetched; a path that is neither
    a file, a folder nor a repository id raises the same error as `load_sd_vae`.
    """
    path = Path(spec).expanduser()
    config: Mapping[str, Any] | None = None
    if spec in SD_VAE_REPOS:
        config = SD_VAE_CONFIG
    elif path.is_dir():
        for candidate in (path / "config.json", path / "vae" / "config.json"):
            if candidate.is_file():
                config = _read_json(candidate)
                break
    elif path.is_file():
        beside = path.parent / "config.json"
        config = _read_json(beside) if beside.is_file() else SD_VAE_CONFIG
    elif not _REPO_ID.fullmatch(spec):
        raise UserError(_unknown_spec_message(spec))
    if config is None or "latent_channels" not in config or "block_out_channels" not in config:
        return None
    return int(config["latent_channels"]), 2 ** (len(config["block_out_channels"]) - 1)


def _read_json(path: Path) -> Mapping[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # left for the loader to report in full
    return data if isinstance(data, Mapping) else None


def _unknown_spec_message(spec: str) -> str:
    return (
        f"unknown first stage {spec!r} (no such file or folder); use identity, "
        f"{', '.join(SD_VAE_REPOS)}, a hub repo id, a diffusers VAE folder or a .safetensors/.ckpt file"
    )


def _from_folder(folder: Path) -> Any:
    with optional_dependency("diffusers", "the SD VAE"):
        from diffusers import AutoencoderKL

    subfolder = None
    if not (folder / "config.json").is_file():
        if not (folder / "vae" / "config.json").is_file():
            raise UserError(
                f"{folder} has no config.json (nor vae/config.json); pass a folder written by "
                "AutoencoderKL.save_pretrained or a single .safetensors/.ckpt file"
            )
        subfolder = "vae"
    try:
        return AutoencoderKL.from_pretrained(folder, subfolder=subfolder, low_cpu_mem_usage=False)
    except (OSError, ValueError, RuntimeError) as err:
        raise UserError(f"cannot load a VAE from {folder}: {first_line(err)}") from err


def _from_hub(repo: str) -> Any:
    from ditkit.hub import hub_unreachable_reason

    try:  # the local cache first: no network, no retries
        return _hub_pretrained(repo, local_files_only=True)
    except (OSError, ValueError):
        pass
    local_hint = (
        "pass a local VAE folder or a .safetensors/.ckpt file to --first-stage (or, to train in pixel "
        "space without a VAE, --first-stage identity)"
    )
    problem = hub_unreachable_reason()  # asked once: no retries, no log lines
    if problem is not None:
        raise UserError(
            f"{repo} is not in the Hugging Face cache and the hub is out of reach ({problem}); {local_hint}"
        )
    try:
        return _hub_pretrained(repo, local_files_only=False)
    except (OSError, ValueError) as err:
        raise UserError(
            f"cannot get {repo} from the Hugging Face hub ({first_line(err)}); "
            f"check the network and the name, or {local_hint}"
        ) from err


def _hub_pretrained(repo: str, local_files_only: bool) -> Any:
    with optional_dependency("diffusers", "the SD VAE"):
        from diffusers import AutoencoderKL

    with warnings.catch_warnings(), _no_network(local_files_only):
        warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")  # diffusers' old argument
        return AutoencoderKL.from_pretrained(repo, local_files_only=local_files_only, low_cpu_mem_usage=False)


@contextlib.contextmanager
def _no_network(enabled: bool) -> Iterator[None]:
    """Hold huggingface_hub offline: even with local_files_only it fetches a registry for its user agent."""
    if not enabled:
        yield
        return
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


def _from_single_file(path: Path) -> Any:
    """Build the VAE from config.json beside the file (else SD_VAE_CONFIG) and load the weights.

    Done here rather than with `AutoencoderKL.from_single_file`, which fetches a config from the hub
    when none is given and so fails offline.
    """
    with optional_dependency("diffusers", "the SD VAE"):
        from diffusers import AutoencoderKL

    weights = read_weights(path)  # first: a bad file fails before a large model is built
    config_file = path.parent / "config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else SD_VAE_CONFIG
    vae = AutoencoderKL.from_config(config)
    state = _to_diffusers_layout(weights, vae.config, set(vae.state_dict()), path)
    try:
        vae.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise UserError(
            f"{path} does not fit the VAE config ({first_line(err)}); put its config.json beside it"
        ) from err
    return vae


def _to_diffusers_layout(
    state: dict[str, torch.Tensor], config: Any, expected: set[str], path: Path
) -> dict[str, torch.Tensor]:
    """Return the weights under diffusers' names: as stored, legacy attention names, or LDM names."""
    if expected <= state.keys():
        return {key: state[key] for key in expected}
    renamed = {_rename_legacy(key): value for key, value in state.items()}
    if expected <= renamed.keys():
        return {key: renamed[key] for key in expected}
    with optional_dependency("diffusers", "the SD VAE"):
        from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    try:
        converted = convert_ldm_vae_checkpoint(state, config)
    except (KeyError, IndexError, ValueError, AttributeError):
        converted = {}
    if expected <= converted.keys():
        return {key: converted[key] for key in expected}
    missing = sorted(expected - converted.keys()) if converted else sorted(expected - state.keys())
    raise UserError(
        f"{path} is not a VAE checkpoint of this architecture: {len(missing)} weights missing "
        f"(e.g. {missing[0]}); pass the VAE's diffusers folder or put its config.json beside the file"
    )


def _rename_legacy(key: str) -> str:
    if ".attentions." not in key:
        return key
    for old, new in _LEGACY_ATTENTION_NAMES.items():
        key = key.replace(old, new)
    return key
