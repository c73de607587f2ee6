"""FID-scale sampling: N images across processes, in resumable shards, packed for ADM's evaluator.

Sample i (0 <= i < N) has seed `seed + i` and a label from a fixed plan (uniform draws from the
seed, or class-balanced: i mod K), so `ditkit sample --seed <seed + i> --class <label i>` redraws
it alone. Samples are grouped into shards of `shard_size`; process r of W computes shards r, r + W,
..., each written atomically as `shard_XXXXX.npz` (uint8 images, labels, seeds). A shard that exists
is finished and is never recomputed, so an interrupted run resumes where it stopped, and since a
shard's content depends only on its indices, the result is the same for any number of processes.
Rank 0 finally packs `samples.npz` (`arr_0`: uint8 (N, H, W, 3), `labels`: int64 (N,)).

The shards are computed with the same batch composition whatever the process count; changing
`batch_size` or the pipeline's `compile` between runs may change pixels by rounding (float
reductions differ by batch size and kernel fusion). The precision is part of the manifest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ditkit import distributed
from ditkit.atomic import atomic_write_text
from ditkit.errors import UserError
from ditkit.evaluation.npz_io import read_npz, to_rgb, write_npz, write_npz_streamed
from ditkit.generation.pipeline import DiTPipeline
from ditkit.samplers.settings import RECORDED_STEPS, SamplingSettings
from ditkit.visual import images_to_uint8

# Samples per shard file: 50,000 samples -> 50 shards, each small enough to redo after a crash.
DEFAULT_SHARD_SIZE = 1000
# Number of samples of the FID-50K protocol (ADM, Dhariwal & Nichol 2021; DiT Sec. 5).
FID_NUM_SAMPLES = 50_000
LABEL_MODES = ("uniform", "balanced")
MANIFEST_FILE = "manifest.json"
PACKED_FILE = "samples.npz"
FORMAT = "ditkit-samples"
FORMAT_VERSION = 1
# Stream number of the label draws, kept apart from the per-sample noise seeds.
_LABEL_STREAM = 0x1AB3
# Manifests written before the `precision` option recorded the autocast dtype instead.
_AUTOCAST_PRECISION = {None: "fp32", "torch.bfloat16": "bf16", "torch.float16": "fp16"}


def fid_sampling(pipe: DiTPipeline, **given: Any) -> SamplingSettings:
    """The settings of an FID run on `pipe`: the given fields (None: not given) over the checkpoint's
    recorded settings, resolved by `DiTPipeline.settings`; a guidance scale neither given nor recorded is
    the objective's `fid_guidance_scale` (DiT's 1.5, not the figures' 4.0)."""
    base = pipe.sampling
    if base.guidance_scale is None:
        base = base.replace(guidance_scale=pipe.objective.fid_guidance_scale)
    return pipe.settings(base, **given)


