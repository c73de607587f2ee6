"""VA-VAE (Yao et al. 2025, "Reconstruction vs. Generation", arXiv 2501.01423) as a first stage.

VA-VAE is LDM's KL autoencoder trained with its latents aligned to DINOv2 features; LightningDiT
trains on its 32-channel latents at 1/16 of the image side (f16d32). Its latents are normalised per
channel with statistics measured on ImageNet (`latents_stats.pt`): LightningDiT trains on
(z - mean) / std * latent_multiplier and inverts that before decoding.

Nothing is downloaded. `--first-stage vavae-f16d32` reads the released files from a local folder
(`vavae_home() / "vavae-f16d32"`); any other folder holding a checkpoint and `latents_stats.pt`, or
a checkpoint file with `latents_stats.pt` beside it, works too.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ditkit.errors import UserError
from ditkit.first_stage.base import FirstStage, check_channels
from ditkit.first_stage.ldm_autoencoder import LDMAutoencoderConfig, LDMAutoencoderKL
from ditkit.first_stage.weights_file import WEIGHT_SUFFIXES, first_line, read_weights

# The f16d32 tokenizer (hustvl/LightningDiT tokenizer/configs/vavae_f16d32.yaml: ddconfig and embed_dim).
VAVAE_F16D32 = LDMAutoencoderConfig(
    ch=128,
    ch_mult=(1, 1, 2, 2, 4),
    num_res_blocks=2,
    attn_resolutions=(16,),
    resolution=256,
    z_channels=32,
    embed_dim=32,
)
# LightningDiT's configs for VA-VAE: `latent_norm: true` and `latent_multiplier: 1.0` (not SD's 0.18215).
VAVAE_LATENT_MULTIPLIER = 1.0
# The channel-wise latent statistics file ({"mean", "std"}, each (1, C, 1, 1)), by its released name.
STATS_FILE = "latents_stats.pt"
# Optional, beside the checkpoint: their YAML's `model.params` (`embed_dim`, `ddconfig`) as JSON, for
# a tokenizer other than f16d32.
CONFIG_FILE = "config.json"
# Their Lightning checkpoint also holds training-only parts (the LPIPS/discriminator loss, the DINOv2
# teacher and its projection); only these prefixes are the autoencoder, and they must match exactly.
AUTOENCODER_PREFIXES = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")


@dataclass(frozen=True)
class ReleasedVAVAE:
    """A released VA-VAE: its checkpoint's file name, its architecture and where to get both files."""

    checkpoint: str
    config: LDMAutoencoderConfig
    url: str


# Short names for --first-stage -> the released files (huggingface.co/hustvl/vavae-imagenet256-f16d32-dinov2).
VAVAE_MODELS = {
    "vavae-f16d32": ReleasedVAVAE(
        "vavae-imagenet256-f16d32-dinov2.pt",
        VAVAE_F16D32,
        "https://huggingface.co/hustvl/vavae-imagenet256-f16d32-dinov2",
    ),
}

# LightningDiT's tokenizer (its configs' `vae.model_name: vavae_f16d32`): the first stage where a 32-channel
# checkpoint names none.
DEFAULT_VAVAE = "vavae-f16d32"


