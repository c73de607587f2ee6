"""What the page's buttons do, without Gradio: check a request, call the pipeline or a walk, write the files.

Each job writes into its own folder (the same files `ditkit sample` / `ditkit walk` write, through
`sample_to_folder` / `save_walks`) and returns what the page shows: small images enlarged by an
integer factor (nearest neighbour, so pixels stay sharp), captions that say how each image was drawn,
and the files to download. No sampling happens here: it all goes through `DiTPipeline` and the walks.
"""

from __future__ import annotations

import json
import secrets
import threading
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ditkit.atomic import atomic_path
from ditkit.choices import TIME_SHIFT_SAMPLERS
from ditkit.errors import UserError, plural
from ditkit.generation.images import save_gif, to_pil
from ditkit.generation.pipeline import DiTPipeline
from ditkit.generation.save import sample_to_folder
from ditkit.generation.walks import Walk, class_walk, noise_walk, save_walks
from ditkit.objectives import Objective
from ditkit.samplers.settings import SamplingSettings
from ditkit.serve.server import DEFAULT_MAX_IMAGE_STEPS, DEFAULT_MAX_STEPS
from ditkit.visual import DEFAULT_PADDING, display_scale, save_grid, upscale_nearest

# Limits of one request, so that one user cannot take the server's memory or time (the queue runs one
# request at a time): at most MAX_CLASSES classes x MAX_PER_CLASS images, MAX_IMAGES in all.
MAX_CLASSES = 16
MAX_PER_CLASS = 16
MAX_IMAGES = 64
MAX_WALK_POINTS = 8
MAX_FRAMES = 32
# Model rows one request may evaluate, per image-step of its budget: guidance doubles the rows of a
# call and a second-order step makes two calls. Bounds the samplers that pick their own steps (dopri5).
ROWS_PER_IMAGE_STEP = 4
# Longest class name or number the page takes (ImageNet's longest name has under 100 characters): a
# longer one is refused before the resolver searches for it, and never echoed back whole.
MAX_CLASS_TEXT = 200
# A GIF stores each frame's time in hundredths of a second, in 16 bits.
MAX_GIF_FRAME_MS = 10 * (2**16 - 1)
# Largest seed the page accepts or draws (the seeds of `ditkit sample` are any non-negative int).
MAX_SEED = 2**31 - 1
# Images are enlarged (nearest neighbour, integer factor) until their longer side reaches this many
# pixels on screen: a 28-pixel Fashion-MNIST image is shown at 280 pixels, a 256-pixel one as it is.
DISPLAY_MIN_SIDE = 256
# A walk's frames are shown enlarged (nearest neighbour, integer factor) to at least this many pixels
# high, in as many rows as it takes to keep within STRIP_MAX_WIDTH (the page's result column): a wider
# picture would be shrunk by the browser, and shrinking pixel art aliases.
STRIP_FRAME_SIDE = 96
STRIP_MAX_WIDTH = 768
WALK_STEM = "walk"
SAMPLES_ZIP = "samples.zip"  # the download of the single PNGs and samples.json


