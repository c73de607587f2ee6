"""Input embeddings of DiT: patches, fixed 2-D sin-cos positions, timesteps and class labels."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ditkit.model.cost import TIMESTEP_FREQ_DIM

# Longest period of the sinusoidal timestep features (Transformer positional encoding).
MAX_PERIOD = 10_000
# Base of the rotary embedding's frequencies (Su et al. 2021, RoFormer; LightningDiT takes EVA-02's
# `VisionRotaryEmbeddingFast` with theta 10000).
ROPE_THETA = 10_000


def sincos_1d(dim: int, positions: np.ndarray) -> np.ndarray:
    """Sin-cos features of 1-D positions: (M,) -> (M, dim), sines first, in float64."""
    if dim % 2:
        raise ValueError(f"sin-cos embedding width must be even, got {dim}")
    omega = 1.0 / MAX_PERIOD ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    angles = np.outer(positions.reshape(-1).astype(np.float64), omega)  # (M, dim/2)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def sincos_2d(dim: int, grid_h: int, grid_w: int) -> np.ndarray:
    """Fixed 2-D sin-cos position embedding of a grid_h x grid_w patch grid: (grid_h * grid_w, dim).

    Patches are numbered row-major. Half of the width encodes the column, half the row, in
    that order (the layout of the official DiT and MAE code, so official weights line up).
    """
    if dim % 4:
        raise ValueError(f"2-D sin-cos embedding width must be divisible by 4, got {dim}")
    cols, rows = np.meshgrid(np.arange(grid_w), np.arange(grid_h))  # each (grid_h, grid_w)
    return np.concatenate([sincos_1d(dim // 2, cols), sincos_1d(dim // 2, rows)], axis=1)


def timestep_features(t: torch.Tensor, dim: int = TIMESTEP_FREQ_DIM) -> torch.Tensor:
    """Sinusoidal features of (possibly fractional) timesteps: (B,) -> (B, dim), as [cos, sin]."""
    half = dim // 2
    freqs = torch.exp(-math.log(MAX_PERIOD) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]  # (B, half)
    features = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        features = torch.cat([features, torch.zeros_like(features[:, :1])], dim=-1)
    return features


class PatchEmbed(nn.Module):
    """Patchify: a convolution with kernel = stride = p, then flatten to tokens.

    (B, C, H, W) -> (B, H/p * W/p, D).
    """

    def __init__(self, patch_size: int, in_channels: int, hidden_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, D, h, w) -> (B, h*w, D)


class TimestepEmbedder(nn.Module):
    """Timestep -> 256-d sinusoidal features -> MLP (Linear, SiLU, Linear) -> (B, D)."""

    def __init__(self, hidden_size: int, freq_dim: int = TIMESTEP_FREQ_DIM) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(
            nn.Linear(freq_dim, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        features = timestep_features(t, self.freq_dim)
        return self.mlp(features.to(self.weight_dtype()))

    def weight_dtype(self) -> torch.dtype:
        """dtype of the MLP's weights (features are computed in float32, then cast)."""
        return next(self.mlp.parameters()).dtype


class LabelEmbedder(nn.Module):
    """Class label -> (B, D), with one extra row (index num_classes) for the null class.

    During training, labels are replaced by the null class with probability `dropout_prob`,
    which is what classifier-free guidance needs. `null_row=False` builds the table of official
    models trained without label dropout (exactly num_classes rows): labels can never be dropped.
    """

    def __init__(
        self, num_classes: int, hidden_size: int, dropout_prob: float, null_row: bool = True
    ) -> None:
        super().__init__()
        if not null_row and dropout_prob > 0:
            raise ValueError("label dropout needs the null-class row; set null_class_row or dropout 0")
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob
        self.embedding_table = nn.Embedding(num_classes + int(null_row), hidden_size)

    def forward(
        self, labels: torch.Tensor, train: bool, force_drop_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        if force_drop_ids is not None:
            if self.embedding_table.num_embeddings == self.num_classes:
                raise ValueError(
                    "this model has no null class (trained without label dropout) to drop labels to"
                )
            drop = force_drop_ids.to(labels.device).bool()
        elif train and self.dropout_prob > 0:
            drop = torch.rand(labels.shape[0], device=labels.device) < self.dropout_prob
        else:
            drop = None
        if drop is not None:
            labels = torch.where(drop, torch.full_like(labels, self.num_classes), labels)
        return self.embedding_table(labels)


def rope_angles_1d(dim: int, length: int) -> torch.Tensor:
    """Rotary angles of positions 0..length-1 over `dim` features: (length, dim), float32.

    Frequencies theta^(-2i/dim) for i < dim/2, each used for a pair of neighbouring features. The
    positions are computed as EVA-02 / LightningDiT do (arange(L) / L * L, their rescaling to the
    training grid) so that the angles equal theirs bit for bit.
    """
    freqs = 1.0 / ROPE_THETA ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim)  # (dim/2,)
    positions = torch.arange(length) / length * length  # (length,), float32
    return (positions[:, None] * freqs[None]).repeat_interleave(2, dim=-1)  # (length, dim)


class RotaryEmbedding2d(nn.Module):
    """2-D rotary position embedding of a grid_h x grid_w patch grid (LightningDiT's, from EVA-02).

    The first half of each head's features rotates with the patch's row, the second half with its
    column; tokens are numbered row-major. Holds cos and sin of the angles, each (N, head_size), as
    buffers that are not saved (they follow from the config; LightningDiT's files carry them as
    `feat_rope.freqs_cos` / `freqs_sin`, which the loader checks and drops).
    """

    cos: torch.Tensor
    sin: torch.Tensor

    def __init__(self, head_size: int, grid_h: int, grid_w: int) -> None:
        super().__init__()
        if head_size % 4:
            raise ValueError(f"2-D rotary embeddings need a head size divisible by 4, got {head_size}")
        half = head_size // 2
        rows = rope_angles_1d(half, grid_h)[:, None].expand(grid_h, grid_w, half)
        cols = rope_angles_1d(half, grid_w)[None].expand(grid_h, grid_w, half)
        angles = torch.cat([rows, cols], dim=-1).reshape(grid_h * grid_w, head_size)  # (N, hs)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin), each (N, head_size)."""
        return self.cos, self.sin