class VAVAEFirstStage(FirstStage):
    """A frozen LDM autoencoder whose latents are normalised per channel.

    Latents seen by the DiT are (z - latent_mean) / latent_std * scale, z the autoencoder's latent;
    `encode` returns the posterior's mean and std in that space, `decode` undoes it first.

    Args:
        autoencoder: the LDM autoencoder (put in eval mode, gradients off).
        latent_mean, latent_std: (C,) channel statistics of its latents.
        source: where it came from (a short name or an absolute path), stored by `to_dict`.
        scale: LightningDiT's latent multiplier.
    """

    kind = "vavae"
    deterministic = False
    latent_mean: torch.Tensor  # (1, C, 1, 1) buffers: they follow the module to its device
    latent_std: torch.Tensor

    def __init__(
        self,
        autoencoder: LDMAutoencoderKL,
        latent_mean: torch.Tensor,
        latent_std: torch.Tensor,
        source: str,
        scale: float = VAVAE_LATENT_MULTIPLIER,
    ) -> None:
        super().__init__()
        self.autoencoder = autoencoder.eval().requires_grad_(False)
        cfg = autoencoder.config
        self.image_channels = cfg.in_channels
        self.latent_channels = cfg.embed_dim
        self.downsample = cfg.downsample
        self.scale = scale
        self.source = source
        self.register_buffer("latent_mean", latent_mean.float().reshape(1, -1, 1, 1), persistent=False)
        self.register_buffer("latent_std", latent_std.float().reshape(1, -1, 1, 1), persistent=False)

    def normalise(self, z: torch.Tensor) -> torch.Tensor:
        """Autoencoder latents (B, C, h, w) -> the DiT's: (z - mean) / std * scale."""
        return (z - self.latent_mean) / self.latent_std * self.scale

    def denormalise(self, latents: torch.Tensor) -> torch.Tensor:
        """The DiT's latents (B, C, h, w) -> the autoencoder's: latents / scale * std + mean."""
        return latents / self.scale * self.latent_std + self.latent_mean

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_channels(images, self.image_channels, "images")
        weight = self.autoencoder.quant_conv.weight
        mean, std = self.autoencoder.encode(images.to(weight.device, weight.dtype))
        # An affine map per channel: the normalised posterior is N(normalise(mean), std / std_c * scale).
        return self.normalise(mean), std / self.latent_std * self.scale

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        check_channels(latents, self.latent_channels, "latents")
        weight = self.autoencoder.quant_conv.weight
        return self.autoencoder.decode(self.denormalise(latents.to(weight.device, weight.dtype)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "source": self.source,
            "scale": self.scale,
            "latent_channels": self.latent_channels,
            "downsample": self.downsample,
            "latent_mean": self.latent_mean.flatten().tolist(),
            "latent_std": self.latent_std.flatten().tolist(),
        }


def vavae_home() -> Path:
    """The folder holding one sub-folder per short name: `$XDG_CACHE_HOME/ditkit` (default ~/.cache/ditkit)."""
    cache = os.environ.get("XDG_CACHE_HOME", "").strip() or "~/.cache"
    return Path(cache).expanduser() / "ditkit"


def is_vavae_spec(spec: str) -> bool:
    """True for a VA-VAE short name, or a folder or file with latents_stats.pt or a released checkpoint."""
    if spec in VAVAE_MODELS:
        return True
    path = Path(spec).expanduser()
    released = {r.checkpoint for r in VAVAE_MODELS.values()}
    if path.is_dir():
        return any((path / name).is_file() for name in (STATS_FILE, *released))
    return path.is_file() and ((path.parent / STATS_FILE).is_file() or path.name in released)


def load_vavae(spec: str) -> VAVAEFirstStage:
    """Load VA-VAE from a short name ("vavae-f16d32"), a folder, or a checkpoint file.

    Raises:
        UserError: a file is missing or does not fit the architecture (one line naming it).
    """
    checkpoint, stats, config, source = _resolve(spec)
    mean, std = read_latent_stats(stats, config.embed_dim)
    autoencoder = _load_autoencoder(checkpoint, config)
    return VAVAEFirstStage(autoencoder, mean, std, source)


def planned_vavae_geometry(spec: str) -> tuple[int, int]:
    """(latent channels, downsampling factor) of the VA-VAE `spec` names, read without loading weights."""
    if spec in VAVAE_MODELS:
        config = VAVAE_MODELS[spec].config
    else:
        path = Path(spec).expanduser()
        config = _read_config((path if path.is_dir() else path.parent) / CONFIG_FILE)
    return config.embed_dim, config.downsample


def read_latent_stats(path: Path, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The (C,) mean and std of `latents_stats.pt` ({"mean", "std"}, each (1, C, 1, 1) as released)."""
    try:
        stats = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, ValueError, RuntimeError, EOFError, pickle.UnpicklingError) as err:
        raise UserError(f"cannot read {path}: {first_line(err)}") from err
    tensors = [stats.get(key) if isinstance(stats, dict) else None for key in ("mean", "std")]
    if not all(isinstance(t, torch.Tensor) and t.numel() == channels for t in tensors):
        raise UserError(f"{path} does not hold 'mean' and 'std' tensors of {channels} channels each")
    mean, std = (t.detach().float().flatten() for t in tensors)  # type: ignore[union-attr]
    if not bool((std > 0).all()):
        raise UserError(f"{path} has a latent std that is not positive")
    return mean, std


def check_same_vavae(first_stage: FirstStage, stored: Mapping[str, Any], where: str) -> None:
    """Refuse a VA-VAE whose normalisation differs from the one `stored` (a `to_dict`) was made with.

    Latents of a cache or a checkpoint are only meaningful with the statistics that normalised them.
    """
    if not isinstance(first_stage, VAVAEFirstStage):
        raise UserError(
            f"{where} is not a VA-VAE, but the stored first stage is; pass the VA-VAE it was made with"
        )
    current = first_stage.to_dict()
    for key in ("scale", "latent_mean", "latent_std"):
        if key in stored and not torch.allclose(
            torch.tensor(current[key], dtype=torch.float64),
            torch.tensor(stored[key], dtype=torch.float64),
            rtol=1e-6,
            atol=0.0,
        ):
            raise UserError(
                f"the VA-VAE at {where} has another {key.replace('_', ' ')} than the stored first stage "
                f"({STATS_FILE} or latent multiplier differ); pass the files it was made with"
            )


def _resolve(spec: str) -> tuple[Path, Path, LDMAutoencoderConfig, str]:
    """(checkpoint, stats file, architecture, source to record) of a spec."""
    if spec in VAVAE_MODELS:
        released = VAVAE_MODELS[spec]
        folder = vavae_home() / spec
        missing = [name for name in (released.checkpoint, STATS_FILE) if not (folder / name).is_file()]
        if missing:
            raise UserError(
                f"{spec} needs {released.checkpoint} and {STATS_FILE} in {folder} (missing: "
                f"{', '.join(missing)}); download them from {released.url} into that folder, or pass "
                "the folder that holds them to --first-stage"
            )
        return folder / released.checkpoint, folder / STATS_FILE, released.config, spec
    path = Path(spec).expanduser().absolute()
    folder = path if path.is_dir() else path.parent
    checkpoint = _find_checkpoint(folder) if path.is_dir() else path
    if not (folder / STATS_FILE).is_file():
        url = next(iter(VAVAE_MODELS.values())).url
        raise UserError(
            f"no {STATS_FILE} in {folder}: VA-VAE needs the channel statistics of its latents beside the "
            f"checkpoint (the released f16d32's are at {url})"
        )
    return checkpoint, folder / STATS_FILE, _read_config(folder / CONFIG_FILE), str(path)


def _find_checkpoint(folder: Path) -> Path:
    for released in VAVAE_MODELS.values():
        if (folder / released.checkpoint).is_file():
            return folder / released.checkpoint
    candidates = sorted(
        p for p in folder.iterdir() if p.suffix.lower() in WEIGHT_SUFFIXES and p.name != STATS_FILE
    )
    if len(candidates) != 1:
        found = "none" if not candidates else ", ".join(p.name for p in candidates)
        raise UserError(
            f"{folder} should hold one VA-VAE checkpoint beside {STATS_FILE} (found {found}); "
            "pass the checkpoint file itself"
        )
    return candidates[0]


def _read_config(path: Path) -> LDMAutoencoderConfig:
    """Their YAML's `model.params` as JSON ({"embed_dim", "ddconfig": {...}}); f16d32 when absent."""
    if not path.is_file():
        return VAVAE_F16D32
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        ddconfig = dict(data.get("ddconfig", {}))
        if not ddconfig.pop("double_z", True):
            raise ValueError("double_z is false, but a KL autoencoder predicts a mean and a variance")
        names = {f.name for f in dataclasses.fields(LDMAutoencoderConfig)} - {"embed_dim"}
        fields: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else int(v) for k, v in ddconfig.items() if k in names
        }
        fields["embed_dim"] = int(data.get("embed_dim", fields.get("z_channels", VAVAE_F16D32.embed_dim)))
        return dataclasses.replace(VAVAE_F16D32, **fields)
    except (OSError, ValueError, TypeError, AttributeError) as err:
        raise UserError(f"cannot read the VA-VAE config {path}: {first_line(err)}") from err


def _load_autoencoder(path: Path, config: LDMAutoencoderConfig) -> LDMAutoencoderKL:
    """The autoencoder with every weight of `path` under AUTOENCODER_PREFIXES, none missing or extra."""
    weights = read_weights(path)
    found = {k: v for k, v in weights.items() if k.startswith(AUTOENCODER_PREFIXES)}
    model = LDMAutoencoderKL(config)
    expected = model.state_dict()
    missing = sorted(expected.keys() - found.keys())
    unexpected = sorted(found.keys() - expected.keys())
    reshaped = sorted(k for k in expected.keys() & found.keys() if found[k].shape != expected[k].shape)
    problem = (
        f"{len(missing)} weights missing (e.g. {missing[0]})"
        if missing
        else f"{len(unexpected)} unexpected weights (e.g. {unexpected[0]})"
        if unexpected
        else f"{len(reshaped)} weights of another shape (e.g. {reshaped[0]})"
        if reshaped
        else None
    )
    if problem is not None:
        raise UserError(
            f"{path} is not a VA-VAE checkpoint of the expected architecture: {problem}; for a tokenizer "
            f"other than f16d32 put a {CONFIG_FILE} ({{'embed_dim', 'ddconfig'}} of its YAML) beside it"
        )
    model.load_state_dict(found, strict=True)
    return model