@dataclass(frozen=True)
class Limits:
    """The most work one request may ask for (see DEFAULT_MAX_STEPS, DEFAULT_MAX_IMAGE_STEPS)."""

    max_steps: int = DEFAULT_MAX_STEPS
    max_image_steps: int = DEFAULT_MAX_IMAGE_STEPS

    def __post_init__(self) -> None:
        if self.max_steps < 1 or self.max_image_steps < 1:
            raise UserError("--max-steps and --max-image-steps must be at least 1")

    def check(self, images: int, steps: int | None) -> None:
        """Refuse a request of `images` images at `steps` steps (None: its sampler picks them) that
        exceeds the limits, in one line saying what fits; before anything is sampled."""
        if steps is None:
            return  # an adaptive solver: bounded while it runs, by `StopSwitch`
        if steps > self.max_steps:
            raise UserError(f"this server samples at most {self.max_steps} steps; ask for fewer than {steps}")
        if images * steps > self.max_image_steps:
            most = max(1, self.max_image_steps // steps)
            raise UserError(
                f"{plural(images, 'image')} x {steps} steps is more than this server's "
                f"{self.max_image_steps} image-steps per request; ask for at most {most} images at "
                f"{steps} steps, or fewer steps"
            )


class Stopped(UserError):
    """The request was stopped (its Stop button, or its budget spent) between two model calls."""


class Running:
    """One request inside `StopSwitch.running`: set `ended` when it is over, `stopped` if Stop ended it."""

    def __init__(self, owner: str | None) -> None:
        self.owner = owner
        self.ended = threading.Event()
        self.stopped = False


class StopSwitch:
    """Stops the running request between two model calls: the page's Stop button, and the budget of
    model rows a request may evaluate (what bounds a solver that picks its own steps).

    `install` wraps the pipeline's denoiser (`DiTPipeline.model_fn`, through which every sampler calls
    the model) once; requests run one at a time (the page's queue), each inside `running`.
    """

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._current: Running | None = None
        self._rows = 0
        self._idle = threading.Event()
        self._idle.set()

    @property
    def owner(self) -> str | None:
        """The page session whose request runs now (None: none, or one without a session)."""
        current = self._current
        return None if current is None else current.owner

    def install(self, pipe: DiTPipeline) -> None:
        model_fn = pipe.model_fn

        def stoppable_model_fn(model: Any = None) -> Callable[..., Any]:
            denoise = model_fn(model)

            def call(x: Any, *args: Any, **kwargs: Any) -> Any:
                self._before_call(int(x.shape[0]))
                return denoise(x, *args, **kwargs)

            return call

        pipe.model_fn = stoppable_model_fn  # type: ignore[method-assign]

    def _before_call(self, rows: int) -> None:
        if self._stop.is_set():
            if self._current is not None:
                self._current.stopped = True
            raise Stopped("stopped")
        self._rows += rows
        budget = ROWS_PER_IMAGE_STEP * self.limits.max_image_steps
        if self._rows > budget:
            raise Stopped(f"stopped: the request took more than this server's {budget} model evaluations")

    @contextmanager
    def running(self, owner: str | None) -> Iterator[Running]:
        """The request of `owner` (a page session) runs; `stop(owner)` stops it."""
        current = Running(owner)
        with self._lock:
            self._current, self._rows = current, 0
            self._stop.clear()
            self._idle.clear()
        try:
            yield current
        finally:
            with self._lock:
                self._current = None
                self._stop.clear()
                self._idle.set()
            current.ended.set()

    def stop(self, owner: str | None) -> Running | None:
        """Stop the running request if it is `owner`'s (one user cannot stop another's) and return it
        (its `ended` is set once it is over); None if no request of `owner` runs."""
        with self._lock:
            current = self._current
            if current is None or current.owner is None or current.owner != owner:
                return None
            self._stop.set()
            return current

    def stop_all(self, timeout: float) -> bool:
        """Stop whatever runs and wait up to `timeout` seconds for it to end (the server's shutdown:
        a sampling thread still inside torch when the process exits aborts it). True once idle."""
        with self._lock:
            if self._current is not None or not self._idle.is_set():
                self._stop.set()
        return self._idle.wait(timeout)


@dataclass
class GenerateResult:
    """What the Generate tab shows.

    Attributes:
        gallery: (enlarged image, caption) per image, class-major like the grid.
        images: per image, what redraws it alone: {"class": the class value or None, "seed": its seed}.
        files: the grid PNG and a zip of the single PNGs with samples.json.
        seed: the first seed used (image i used seed + i).
        summary: one line on what was drawn.
    """

    gallery: list[tuple[Image.Image, str]]
    images: list[dict[str, Any]]
    files: list[Path]
    seed: int
    summary: str


@dataclass
class WalkResult:
    """What the Walk tab shows: an enlarged GIF and strip, the files to download, one line of summary."""

    gif: Path
    strip: Path
    files: list[Path]
    summary: str


def enlarge(image: np.ndarray, scale: int) -> Image.Image:
    """A uint8 (H, W, C) image as a PIL image `scale` times larger (nearest neighbour)."""
    return to_pil(upscale_nearest(image, scale))


def shown_scale(height: int, width: int) -> int:
    """The whole factor that brings an image's longer side to at least DISPLAY_MIN_SIDE pixels."""
    return display_scale(max(height, width), max(height, width), DISPLAY_MIN_SIDE)


def class_choices(pipe: DiTPipeline) -> list[tuple[str, str]]:
    """(label shown, value) for every class: "golden retriever, golden (207)" -> "207".

    The label holds every synonym, so the page's search finds a class by any of its names.
    """
    if pipe.class_names is None:
        return [(f"class {i}", str(i)) for i in range(pipe.num_classes)]
    return [(f"{', '.join(names)} ({i})", str(i)) for i, names in enumerate(pipe.class_names.synonyms)]


def pick_seed(seed: float | int | None, random: bool) -> int:
    """The seed to use: a fresh one from the OS when `random`, else `seed` checked to be 0..MAX_SEED."""
    if random:
        return secrets.randbelow(MAX_SEED + 1)
    if seed is None or float(seed) != int(seed):
        raise UserError(f"the seed must be a whole number 0..{MAX_SEED}, got {seed}")
    value = int(seed)
    if not 0 <= value <= MAX_SEED:
        raise UserError(f"the seed must lie in 0..{MAX_SEED}, got {value}")
    return value


def parse_seeds(text: str) -> list[int]:
    """Seeds written as "0, 1, 2" (commas or spaces) -> [0, 1, 2]."""
    parts = text.replace(",", " ").split()
    if not parts:
        raise UserError("give at least one seed, e.g. 0, 1, 2")
    seeds = []
    for part in parts:
        if not part.isdigit():
            raise UserError(f"seeds are whole numbers 0..{MAX_SEED} separated by commas, not {part!r}")
        seeds.append(pick_seed(int(part), random=False))
    return seeds


def check_duration(duration_ms: float | int | None) -> int:
    """A GIF frame time in whole milliseconds, 1..MAX_GIF_FRAME_MS (checked before a walk is sampled)."""
    if duration_ms is None or float(duration_ms) != int(duration_ms):
        raise UserError(f"the GIF frame time must be a whole number of milliseconds, got {duration_ms}")
    if not 1 <= int(duration_ms) <= MAX_GIF_FRAME_MS:
        raise UserError(f"the GIF frame time must lie in 1..{MAX_GIF_FRAME_MS} ms, got {int(duration_ms)}")
    return int(duration_ms)


def check_steps(steps: float | int | None) -> int | None:
    """Sampling steps as an int >= 1; None (an empty field) means the sampler's default."""
    if steps is None:
        return None
    if float(steps) != int(steps) or int(steps) < 1:
        raise UserError(f"steps must be a whole number of at least 1, got {steps:g}")
    return int(steps)


def request_settings(
    objective: Objective,
    base: SamplingSettings,
    guidance_scale: float,
    sampler: str | None,
    steps: float | int | None,
    seed: int | None = None,
) -> SamplingSettings:
    """One request's settings: the page's fields over the served ones (`base`, e.g. `pipe.settings()`).

    The fields the page does not show (guided channels, guidance interval) are the base's; its eta goes
    with its sampler, and its timestep shift with euler and heun (the samplers whose grid it bends). An empty steps field is the sampler's own count; a sampler that picks its own steps
    (the objective names no default, as for dopri5) takes none, whatever the field holds (its box is
    disabled, and Gradio sends an empty number as 0).

    Raises:
        UserError: a bad field (zero or fractional steps, a negative scale), in one line.
    """
    sampler = sampler or base.sampler
    if sampler is not None and objective.default_steps(sampler) is None:
        steps = None
    return base.replace(
        guidance_scale=float(guidance_scale),
        sampler=sampler,
        steps=check_steps(steps),
        eta=base.eta if sampler == base.sampler else 0.0,
        timestep_shift=base.timestep_shift if sampler in TIME_SHIFT_SAMPLERS else 1.0,
        seed=base.seed if seed is None else seed,
    )


def shown_steps(pipe: DiTPipeline, settings: SamplingSettings) -> int | None:
    """The step count `settings` samples with (None: its sampler picks its own, as dopri5)."""
    if settings.steps is not None or settings.sampler is None:
        return settings.steps
    return pipe.objective.default_steps(settings.sampler)


def _classes(pipe: DiTPipeline, classes: Sequence[str] | None) -> list[str] | None:
    """The classes asked for, None for an unconditional model; an error when none is chosen."""
    if pipe.num_classes == 0:
        return None
    chosen = [str(c) for c in classes or [] if str(c).strip()]
    for name in chosen:
        if len(name) > MAX_CLASS_TEXT:
            raise UserError(f"a class name has at most {MAX_CLASS_TEXT} characters, not {len(name):,}")
    if not chosen:
        raise UserError("choose at least one class (type a name in the class box)")
    return chosen


def generate(
    pipe: DiTPipeline,
    out_dir: Path,
    classes: Sequence[str] | None,
    per_class: int,
    settings: SamplingSettings,
    *,
    batch_size: int | None = None,
    extra: dict[str, Any] | None = None,
    limits: Limits | None = None,
) -> GenerateResult:
    """Draw `per_class` images of each class with `sample_to_folder` into `out_dir` (image i: seed + i).

    Args:
        settings: how to sample (see `request_settings`); image i uses seed `settings.seed + i`.
        extra: plain data recorded in samples.json beside the settings.
        limits: the most work the request may ask for (default `Limits()`).

    Raises:
        UserError: a bad request (unknown class, too many images...), in one line.
    """
    chosen = _classes(pipe, classes)
    count = int(per_class) * (1 if chosen is None else len(chosen))
    if chosen is not None and len(chosen) > MAX_CLASSES:
        raise UserError(f"at most {MAX_CLASSES} classes at once, got {len(chosen)}")
    if not 1 <= per_class <= MAX_PER_CLASS or count > MAX_IMAGES:
        raise UserError(f"ask for 1..{MAX_PER_CLASS} images per class and at most {MAX_IMAGES} in all")
    s = pipe.settings(settings)
    (limits or Limits()).check(count, shown_steps(pipe, s))
    saved = sample_to_folder(
        pipe,
        chosen,
        out_dir,
        s,
        per_class=int(per_class),
        batch_size=batch_size,
        progress=True,  # tqdm bars, which the page follows
        extra=extra,
    )
    how = _how(pipe, s)
    gallery, images = [], []
    for path, entry in zip(saved.images, _record_entries(saved.record), strict=True):
        with Image.open(path) as png:
            image = np.asarray(png)
        image = image[..., None] if image.ndim == 2 else image  # (H, W, C)
        name = "" if entry["class"] is None else f"{entry['class_name']} ({entry['class']}) · "
        shown = enlarge(image, shown_scale(*image.shape[:2]))
        gallery.append((shown, f"{name}seed {entry['seed']} · {how}"))
        images.append(
            {"class": None if entry["class"] is None else str(entry["class"]), "seed": entry["seed"]}
        )
    archive = _zip(out_dir, [saved.record, *saved.images], out_dir / SAMPLES_ZIP)
    summary = f"{plural(count, 'image')}, seeds {s.seed}..{s.seed + count - 1} ({how})"
    return GenerateResult(gallery, images, [saved.grid, archive], s.seed, summary)


def _zip(root: Path, files: Sequence[Path], target: Path) -> Path:
    """A zip of `files` under their paths relative to `root`, written atomically."""
    with atomic_path(target) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in files:
            archive.write(file, file.relative_to(root).as_posix())
    return target


def _display_copies(frames: np.ndarray, folder: Path, duration_ms: int) -> tuple[Path, Path]:
    """An enlarged GIF and strip of a walk's uint8 frames (F, H, W, C), for the page (nearest neighbour)."""
    count, height, width = frames.shape[:3]
    scale = shown_scale(height, width)
    gif = save_gif(folder / f"{WALK_STEM}.gif", [np.asarray(enlarge(f, scale)) for f in frames], duration_ms)
    one_row = STRIP_MAX_WIDTH // (count * (width + DEFAULT_PADDING) + DEFAULT_PADDING)
    if one_row * height >= STRIP_FRAME_SIDE:  # one row is large enough
        strip_scale, columns = one_row, count
    else:  # more frames: rows of frames at least STRIP_FRAME_SIDE high
        strip_scale = max(1, STRIP_FRAME_SIDE // height)
        columns = max(1, min(count, STRIP_MAX_WIDTH // (width * strip_scale + DEFAULT_PADDING)))
    strip = save_grid(frames, folder / f"{WALK_STEM}.png", columns, scale=strip_scale)  # row by row
    return gif, strip


def _how(pipe: DiTPipeline, settings: SamplingSettings) -> str:
    """The settings every image of a request shares, e.g. "ddim, 50 steps, guidance 4"."""
    steps = shown_steps(pipe, settings)
    return f"{settings.sampler}, {steps or 'adaptive'} steps, guidance {settings.guidance_scale:g}"


def _record_entries(record: Path) -> list[dict[str, object]]:
    return json.loads(record.read_text(encoding="utf-8"))["images"]


def walk(
    pipe: DiTPipeline,
    out_dir: Path,
    mode: str,
    classes: Sequence[str] | None,
    seeds_text: str,
    frames: int,
    settings: SamplingSettings,
    *,
    loop: bool,
    duration_ms: float | int | None,
    batch_size: int | None = None,
    limits: Limits | None = None,
) -> WalkResult:
    """One noise walk (one class, a path of seeds) or one class walk (a path of classes, one seed).

    Args:
        settings: how to sample each frame (see `request_settings`; its seed is not used: `seeds_text`'s are).
        limits: the most work the request may ask for (default `Limits()`).

    Raises:
        UserError: a bad request, in one line.
    """
    duration = check_duration(duration_ms)
    chosen = _classes(pipe, classes) if mode == "class" or pipe.num_classes else None
    seeds = parse_seeds(seeds_text)
    if not 2 <= int(frames) <= MAX_FRAMES:
        raise UserError(f"frames per segment must lie in 2..{MAX_FRAMES}, got {frames}")
    s = pipe.settings(settings)
    points = len(seeds) if mode == "noise" else len(chosen or [])
    segments = max(points - 1, 1) + int(bool(loop))
    (limits or Limits()).check(segments * (int(frames) - 1) + 1, shown_steps(pipe, s))
    # The sampler is named, so the walk keeps it (a noise walk refuses a stochastic one).
    options: dict[str, Any] = dict(
        loop=bool(loop), sampler=s.sampler, settings=s, batch_size=batch_size, progress=True
    )
    result: Walk
    if mode == "noise":
        if chosen is not None and len(chosen) != 1:
            raise UserError(f"a noise walk draws one class; {len(chosen)} are chosen")
        if not 2 <= len(seeds) <= MAX_WALK_POINTS:
            raise UserError(f"a noise walk goes through 2..{MAX_WALK_POINTS} seeds, e.g. 0, 1, 2")
        result = noise_walk(pipe, None if chosen is None else chosen[0], seeds, int(frames), **options)
    elif mode == "class":
        assert chosen is not None
        if not 2 <= len(chosen) <= MAX_WALK_POINTS:
            raise UserError(f"a class walk goes through 2..{MAX_WALK_POINTS} classes; {len(chosen)} chosen")
        if len(seeds) != 1:
            raise UserError(f"a class walk keeps one noise: give one seed, not {len(seeds)}")
        result = class_walk(pipe, chosen, seeds[0], int(frames), **options)
    else:
        raise UserError(f"walk mode must be noise or class, got {mode!r}")
    _, strip, gif = save_walks([result], out_dir, WALK_STEM, duration)
    shown_gif, shown_strip = _display_copies(result.images, out_dir / "display", duration)
    how = _how(pipe, s)
    return WalkResult(
        shown_gif, shown_strip, [gif, strip], f"{result.title} ({len(result.images)} frames, {how})"
    )
