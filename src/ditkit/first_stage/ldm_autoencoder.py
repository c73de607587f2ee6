"""The KL-regularised autoencoder of latent diffusion (Rombach et al. 2022), under LDM's own weight names.

This is the convolutional VAE of CompVis' `ldm.modules.diffusionmodules.model` (Encoder, Decoder) and
`ldm.models.autoencoder.AutoencoderKL` (quant_conv, post_quant_conv): the architecture VA-VAE keeps
(Yao et al. 2025, arXiv 2501.01423), so its checkpoints load here key for key. diffusers'
`AutoencoderKL` is the same family, but it cannot place self-attention inside a resolution level, which
VA-VAE's f16d32 model has at 16x16 (`attn_resolutions: [16]`); hence this small implementation.

Shapes below: B batch, C channels, H x W the feature map at the current level.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# LDM's Normalize(): GroupNorm with 32 groups and eps 1e-6 everywhere in the autoencoder.
GROUP_NORM_GROUPS = 32
GROUP_NORM_EPS = 1e-6
# LDM's DiagonalGaussianDistribution clamps the log-variance to this range before taking exp.
LOGVAR_RANGE = (-30.0, 20.0)


@dataclass(frozen=True)
class LDMAutoencoderConfig:
    """LDM's `ddconfig` plus `embed_dim`, under LDM's names (the fields of their YAML configs).

    Attributes:
        ch: channels of the first level; level i has ch * ch_mult[i].
        ch_mult: one entry per resolution level; every level but the last halves the resolution.
        num_res_blocks: ResNet blocks per encoder level (the decoder has one more).
        attn_resolutions: feature-map sides (counted from `resolution`) whose levels add self-attention
            after each ResNet block; the middle block always has one.
        resolution: the image side the attention levels are counted from (not a limit on inputs).
        z_channels: channels of the encoder's output (doubled: mean and log-variance).
        embed_dim: latent channels after quant_conv.
        in_channels, out_ch: image channels in and out.
    """

    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = ()
    resolution: int = 256
    z_channels: int = 4
    embed_dim: int = 4
    in_channels: int = 3
    out_ch: int = 3

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    def has_attention(self, level: int) -> bool:
        return self.resolution // 2**level in self.attn_resolutions


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(GROUP_NORM_GROUPS, channels, eps=GROUP_NORM_EPS)


class ResnetBlock(nn.Module):
    """norm-SiLU-conv twice plus a skip; a 1x1 conv (`nin_shortcut`) on the skip when channels change."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))  # LDM's dropout is 0 in every released config
        skip = x if self.nin_shortcut is None else self.nin_shortcut(x)
        return skip + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the H*W positions, with 1x1 convolutions as projections."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)
        q, k, v = (proj(y).flatten(2).transpose(1, 2) for proj in (self.q, self.k, self.v))  # (B, HW, C)
        y = F.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(C), as LDM's
        y = y.transpose(1, 2).reshape(b, c, h, w)
        return x + self.proj_out(y)


class Downsample(nn.Module):
    """Stride-2 3x3 conv after padding right and bottom by one (LDM's asymmetric padding)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour 2x, then a 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One resolution level: ResNet blocks (`block`), each followed by attention when `attn` has any."""

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, attention: bool) -> None:
        super().__init__()
        ins = [in_channels] + [out_channels] * (num_blocks - 1)
        self.block = nn.ModuleList(ResnetBlock(c, out_channels) for c in ins)
        self.attn = nn.ModuleList(AttnBlock(out_channels) for _ in range(num_blocks if attention else 0))

    def run_blocks(self, h: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.block):
            h = block(h)
            if len(self.attn):
                h = self.attn[i](h)
        return h


class EncoderLevel(Level):
    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, attention: bool, last: bool):
        super().__init__(in_channels, out_channels, num_blocks, attention)
        self.downsample = None if last else Downsample(out_channels)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = self.run_blocks(h)
        return h if self.downsample is None else self.downsample(h)


class DecoderLevel(Level):
    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, attention: bool, first: bool):
        super().__init__(in_channels, out_channels, num_blocks, attention)
        self.upsample = None if first else Upsample(out_channels)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = self.run_blocks(h)
        return h if self.upsample is None else self.upsample(h)


class MidBlock(nn.Module):
    """ResNet block, self-attention, ResNet block, at the lowest resolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(h)))


class Encoder(nn.Module):
    """Images (B, in_channels, H, W) -> moments (B, 2 * z_channels, H / d, W / d), d = 2^(levels - 1)."""

    def __init__(self, cfg: LDMAutoencoderConfig) -> None:
        super().__init__()
        widths = [cfg.ch * m for m in cfg.ch_mult]
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, 3, padding=1)
        ins = [cfg.ch, *widths[:-1]]
        last = len(widths) - 1
        self.down = nn.ModuleList(
            EncoderLevel(ins[i], widths[i], cfg.num_res_blocks, cfg.has_attention(i), i == last)
            for i in range(len(widths))
        )
        self.mid = MidBlock(widths[-1])
        self.norm_out = _norm(widths[-1])
        self.conv_out = nn.Conv2d(widths[-1], 2 * cfg.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """Latents (B, z_channels, h, w) -> images (B, out_ch, h * d, w * d); levels run from the last to 0."""

    def __init__(self, cfg: LDMAutoencoderConfig) -> None:
        super().__init__()
        widths = [cfg.ch * m for m in cfg.ch_mult]
        self.conv_in = nn.Conv2d(cfg.z_channels, widths[-1], 3, padding=1)
        self.mid = MidBlock(widths[-1])
        # Level i takes the width of level i + 1 (the one run before it); `up` is indexed by level.
        ins = [*widths[1:], widths[-1]]
        self.up = nn.ModuleList(
            DecoderLevel(ins[i], widths[i], cfg.num_res_blocks + 1, cfg.has_attention(i), i == 0)
            for i in range(len(widths))
        )
        self.norm_out = _norm(widths[0])
        self.conv_out = nn.Conv2d(widths[0], cfg.out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class LDMAutoencoderKL(nn.Module):
    """Encoder, decoder and the 1x1 convolutions between them and the latent (`quant_conv`, `post_quant_conv`)."""

    def __init__(self, cfg: LDMAutoencoderConfig) -> None:
        super().__init__()
        self.config = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quant_conv = nn.Conv2d(2 * cfg.z_channels, 2 * cfg.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(cfg.embed_dim, cfg.z_channels, 1)

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The posterior of images (B, in_channels, H, W) in [-1, 1].

        Returns:
            mean, std: (B, embed_dim, H / d, W / d).
        """
        moments = self.quant_conv(self.encoder(images))  # (B, 2 * embed_dim, h, w)
        mean, logvar = moments.chunk(2, dim=1)
        return mean, torch.exp(0.5 * logvar.clamp(*LOGVAR_RANGE))

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents (B, embed_dim, h, w) -> images (B, out_ch, h * d, w * d), about [-1, 1]."""
        return self.decoder(self.post_quant_conv(latents))
