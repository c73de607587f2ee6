"""The first-stage interface, and the identity first stage for pixel-space training.

A first stage encodes images in [-1, 1] to the posterior of a latent (its mean and standard
deviation, both already multiplied by the latent scale, or for VA-VAE normalised per channel, so the
diffusion model sees roughly unit-variance latents) and decodes latents back to images. The diffusion model never sees anything
else, so swapping the SD VAE for the identity turns latent DiT into pixel-space DiT.
"""

from __future__ import annotations

import abc
from typing import Any

import torch
from torch import nn

from ditkit.errors import UserError


class FirstStage(nn.Module, abc.ABC):
    """A frozen autoencoder between images and the model's input space.

    Attributes:
        kind: short name stored in checkpoints ("identity", "sd-vae", "vavae").
        image_channels: channels of the images it encodes.
        latent_channels: channels of its latents (the DiT's `in_channels`).
        downsample: image side / latent side (8 for the SD VAE, 1 for the identity).
        scale: factor applied to the posterior after encoding (and undone before decoding).
        deterministic: True when the posterior's std is always zero.
    """

    kind: str
    image_channels: int
    latent_channels: int
    downsample: int
    scale: float
    deterministic: bool

    @abc.abstractmethod
    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode images (B, image_channels, H, W) in [-1, 1].

        Returns:
            mean, std: (B, latent_channels, H / downsample, W / downsample), scaled by `scale`.
        """

    @abc.abstractmethod
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Decode scaled latents (B, latent_channels, h, w) to images (B, image_channels, h*d, w*d), about [-1, 1]."""

    @abc.abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """Plain data from which `first_stage_from_dict` rebuilds this first stage (stored in checkpoints)."""

    @property
    def device(self) -> torch.device:
        """The device its weights live on (CPU for a first stage without weights)."""
        for parameter in self.parameters():
            return parameter.device
        return torch.device("cpu")

    def latent_shape(self, image_size: int) -> tuple[int, int, int]:
        """(latent_channels, side, side) of the latent of an image_size x image_size image."""
        if image_size % self.downsample:
            raise UserError(
                f"image size {image_size} is not a multiple of {self.downsample}, the first stage's "
                f"downsampling factor; pick e.g. {max(1, round(image_size / self.downsample)) * self.downsample}"
            )
        side = image_size // self.downsample
        return self.latent_channels, side, side

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, latent_channels={self.latent_channels}, downsample={self.downsample}"


class IdentityFirstStage(FirstStage):
    """Pixels are the latents: mean = image, std = 0, scale 1. For pixel-space DiT on small images."""

    kind = "identity"
    downsample = 1
    scale = 1.0
    deterministic = True

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        if channels < 1:
            raise UserError(f"the identity first stage needs a positive channel count, got {channels}")
        self.image_channels = channels
        self.latent_channels = channels

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_channels(images, self.image_channels, "images")
        return images, torch.zeros_like(images)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        check_channels(latents, self.latent_channels, "latents")
        return latents

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "channels": self.image_channels}


def check_channels(tensor: torch.Tensor, channels: int, what: str) -> None:
    if tensor.ndim != 4 or tensor.shape[1] != channels:
        raise ValueError(f"expected {what} of shape (B, {channels}, H, W), got {tuple(tensor.shape)}")
