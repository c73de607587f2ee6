"""Sample grids from the EMA weights during training: one row per class, the same seeds every time.

Sampling and decoding go through `ditkit.generation.pipeline.DiTPipeline`, as everywhere else.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import cast

import numpy as np
import torch

from ditkit.model.dit import DiT, DiTConfig
from ditkit.objectives import Objective
from ditkit.visual import save_grid

# At most this many classes (rows) and samples per class (columns) in a preview grid.
MAX_PREVIEW_CLASSES = 10
PREVIEW_PER_CLASS = 8
# Unconditional models get one grid of this many samples.
UNCONDITIONAL_SAMPLES = 64


def preview_labels(num_classes: int, per_class: int = PREVIEW_PER_CLASS) -> list[int] | None:
    """Labels of a preview grid, row by row: every class, or evenly spaced ones; None if unconditional."""
    if num_classes <= 1:
        return None
    classes = np.linspace(0, num_classes - 1, min(num_classes, MAX_PREVIEW_CLASSES)).round().astype(int)
    return [int(c) for c in classes for _ in range(per_class)]


def write_preview(
    path: str | os.PathLike[str],
    config: DiTConfig,
    ema_weights: Mapping[str, torch.Tensor],
    first_stage: torch.nn.Module,
    objective: Objective,
    *,
    guidance_scale: float,
    steps: int,
    device: torch.device,
) -> Path:
    """Sample the preview grid from EMA weights (image i from seed i) and save it as a PNG.

    Args:
        objective: how the model was trained; sampled with its `preview_sampler` for `steps` steps.
    """
    from ditkit.generation.pipeline import DiTPipeline

    model = DiT(config)
    model.load_state_dict(ema_weights)
    # No CUDA graphs: a preview runs once per period, too rarely for a captured graph to pay off.
    pipe = DiTPipeline(model, first_stage, objective, device=device, cuda_graph=False)  # type: ignore[arg-type]
    labels = preview_labels(config.num_classes)
    count = len(labels) if labels is not None else UNCONDITIONAL_SAMPLES
    images = cast(
        np.ndarray,  # uint8 (count, H, W, C), the default output type
        pipe(
            labels,
            guidance_scale=guidance_scale,
            num_steps=steps,
            sampler=objective.preview_sampler,
            seeds=range(count),
            progress=False,
        ),
    )
    nrow = PREVIEW_PER_CLASS if labels is not None else int(np.sqrt(UNCONDITIONAL_SAMPLES))
    return save_grid(images, path, nrow=nrow)  # small images enlarged, as every grid
