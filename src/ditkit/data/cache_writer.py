"""`ditkit prepare`: encode a dataset once into a latent cache (layout in `ditkit.data.latent_cache`).

The images are split into shards of `shard_size` consecutive source images. Each finished shard is
written atomically and then recorded in the manifest, so an interrupted run resumes at the first
shard the manifest does not list and never recomputes a finished one. A run with different settings
on the same folder is refused rather than mixed in. Unreadable images are logged, left out and
listed in the manifest; the run carries on.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ditkit.atomic import atomic_path, atomic_write_text
from ditkit.data.class_index import CLASS_INDEX_FILENAME, write_class_index
from ditkit.data.latent_cache import (
    CACHE_FORMAT,
    CACHE_MANIFEST,
    CACHE_VERSION,
    SHARD_ARRAYS,
    read_manifest,
    shard_name,
    shard_path,
)
from ditkit.data.pixel_dataset import PixelDataset
from ditkit.data.transforms import to_unit_range
from ditkit.distributed import pick_device
from ditkit.errors import UserError
from ditkit.first_stage.base import FirstStage

logger = logging.getLogger(__name__)

DEFAULT_SHARD_SIZE = 4096  # images per shard: 64 MiB of float16 SD-VAE means at 256px
CACHE_DTYPES = ("float16", "float32")


@dataclass
class PrepareSummary:
    """Outcome of `prepare_latent_cache`."""

    out: Path
    num_images: int  # images in the cache
    num_skipped: int  # unreadable source images left out
    num_shards: int
    encoded_now: int  # source images this call read (0 when the cache was already complete)
    seconds: float
    skipped: list[dict[str, str]] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return self.encoded_now / self.seconds if self.seconds > 0 else 0.0


@dataclass
class _ShardBuffer:
    """Encodings of one shard, filled in source order."""

    name: str
    stop: int  # one past the last source index of the shard (and of the cache)
    mean: np.ndarray  # (capacity, 2, C, h, w)
    std: np.ndarray | None
    labels: list[int] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)

    def add(self, index: int, label: int, mean: np.ndarray, std: np.ndarray | None) -> None:
        row = len(self.indices)
        self.mean[row] = mean
        if self.std is not None and std is not None:
            self.std[row] = std
        self.labels.append(label)
        self.indices.append(index)


class _SourceItems(Dataset[tuple[int, np.ndarray | None, int, str | None]]):
    """Source images by position in `indices`, as (index, uint8 array or None, label, reason)."""

    def __init__(self, source: PixelDataset, indices: list[int]) -> None:
        self.source, self.indices = source, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> tuple[int, np.ndarray | None, int, str | None]:
        index = self.indices[position]
        array, reason = self.source.try_load(index)
        return index, array, self.source.label(index), reason


def _as_list(batch: list[Any]) -> list[Any]:
    return batch


def prepare_latent_cache(
    source: PixelDataset,
    first_stage: FirstStage,
    out: str | os.PathLike[str],
    *,
    batch_size: int = 64,
    shard_size: int = DEFAULT_SHARD_SIZE,
    dtype: str = "float16",
    workers: int = 0,
    limit: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> PrepareSummary:
    """Encode both flips of every image of `source` with `first_stage` into a cache at `out`.

    Args:
        source: the images (already at their final size and channel count).
        first_stage: the encoder, on the device to run on.
        out: cache folder; an unfinished cache made with the same settings is resumed.
        batch_size: images per encoder call (the encoder sees 2x as many: both flips).
        shard_size: source images per shard file.
        dtype: "float16" (default: its rounding, 2^-11 relative, is far below the SD VAE posterior's
            own spread) or "float32".
        workers: DataLoader processes decoding images (0: decode in this process).
        limit: encode only the first `limit` images.
        overwrite: delete a cache already at `out` (only its own files) and start afresh.
        progress: show a tqdm progress bar.

    Raises:
        UserError: bad settings, or `out` holds a cache made with different settings.
    """
    check_cache_options(batch_size=batch_size, shard_size=shard_size, dtype=dtype, workers=workers)
    if source.channels != first_stage.image_channels:
        raise UserError(
            f"the first stage encodes {first_stage.image_channels}-channel images but the dataset gives "
            f"{source.channels}; pass --channels {first_stage.image_channels}"
        )
    start = time.perf_counter()
    out = Path(out)
    num_images = len(source) if limit is None else min(limit, len(source))
    if num_images < 1:
        raise UserError("nothing to encode: the dataset is empty or --limit is 0")
    config = _cache_config(source, first_stage, num_images, dtype, shard_size)
    manifest = _open_manifest(out, config, source, overwrite)
    done = {shard["name"] for shard in manifest["shards"]}
    todo = [k for k in range(math.ceil(num_images / shard_size)) if shard_name(k) not in done]
    indices = [i for k in todo for i in range(k * shard_size, min(num_images, (k + 1) * shard_size))]
    if indices:
        _encode_shards(source, first_stage, out, manifest, indices, batch_size, shard_size, workers, progress)
    if manifest["num_images"] == 0:
        raise UserError(
            f"none of the {num_images} images could be read (see the warnings above); check the files"
        )
    manifest["complete"] = True
    _write_manifest(out, manifest)
    write_class_index(out / CLASS_INDEX_FILENAME, source.classes)
    return PrepareSummary(
        out=out,
        num_images=manifest["num_images"],
        num_skipped=manifest["num_skipped"],
        num_shards=len(manifest["shards"]),
        encoded_now=len(indices),
        seconds=time.perf_counter() - start,
        skipped=[entry for shard in manifest["shards"] for entry in shard["skipped"]],
    )


def check_cache_options(
    *,
    batch_size: int = 64,
    shard_size: int = DEFAULT_SHARD_SIZE,
    dtype: str = "float16",
    workers: int = 0,
    **_: Any,
) -> None:
    """Raise UserError for options `prepare_latent_cache` cannot use (checked before any loading)."""
    if batch_size < 1 or shard_size < 1 or workers < 0:
        raise UserError("--batch-size and --shard-size must be positive, --workers non-negative")
    if dtype not in CACHE_DTYPES:
        raise UserError(f"unknown cache dtype {dtype!r}; use one of {', '.join(CACHE_DTYPES)}")


def _encode_shards(
    source: PixelDataset,
    first_stage: FirstStage,
    out: Path,
    manifest: dict[str, Any],
    indices: list[int],
    batch_size: int,
    shard_size: int,
    workers: int,
    progress: bool,
) -> None:
    config = manifest["config"]
    loader = DataLoader(
        _SourceItems(source, indices), batch_size=batch_size, num_workers=workers, collate_fn=_as_list
    )
    buffer: _ShardBuffer | None = None
    with tqdm(total=len(indices), unit="img", desc="prepare", disable=not progress) as bar:
        for batch in loader:
            mean, std = _encode_both_flips(first_stage, [item[1] for item in batch if item[1] is not None])
            row = 0
            for index, array, label, reason in batch:
                if buffer is None:
                    buffer = _new_buffer(index // shard_size, shard_size, config)
                if array is None:
                    name = source.item_name(index)
                    buffer.skipped.append({"item": name, "reason": reason or "unreadable"})
                    logger.warning("skipping unreadable image %s (%s)", name, reason)
                else:
                    assert mean is not None  # at least this image was encoded
                    buffer.add(index, label, mean[row], None if std is None else std[row])
                    row += 1
                if index == buffer.stop - 1:
                    _finish_shard(out, manifest, buffer)
                    buffer = None
            bar.update(len(batch))
            bar.set_postfix(skipped=manifest["num_skipped"] + (len(buffer.skipped) if buffer else 0))


def _encode_both_flips(
    first_stage: FirstStage, arrays: list[np.ndarray]
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Encode uint8 images (S, S, C) and their mirrors: mean, std as float32 (b, 2, c, h, w) or None."""
    if not arrays:
        return None, None
    images = torch.from_numpy(np.stack(arrays)).to(first_stage.device)  # (b, S, S, C) uint8
    images = to_unit_range(images)  # (b, C, S, S)
    mean, std = first_stage.encode(torch.cat([images, images.flip(-1)]))  # (2b, c, h, w)

    def pair(latents: torch.Tensor) -> np.ndarray:
        latents = latents.float().unflatten(0, (2, len(arrays))).transpose(0, 1)  # (b, 2, c, h, w)
        return latents.cpu().numpy()

    return pair(mean), None if first_stage.deterministic else pair(std)