@dataclass(frozen=True)
class ShardedSettings:
    """Everything that decides the images of a sharded run (recorded in the manifest).

    Attributes:
        num_samples: N.
        label_mode: "uniform" (independent uniform labels) or "balanced" (label of i is classes[i mod K]).
        classes: labels to draw from (default: all of the model's classes).
        shard_size: samples per shard file.
        sampling: how to sample; its seed is sample 0's (sample i uses seed + i) and the label plan is
            drawn from it too. Its sampler None is the pipeline's default and its guidance scale None
            the objective's `fid_guidance_scale`, both recorded by value in the manifest (see `fid_sampling`).
    """

    num_samples: int = FID_NUM_SAMPLES
    label_mode: str = "uniform"
    classes: tuple[int, ...] | None = None
    shard_size: int = DEFAULT_SHARD_SIZE
    sampling: SamplingSettings = field(default_factory=SamplingSettings)

    def __post_init__(self) -> None:
        if self.num_samples < 1 or self.shard_size < 1:
            raise UserError(
                f"need at least one sample and shard size >= 1, got {self.num_samples} and {self.shard_size}"
            )
        if self.label_mode not in LABEL_MODES:
            raise UserError(f"label mode must be one of {', '.join(LABEL_MODES)}, got {self.label_mode!r}")
        if self.sampling.seed < 0:
            raise UserError(f"the seed must be non-negative, got {self.sampling.seed}")

    @property
    def num_shards(self) -> int:
        return -(-self.num_samples // self.shard_size)

    def shard_range(self, shard: int) -> range:
        """Global sample indices of a shard."""
        return range(shard * self.shard_size, min((shard + 1) * self.shard_size, self.num_samples))

    def to_dict(self) -> dict[str, Any]:
        """The manifest's record: the sampling fields flat beside the others, under the keys manifests
        have always had (`num_steps` for the steps), so that runs begun by older versions resume."""
        return {
            "num_samples": self.num_samples,
            "label_mode": self.label_mode,
            "classes": None if self.classes is None else list(self.classes),
            "shard_size": self.shard_size,
            **self.sampling.to_record(),
        }

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> ShardedSettings:
        """Read `to_dict`'s record back (a manifest's "settings"); sampling fields it lacks (a manifest
        older than the field, e.g. `timestep_shift`) take their defaults."""
        d = dict(record)
        sampling = {key: d.pop(key) for key in _SAMPLING_KEYS if key in d}
        if RECORDED_STEPS in d:
            sampling["steps"] = d.pop(RECORDED_STEPS)
        classes = d.pop("classes", None)
        return cls(
            **d,
            classes=None if classes is None else tuple(classes),
            sampling=SamplingSettings.from_dict(sampling),
        )


# The sampling fields a manifest records under their own names (the steps as RECORDED_STEPS).
_SAMPLING_KEYS = tuple(f.name for f in dataclasses.fields(SamplingSettings) if f.name != "steps")


@dataclass
class ShardedResult:
    """What a call of `generate_sharded` did.

    Attributes:
        out_dir: the run folder.
        computed: shards this process computed now.
        skipped: shards of this process that were already finished.
        packed: path of `samples.npz` if this process packed it (or found it packed), else None.
        missing: shards not finished yet (after this process's work), when known.
    """

    out_dir: Path
    computed: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    packed: Path | None = None
    missing: list[int] = field(default_factory=list)


def label_plan(settings: ShardedSettings, num_classes: int) -> np.ndarray | None:
    """Labels (N,) int64 of all samples, or None for an unconditional model."""
    if num_classes == 0:
        if settings.classes:
            raise UserError("this model is unconditional; it takes no classes")
        return None
    classes = np.asarray(settings.classes if settings.classes else range(num_classes), dtype=np.int64)
    if classes.min() < 0 or classes.max() >= num_classes:
        raise UserError(f"classes must lie in 0..{num_classes - 1}")
    if settings.label_mode == "balanced":
        return classes[np.arange(settings.num_samples) % len(classes)]
    rng = np.random.default_rng(np.random.SeedSequence([settings.sampling.seed, _LABEL_STREAM]))
    return classes[rng.integers(0, len(classes), settings.num_samples)]


def model_fingerprint(model: torch.nn.Module) -> str:
    """A short hash of a model's weights (names, shapes, float64 sums), to tell checkpoints apart."""
    digest = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in sorted(model.state_dict().items()):
            t = tensor.detach().double()
            digest.update(
                f"{name}:{tuple(t.shape)}:{t.sum().item():.12e}:{t.abs().sum().item():.12e};".encode()
            )
    return digest.hexdigest()[:16]


def shard_path(out_dir: Path, shard: int) -> Path:
    return out_dir / f"shard_{shard:05d}.npz"


def _manifest(pipe: DiTPipeline, settings: ShardedSettings) -> dict[str, Any]:
    h, w = pipe.image_size
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "settings": settings.to_dict(),
        "model": model_fingerprint(pipe.model),
        **pipe.objective_record(),
        "image_shape": [h, w, 3],
        "precision": pipe.precision,
    }


def _upgrade(old: dict[str, Any]) -> dict[str, Any]:
    """An older manifest in today's terms: its "autocast" entry as a "precision", and the sampling
    fields it predates (e.g. `timestep_shift`) at their defaults, which it was sampled with."""
    new = dict(old)
    if isinstance(old.get("settings"), dict):
        new["settings"] = {**SamplingSettings().to_record(), **old["settings"]}
    if "precision" not in old and "autocast" in old:
        del new["autocast"]
        new["precision"] = _AUTOCAST_PRECISION.get(old["autocast"], old["autocast"])
    return new


def check_or_write_manifest(out_dir: Path, manifest: dict[str, Any]) -> None:
    """Write the run's manifest, or check that an existing one describes the same run."""
    path = out_dir / MANIFEST_FILE
    if not path.exists():
        atomic_write_text(path, json.dumps(manifest, indent=2) + "\n")
        return
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read {path} ({err}); delete the folder or pick another output") from err
    if old.get("format") != FORMAT:
        raise UserError(f"{out_dir} holds something else than ditkit samples; pick another output folder")
    changed = _differences(_upgrade(old), json.loads(json.dumps(manifest)))
    if changed:
        raise UserError(
            f"{out_dir} holds samples made with other settings ({'; '.join(changed)}); "
            "rerun with the same settings to resume, or pick another output folder"
        )


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} then, {b!r} now")
    return out


def _write_shard(path: Path, images: np.ndarray, labels: np.ndarray | None, seeds: Sequence[int]) -> None:
    write_npz(path, images, labels, seeds=np.asarray(seeds, dtype=np.int64))


