"""Samples for looking at: a grid (one row per class) and single PNGs, with a JSON record of what they are.

Image i (class-major: class k's j-th image is i = k * per_class + j) uses seed `seed + i`, the same
numbering as the sharded FID runs, so any image can be redrawn alone from the record.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ditkit.atomic import atomic_write_text
from ditkit.errors import UserError
from ditkit.generation.class_names import ClassQuery
from ditkit.generation.images import save_png
from ditkit.generation.pipeline import DiTPipeline
from ditkit.samplers.settings import SamplingSettings
from ditkit.visual import save_grid

GRID_FILE = "grid.png"
IMAGES_DIR = "images"
RECORD_FILE = "samples.json"


@dataclass
class SavedSamples:
    """Where `sample_to_folder` wrote things: the grid, the single images and the JSON record."""

    grid: Path
    images: list[Path]
    record: Path


def sample_to_folder(
    pipe: DiTPipeline,
    classes: Sequence[ClassQuery] | None,
    out_dir: str | os.PathLike[str],
    settings: SamplingSettings | None = None,
    *,
    per_class: int = 4,
    batch_size: int | None = None,
    progress: bool = True,
    extra: dict[str, Any] | None = None,
) -> SavedSamples:
    """Sample `per_class` images of each class and write grid.png, images/*.png and samples.json.

    Args:
        pipe: the pipeline.
        classes: ids or names; None for an unconditional model (then `per_class` images in all).
        out_dir: folder to write into (created).
        settings: how to sample (default: the pipeline's `sampling`), resolved by `pipe.settings`;
            image i uses seed `settings.seed + i`.
        per_class: images per class (the grid's columns).
        batch_size, progress: as for `DiTPipeline.__call__`.
        extra: more plain data recorded in samples.json (e.g. the checkpoint path).
    """
    s = pipe.settings(settings)
    if per_class < 1:
        raise UserError(f"need at least one image per class, got {per_class}")
    if s.seed < 0:
        raise UserError(f"the seed must be non-negative, got {s.seed}")
    labels = None if classes is None else pipe.resolve_labels(list(classes))
    per_image = None if labels is None else [label for label in labels for _ in range(per_class)]
    seeds = s.seeds(per_class * (1 if labels is None else len(labels)))
    images = pipe(per_image, seeds=seeds, settings=s, batch_size=batch_size, progress=progress)
    assert isinstance(images, np.ndarray)  # output_type "uint8"
    out = Path(out_dir)
    names = None if labels is None else [pipe.class_name(label) for label in labels]
    grid = save_grid(images, out / GRID_FILE, nrow=per_class, row_labels=names)
    paths, entries = [], []
    for i, (image, seed) in enumerate(zip(images, seeds, strict=True)):
        label = None if per_image is None else per_image[i]
        name = f"{i:05d}_seed{seed}" + ("" if label is None else f"_class{label}")
        paths.append(save_png(out / IMAGES_DIR / f"{name}.png", image))
        class_name = None if label is None else pipe.class_name(label)
        entries.append(
            {"file": f"{IMAGES_DIR}/{name}.png", "seed": seed, "class": label, "class_name": class_name}
        )
    record = {
        "settings": {
            **(extra or {}),
            **s.to_record(),
            "per_class": per_class,
            "image_size": list(pipe.image_size),
            **pipe.objective_record(),
        },
        "images": entries,
    }
    record_path = out / RECORD_FILE
    atomic_write_text(record_path, json.dumps(record, indent=2) + "\n")
    return SavedSamples(grid, paths, record_path)
