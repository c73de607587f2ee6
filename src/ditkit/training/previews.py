"""Sample grids from the EMA weights during training: one row per class, the same seeds every time."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ditkit.model.dit import DiT, DiTConfig
from ditkit.visual import images_to_uint8, save_grid

# At most this many classes (rows) and samples per class (columns) in a preview grid.
MAX_PREVIEW_CLASSES = 10
PREVIEW_PER_CLASS = 8
# Unconditional models get one grid of this many samples.
UNCONDITIONAL_SAMPLES = 64
# Preview pixels are enlarged this much when the images are small (e.g. 28x28 Fashion-MNIST).
SMALL_IMAGE_SIDE = 64


def preview_labels(num_classes: int, per_class: int = PREVIEW_PER_CLASS) -> list[int] | None:
    """Labels of a preview grid, row by row: every class, or evenly spaced ones; None if unconditional."""
    if num_classes <= 1:
        return None
    classes = np.linspace(0, num_classes - 1, min(num_classes, MAX_PREVIEW_CLASSES)).round().astype(int)
    return [int(c) for c in classes for _ in range(per_class)]


@torch.no_grad()
def sample_images(
    model: DiT,
    first_stage: torch.nn.Module,
    labels: list[int] | None,
    count: int,
    *,
    cfg_scale: float,
    steps: int,
    diffusion: Mapping[str, Any],
    sampler: str = "ddim",
    seed_offset: int = 0,
    batch_size: int = 250,
    progress: bool = False,
) -> np.ndarray:
    """Draw `count` images with the sampler of `ditkit.samplers.api`; image i uses seed seed_offset + i.

    Returns:
        uint8 (count, H, W, C) images decoded by the first stage.
    """
    from ditkit.samplers.api import sample

    device = next(model.parameters()).device
    c, (h, w) = model.in_channels, model.config.size_hw
    guided = cfg_scale != 1.0 and labels is not None
    out = []
    for start in range(0, count, batch_size):
        n = min(batch_size, count - start)
        latents = sample(
            model,
            (n, c, h, w),
            labels=None if labels is None else labels[start : start + n],
            sampler=sampler,
            steps=steps,
            cfg_scale=cfg_scale if guided else 1.0,
            seeds=range(seed_offset + start, seed_offset + start + n),
            noise_schedule=str(diffusion.get("noise_schedule", "linear")),
            diffusion_steps=int(diffusion.get("diffusion_steps", 1000)),
            progress=progress,
            device=device,
        )
        images = first_stage.to(device).decode(latents)  # type: ignore[operator]
        out.append(images_to_uint8(images))
    return np.concatenate(out)


def write_preview(
    path: str | os.PathLike[str],
    config: DiTConfig,
    ema_weights: Mapping[str, torch.Tensor],
    first_stage: torch.nn.Module,
    diffusion: Mapping[str, Any],
    *,
    cfg_scale: float,
    steps: int,
    device: torch.device,
) -> Path:
    """Sample the preview grid from EMA weights and save it as a PNG."""
    model = DiT(config).to(device)
    model.load_state_dict(ema_weights)
    model.eval()
    labels = preview_labels(config.num_classes)
    count = len(labels) if labels is not None else UNCONDITIONAL_SAMPLES
    images = sample_images(
        model, first_stage, labels, count, cfg_scale=cfg_scale, steps=steps, diffusion=diffusion
    )
    nrow = PREVIEW_PER_CLASS if labels is not None else int(np.sqrt(UNCONDITIONAL_SAMPLES))
    scale = max(1, SMALL_IMAGE_SIDE // images.shape[1])
    return save_grid(images, path, nrow=nrow, scale=scale)