def compute_shard(
    pipe: DiTPipeline,
    settings: ShardedSettings,
    labels: np.ndarray | None,
    shard: int,
    batch_size: int | None,
) -> tuple[np.ndarray, np.ndarray | None, list[int]]:
    """Images uint8 (n, H, W, 3), labels (n,) or None and seeds of one shard."""
    indices = settings.shard_range(shard)
    seeds = settings.sampling.seeds(len(indices), start=indices.start)
    shard_labels = None if labels is None else labels[indices.start : indices.stop]
    latents = pipe.sample_latents(
        None if shard_labels is None else shard_labels.tolist(),
        seeds=seeds,
        settings=settings.sampling,
        batch_size=batch_size,
        progress=False,
    )
    images = np.ascontiguousarray(to_rgb(images_to_uint8(pipe.decode(latents, batch_size))))
    return images, shard_labels, seeds


def generate_sharded(
    pipe: DiTPipeline,
    out_dir: str | os.PathLike[str],
    settings: ShardedSettings,
    *,
    rank: int | None = None,
    world_size: int | None = None,
    batch_size: int | None = None,
    max_shards: int | None = None,
    pack: bool = True,
    progress: bool = True,
) -> ShardedResult:
    """Compute this process's unfinished shards, then (rank 0, once all are done) pack `samples.npz`.

    Args:
        pipe: the pipeline to sample with.
        out_dir: the run folder (created; reused to resume).
        settings: what to sample.
        rank, world_size: this process's share (default: from torch.distributed, else 0 and 1).
        batch_size: samples per forward pass (default: a whole shard).
        max_shards: stop after computing this many shards (a time-limited job; resume later).
        pack: pack `samples.npz` when every shard is finished (rank 0 only).
        progress: show a progress bar over this process's shards.

    Raises:
        UserError: the folder holds a run with other settings or another model.
    """
    rank = distributed.rank() if rank is None else rank
    world_size = distributed.world_size() if world_size is None else world_size
    if not 0 <= rank < world_size:
        raise UserError(f"rank {rank} is outside 0..{world_size - 1}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sampling = settings.sampling
    if sampling.sampler is None or sampling.guidance_scale is None:  # recorded in the manifest by value
        settings = dataclasses.replace(settings, sampling=fid_sampling(pipe, **sampling.to_dict()))
    check_or_write_manifest(out, _manifest(pipe, settings))
    labels = label_plan(settings, pipe.num_classes)
    result = ShardedResult(out)
    mine = range(rank, settings.num_shards, world_size)
    for shard in tqdm(mine, desc=f"shards (rank {rank})", disable=not progress):
        if shard_path(out, shard).exists():
            result.skipped.append(shard)
            continue
        if max_shards is not None and len(result.computed) >= max_shards:
            break
        images, shard_labels, seeds = compute_shard(pipe, settings, labels, shard, batch_size)
        _write_shard(shard_path(out, shard), images, shard_labels, seeds)
        result.computed.append(shard)
    distributed.barrier()
    result.missing = [k for k in range(settings.num_shards) if not shard_path(out, k).exists()]
    if pack and rank == 0 and not result.missing:
        packed = out / PACKED_FILE
        result.packed = packed if packed.exists() else pack_shards(out)
    return result


def pack_shards(out_dir: str | os.PathLike[str], dest: str | os.PathLike[str] | None = None) -> Path:
    """Concatenate the shards of a finished run into ADM's `.npz` layout, streaming (never all in memory).

    Writes `arr_0` (uint8 (N, H, W, 3)) and, for a conditional model, `labels` (int64 (N,)).
    """
    out = Path(out_dir)
    manifest = json.loads((out / MANIFEST_FILE).read_text(encoding="utf-8"))
    settings = manifest["settings"]
    n, size = int(settings["num_samples"]), int(settings["shard_size"])
    num_shards = -(-n // size)
    missing = [k for k in range(num_shards) if not shard_path(out, k).exists()]
    if missing:
        raise UserError(
            f"{out} lacks {len(missing)} of {num_shards} shards (first: {missing[0]}); run again to finish"
        )
    shape = (n, *manifest["image_shape"])
    target = Path(dest) if dest is not None else out / PACKED_FILE
    shards = (
        _read_shard(shard_path(out, k), len(range(k * size, min((k + 1) * size, n))), shape[1:])
        for k in range(num_shards)
    )
    write_npz_streamed(target, shape, shards)
    return target


def _read_shard(path: Path, count: int, image_shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        with np.load(path) as data:
            images = data["arr_0" if "arr_0" in data.files else "images"]  # shards before 0.2: "images"
            labels = data["labels"] if "labels" in data.files else None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        raise UserError(f"{path} is unreadable ({err}); delete it and run again to recompute it") from err
    if images.dtype != np.uint8 or images.shape != (count, *image_shape):
        raise UserError(
            f"{path} holds {images.dtype} {images.shape}, expected uint8 {(count, *image_shape)}; delete it and rerun"
        )
    return images, labels


def load_packed(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a packed `samples.npz` whole: images (N, H, W, 3) uint8 and labels (N,) or None."""
    return read_npz(path)