def _new_buffer(shard: int, shard_size: int, config: dict[str, Any]) -> _ShardBuffer:
    stop = min((shard + 1) * shard_size, config["num_images"])
    shape = (stop - shard * shard_size, 2, *config["latent_shape"])
    dtype = np.dtype(config["dtype"])
    std = np.empty(shape, dtype) if config["has_std"] else None
    return _ShardBuffer(shard_name(shard), stop, np.empty(shape, dtype), std)


def _finish_shard(out: Path, manifest: dict[str, Any], buffer: _ShardBuffer) -> None:
    count = len(buffer.indices)
    arrays = {
        "mean": buffer.mean[:count],
        "std": None if buffer.std is None else buffer.std[:count],
        "labels": np.asarray(buffer.labels, dtype=np.int64),
        "index": np.asarray(buffer.indices, dtype=np.int64),
    }
    for array_name, array in arrays.items():
        if array is not None:
            with atomic_path(shard_path(out, buffer.name, array_name)) as tmp, open(tmp, "wb") as f:
                np.save(f, array)
    # Only now does the shard count as done: a crash above leaves it unlisted, to be redone.
    manifest["shards"].append({"name": buffer.name, "count": count, "skipped": buffer.skipped})
    manifest["shards"].sort(key=lambda shard: shard["name"])
    manifest["num_images"] += count
    manifest["num_skipped"] += len(buffer.skipped)
    _write_manifest(out, manifest)


