"""Latent walks as the DiT paper shows them (Peebles & Xie 2023, Figs. 20-21 of the arXiv version).

- Noise walks: spherical interpolation (slerp) between the initial noises of several seeds, each frame
  sampled with a deterministic sampler (DDIM with eta = 0; for flow models the probability-flow ODE),
  so nearby noises give nearby images.
- Class walks: the noise fixed, the class embedding moved linearly between classes,
  e = (1 - a) E[y_a] + a E[y_b]; classifier-free guidance still contrasts with the null embedding.

A path through P points (seeds or classes) with F frames per segment has (P - 1)(F - 1) + 1 frames;
frame 0 is point 0 exactly, and each segment ends exactly on the next point.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ditkit.errors import UserError
from ditkit.generation.class_names import ClassQuery
from ditkit.generation.images import DEFAULT_GIF_DURATION_MS, save_gif
from ditkit.generation.pipeline import DiTPipeline
from ditkit.model.dit import DiT
from ditkit.samplers.settings import SamplingSettings
from ditkit.visual import grid_image, images_to_uint8, save_grid

# Within this angle (radians) of parallel or opposite, slerp falls back to linear interpolation:
# the weights divide by sin(theta) ~ 0 there (for parallel inputs the two paths agree anyway).
SLERP_PARALLEL_ANGLE = 1e-4
DEFAULT_FRAMES = 8
# Label that `LabelMixModel` reads as "the null class" (any negative number would do).
MIX_NULL_LABEL = -1


def slerp(z0: Tensor, z1: Tensor, alpha: float) -> Tensor:
    """Spherical interpolation between two tensors of the same shape, each taken as one flat vector.

    Returns sin((1-a) theta)/sin(theta) z0 + sin(a theta)/sin(theta) z1, theta the angle between them:
    z0 at a = 0 and z1 at a = 1 exactly; for equal norms every point keeps that norm. Nearly
    parallel or opposite inputs (no unique great circle) are interpolated linearly.
    """
    if z0.shape != z1.shape:
        raise ValueError(f"slerp needs tensors of one shape, got {tuple(z0.shape)} and {tuple(z1.shape)}")
    a, b = z0.double().flatten(), z1.double().flatten()
    cos = float((a @ b) / (a.norm() * b.norm()).clamp_min(torch.finfo(torch.float64).tiny))
    theta = math.acos(max(-1.0, min(1.0, cos)))
    if theta < SLERP_PARALLEL_ANGLE or math.pi - theta < SLERP_PARALLEL_ANGLE:
        w0, w1 = 1.0 - alpha, alpha
    else:
        w0, w1 = math.sin((1.0 - alpha) * theta) / math.sin(theta), math.sin(alpha * theta) / math.sin(theta)
    return w0 * z0 + w1 * z1


def walk_positions(num_points: int, frames_per_segment: int, loop: bool = False) -> list[tuple[int, float]]:
    """(segment k, alpha) of each frame of a path through points 0..P-1 (and back to 0 if `loop`)."""
    if num_points < 2:
        raise UserError(f"a walk needs at least two points, got {num_points}")
    if frames_per_segment < 2:
        raise UserError(f"a walk needs at least 2 frames per segment, got {frames_per_segment}")
    segments = num_points if loop else num_points - 1
    positions = [
        (k, j / (frames_per_segment - 1)) for k in range(segments) for j in range(frames_per_segment - 1)
    ]
    if not loop:
        positions.append((segments - 1, 1.0))
    return positions


@dataclass
class Walk:
    """The frames of one walk.

    Attributes:
        latents: (F, C, h, w) sampled latents.
        images: uint8 (F, H, W, C) decoded frames.
        positions: (segment, alpha) of each frame.
        label: what tells this walk from the others beside it in a grid: the class of a noise walk
            ("golden retriever"), the seed of a class walk ("seed 0").
        path: the points walked through, the same for the walks of one grid: "seeds 0 -> 1 -> 2"
            for a noise walk, "golden retriever -> tennis ball" for a class walk.
    """

    latents: Tensor
    images: np.ndarray
    positions: list[tuple[int, float]]
    label: str
    path: str

    @property
    def title(self) -> str:
        """What was walked, e.g. "golden retriever: seeds 0 -> 1 -> 2"."""
        return f"{self.label}: {self.path}"


class LabelMixModel:
    """A DiT whose label embedding is replaced by given mixed embeddings.

    Called as model(x, t, y) with y (B,) indexing rows of `embeddings` (F, D), or `MIX_NULL_LABEL`
    for the null class (whose real embedding is kept, so guidance works unchanged). The swap is a
    forward hook on `model.y_embedder`, present only during the call.
    """

    def __init__(self, model: DiT, embeddings: Tensor) -> None:
        if model.null_class is None or getattr(model, "y_embedder", None) is None:
            raise UserError("class walks need a class-conditional DiT")
        self.model = model
        self.null_class = model.null_class
        self.embeddings = embeddings

    def __call__(self, x: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
        if y is None:
            raise UserError("LabelMixModel needs frame indices as labels")
        null = y == MIX_NULL_LABEL  # (B,)
        rows = self.embeddings.to(x.device)[y.clamp(min=0)]  # (B, D)
        labels = torch.where(null, torch.full_like(y, self.null_class), torch.zeros_like(y))

        def swap(module: torch.nn.Module, args: object, output: Tensor) -> Tensor:
            return torch.where(null[:, None], output, rows.to(output.dtype))

        handle = self.model.y_embedder.register_forward_hook(swap)
        try:
            return self.model(x, t, labels)
        finally:
            handle.remove()


def walk_settings(
    pipe: DiTPipeline, settings: SamplingSettings | None = None, **given: Any
) -> SamplingSettings:
    """The settings a walk samples with: the given fields over `settings` (default: the pipeline's own).

    With no sampler named, a deterministic recorded sampler is kept (the same noise then gives the same
    image as `ditkit sample`), else the objective's `walk_sampler` with its default steps.
    """
    base = pipe.sampling if settings is None else settings
    deterministic = pipe.objective.deterministic_samplers
    if given.get("sampler") is None and (base.sampler not in deterministic or base.eta != 0.0):
        given.update(sampler=pipe.objective.walk_sampler, eta=0.0)
    return pipe.settings(base, **given)


def _check_sampler(pipe: DiTPipeline, settings: SamplingSettings) -> None:
    deterministic = pipe.objective.deterministic_samplers
    if settings.sampler not in deterministic or settings.eta != 0.0:
        raise UserError(
            f"noise walks need a deterministic sampler ({', '.join(deterministic)}; ddim with eta 0)"
        )


def _frames(pipe: DiTPipeline, latents: Tensor, batch_size: int | None) -> np.ndarray:
    return images_to_uint8(pipe.decode(latents, batch_size))


def noise_walk(
    pipe: DiTPipeline,
    class_label: ClassQuery | None,
    seeds: Sequence[int],
    frames_per_segment: int = DEFAULT_FRAMES,
    *,
    loop: bool = False,
    guidance_scale: float | None = None,
    num_steps: int | None = None,
    sampler: str | None = None,
    guided_channels: str | None = None,
    batch_size: int | None = None,
    progress: bool = True,
    settings: SamplingSettings | None = None,
) -> Walk:
    """Walk through the initial noises of `seeds` (slerp), for one class, sampled deterministically.

    Args:
        pipe: the pipeline.
        class_label: id or name (None for an unconditional model).
        seeds: the points of the path (at least two).
        frames_per_segment: frames from one seed to the next, both included.
        loop: return from the last seed to the first.
        guidance_scale, num_steps, guided_channels, batch_size, progress: as for `DiTPipeline`.
        sampler: "ddim" (eta 0) or "dpm++2m"; flow models: "dopri5", "euler" or "heun" (default: see
            `walk_settings`: the checkpoint's recorded sampler if deterministic, else ddim / dopri5).
        settings: the base settings (default: the pipeline's); the arguments above override them.

    Returns:
        A `Walk`; its frames at alpha 0 are exactly `pipe(class_label, seeds=[s], sampler=...)`.
    """
    s = walk_settings(
        pipe,
        settings,
        sampler=sampler,
        steps=num_steps,
        guidance_scale=guidance_scale,
        guided_channels=guided_channels,
    )
    _check_sampler(pipe, s)
    label = None if class_label is None else pipe.resolve_labels([class_label])[0]
    points = pipe.initial_noise(seeds)  # (P, C, h, w)
    positions = walk_positions(len(seeds), frames_per_segment, loop)
    noise = torch.stack([slerp(points[k], points[(k + 1) % len(seeds)], a) for k, a in positions])
    frame_seeds = [int(seeds[k]) for k, _ in positions]  # unused by deterministic samplers
    latents = pipe.sample_latents(
        None if label is None else [label] * len(positions),
        seeds=frame_seeds,
        noise=noise,
        settings=s,
        batch_size=batch_size,
        progress=progress,
    )
    name = "unconditional" if label is None else pipe.class_name(label)
    path = " -> ".join(str(s) for s in [*seeds, *([seeds[0]] if loop else [])])
    return Walk(latents, _frames(pipe, latents, batch_size), positions, name, f"seeds {path}")


def class_embeddings(
    pipe: DiTPipeline, labels: Sequence[int], positions: Sequence[tuple[int, float]]
) -> Tensor:
    """(F, D) mixed label embeddings (1 - a) E[labels[k]] + a E[labels[k + 1]] for each (k, a)."""
    table = pipe.model.y_embedder.embedding_table.weight.detach()  # (K + 1, D)
    rows = [(1.0 - a) * table[labels[k]] + a * table[labels[(k + 1) % len(labels)]] for k, a in positions]
    return torch.stack(rows)


def class_walk(
    pipe: DiTPipeline,
    classes: Sequence[ClassQuery],
    seed: int,
    frames_per_segment: int = DEFAULT_FRAMES,
    *,
    loop: bool = False,
    guidance_scale: float | None = None,
    num_steps: int | None = None,
    sampler: str | None = None,
    guided_channels: str | None = None,
    batch_size: int | None = None,
    progress: bool = True,
    settings: SamplingSettings | None = None,
) -> Walk:
    """Walk linearly between class embeddings (e.g. two dog breeds, or a dog and "tennis ball"), noise fixed.

    Args:
        pipe: the pipeline (its model must be a class-conditional DiT).
        classes: ids or names, the points of the path (at least two).
        seed: the noise (and, for ddpm, the per-step noise) shared by every frame.
        frames_per_segment, loop, guidance_scale, num_steps, sampler, guided_channels, batch_size,
            progress, settings: as for `noise_walk`; any sampler works since the noise is the same for
            every frame.

    Returns:
        A `Walk`; its frames at alpha 0 and 1 equal `pipe(c, seeds=[seed])` for the end classes.
    """
    labels = pipe.resolve_labels(list(classes))
    s = walk_settings(
        pipe,
        settings,
        sampler=sampler,
        steps=num_steps,
        guidance_scale=guidance_scale,
        guided_channels=guided_channels,
    )
    positions = walk_positions(len(labels), frames_per_segment, loop)
    mixed = LabelMixModel(pipe.model, class_embeddings(pipe, labels, positions))
    count = len(positions)
    latents = pipe.sample_latents(
        list(range(count)),
        seeds=[int(seed)] * count,
        noise=pipe.initial_noise([seed]).expand(count, *pipe.latent_shape),
        settings=s,
        batch_size=batch_size,
        progress=progress,
        model=mixed,
        null_label=MIX_NULL_LABEL,
    )
    names = [pipe.class_name(label) for label in [*labels, *(labels[:1] if loop else [])]]
    return Walk(latents, _frames(pipe, latents, batch_size), positions, f"seed {seed}", " -> ".join(names))


def make_walks(
    pipe: DiTPipeline,
    mode: str,
    classes: Sequence[ClassQuery] | None,
    seeds: Sequence[int],
    frames_per_segment: int = DEFAULT_FRAMES,
    **options: Any,
) -> list[Walk]:
    """The walks `ditkit walk` draws: one noise walk per class, or one class walk per seed.

    Args:
        pipe: the pipeline.
        mode: "noise" (path through `seeds`, one row per class) or "class" (path through `classes`,
            one row per seed).
        classes: ids or names (None: an unconditional model's single noise walk).
        seeds: the noise seeds.
        frames_per_segment: frames per segment, both ends included.
        **options: passed on to `noise_walk` / `class_walk` (loop, guidance_scale, num_steps, ...).
    """
    if mode == "noise":
        rows: Sequence[ClassQuery | None] = list(classes) if classes else [None]
        return [noise_walk(pipe, c, seeds, frames_per_segment, **options) for c in rows]
    if mode == "class":
        if not classes or len(classes) < 2:
            raise UserError("a class walk needs at least two classes (--class A --class B)")
        return [class_walk(pipe, classes, s, frames_per_segment, **options) for s in seeds]
    raise UserError(f"walk mode must be noise or class, got {mode!r}")


def save_walks(
    walks: Sequence[Walk],
    out_dir: str | os.PathLike[str],
    stem: str,
    duration_ms: int = DEFAULT_GIF_DURATION_MS,
    bounce: bool = False,
) -> list[Path]:
    """Write a grid (one row per walk), and per walk a strip PNG and an animated GIF.

    Files: `<stem>_grid.png`, `<stem>_<i>.png`, `<stem>_<i>.gif`. Small frames are enlarged, rows carry
    the walks' labels and the path walked is written above (see `ditkit.visual`); GIF frames carry the
    label above. With `bounce` the GIF plays forward then backward. Returns the paths written.
    """
    out = Path(out_dir)
    frames = {len(w.images) for w in walks}
    if len(frames) != 1:
        raise UserError("walks shown in one grid need the same number of frames")
    (count,) = frames
    if len({w.path for w in walks}) == 1:  # one path above the grid, the walks told apart by label
        labels, title = [w.label for w in walks], walks[0].path
    else:
        labels, title = [w.title for w in walks], None
    grid = np.concatenate([w.images for w in walks])
    paths = [save_grid(grid, out / f"{stem}_grid.png", nrow=count, row_labels=labels, title=title)]
    for i, walk in enumerate(walks):
        strip = out / f"{stem}_{i}.png"
        paths.append(save_grid(walk.images, strip, nrow=count, row_labels=[walk.label], title=walk.path))
        pictures = [grid_image(frame[None], 1, padding=0, title=walk.label) for frame in walk.images]
        sequence = pictures + (pictures[-2:0:-1] if bounce else [])
        paths.append(save_gif(out / f"{stem}_{i}.gif", sequence, duration_ms))
    return paths