def _cache_config(
    source: PixelDataset, first_stage: FirstStage, num_images: int, dtype: str, shard_size: int
) -> dict[str, Any]:
    """Everything that decides the cache's contents; a resumed run must match it exactly."""
    description = {key: value for key, value in source.describe().items() if key != "root"}
    config = {
        "source": {**description, "fingerprint": source.fingerprint()},
        "image_size": source.image_size,
        "channels": source.channels,
        "first_stage": first_stage.to_dict(),
        "latent_shape": list(first_stage.latent_shape(source.image_size)),
        "dtype": dtype,
        "has_std": not first_stage.deterministic,
        "shard_size": shard_size,
        "num_images": num_images,
    }
    return json.loads(json.dumps(config))  # the form it takes once stored, for comparison


def _open_manifest(
    out: Path, config: dict[str, Any], source: PixelDataset, overwrite: bool
) -> dict[str, Any]:
    """The manifest to continue: the stored one (same config), or a fresh one."""
    for pattern in (".shard_*.tmp", f".{CACHE_MANIFEST}.*.tmp"):  # left by a killed run
        for stale in out.glob(pattern):
            stale.unlink(missing_ok=True)
    if (out / CACHE_MANIFEST).exists():
        if overwrite:
            _remove_cache(out)
        else:
            manifest = read_manifest(out)
            changed = sorted(key for key in config if manifest["config"].get(key) != config[key])
            if changed:
                raise UserError(
                    f"{out} holds a cache made with other settings ({', '.join(changed)} differ); "
                    "use a new --out or pass --overwrite"
                )
            return _drop_missing_shards(out, manifest)
    return {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "config": config,
        "source_root": source.describe().get("root"),
        "classes": list(source.classes),
        "complete": False,
        "num_images": 0,
        "num_skipped": 0,
        "shards": [],
    }


def _drop_missing_shards(out: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Forget listed shards whose files were deleted since, so that they are encoded again."""
    arrays = [a for a in SHARD_ARRAYS if a != "std" or manifest["config"]["has_std"]]
    kept = [s for s in manifest["shards"] if all(shard_path(out, s["name"], a).is_file() for a in arrays)]
    if len(kept) < len(manifest["shards"]):
        logger.warning(
            "%d shard(s) of %s have missing files; encoding them again",
            len(manifest["shards"]) - len(kept),
            out,
        )
        manifest["complete"] = False
        manifest["shards"] = kept
        manifest["num_images"] = sum(s["count"] for s in kept)
        manifest["num_skipped"] = sum(len(s["skipped"]) for s in kept)
    return manifest


def _remove_cache(out: Path) -> None:
    for array in SHARD_ARRAYS:
        for path in out.glob(f"shard_*.{array}.npy"):
            path.unlink()
    for name in (CACHE_MANIFEST, CLASS_INDEX_FILENAME):
        (out / name).unlink(missing_ok=True)


def _write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    atomic_write_text(out / CACHE_MANIFEST, json.dumps(manifest, indent=1) + "\n")


def prepare_dataset(
    spec: str,
    out: str | os.PathLike[str],
    *,
    first_stage: str | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    split: str = "train",
    image_size: int | None = None,
    channels: int | None = None,
    device: str = "auto",
    **options: Any,
) -> PrepareSummary:
    """`ditkit prepare`: open the dataset and the first stage from their specs, then encode.

    Args:
        spec: "fashion-mnist" or an image folder (see `ditkit.data.build.open_image_source`).
        out: cache folder.
        first_stage: a `load_first_stage` spec; default "identity" for Fashion-MNIST, else "sd-vae-ft-ema".
        data_dir: folder of the Fashion-MNIST IDX files.
        split: Fashion-MNIST split.
        image_size: pixel size (default 32 for Fashion-MNIST, 256 otherwise).
        channels: pixel channels; default the dataset's own for the identity, the VAE's otherwise.
        device: "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
        **options: passed to `prepare_latent_cache` (batch_size, shard_size, dtype, workers, ...).
    """
    from ditkit.data.build import FASHION_MNIST, natural_channels, open_image_source
    from ditkit.first_stage.load import load_first_stage, planned_latent_shape
    from ditkit.first_stage.sd_vae import DEFAULT_SD_VAE, SD_VAE_IMAGE_CHANNELS

    # Everything cheap first (options, the dataset's path, sizes): nothing is loaded or downloaded yet.
    check_cache_options(**options)
    spec_first_stage = first_stage or ("identity" if spec == FASHION_MNIST else DEFAULT_SD_VAE)
    # The SD VAE encodes RGB: other datasets are converted to it unless --channels says otherwise.
    if channels is None:
        channels = natural_channels(spec) if spec_first_stage == "identity" else SD_VAE_IMAGE_CHANNELS
    source = open_image_source(
        spec, data_dir=data_dir, split=split, image_size=image_size, channels=channels, flip="none"
    )
    planned_latent_shape(spec_first_stage, channels, source.image_size)
    device = str(pick_device(device, local_rank=None))
    encoder = load_first_stage(spec_first_stage, channels=channels, device=device)
    return prepare_latent_cache(source, encoder, out, **options)
