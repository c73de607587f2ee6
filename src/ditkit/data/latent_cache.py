"""The latent cache: a dataset encoded once by the first stage, read memory-mapped during training.

Layout of a cache folder (written by `ditkit prepare`, see `ditkit.data.cache_writer`):

    cache.json                manifest: config, class names, shard list, "complete"
    class_index.json          {"class name": label}
    shard_00000.mean.npy      (n, 2, C, h, w) posterior mean x latent scale; [:, 0] unflipped, [:, 1] flipped
    shard_00000.std.npy       (n, 2, C, h, w) posterior std x latent scale (absent for the identity)
    shard_00000.labels.npy    (n,) int64 labels
    shard_00000.index.npy     (n,) int64 index of each image in the source (files left out leave gaps)

Both flips of every image are encoded, because the VAE does not commute with flipping; the
posterior's mean and std are stored so that training still samples a fresh latent each time,
as DiT does when it encodes on the fly (`latent_dist.sample()`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ditkit.errors import UserError
from ditkit.seeding import coin_flip, item_generator

CACHE_MANIFEST = "cache.json"
CACHE_FORMAT = "ditkit-latent-cache"
CACHE_VERSION = 1
CACHE_FLIP_MODES = ("random", "none", "both")
POSTERIOR_MODES = ("sample", "mean")
SHARD_ARRAYS = ("mean", "std", "labels", "index")


def shard_name(shard: int) -> str:
    return f"shard_{shard:05d}"


def shard_path(root: Path, name: str, array: str) -> Path:
    """File of one array ("mean", "std", "labels", "index") of shard `name`."""
    return root / f"{name}.{array}.npy"


def read_manifest(root: str | os.PathLike[str]) -> dict[str, Any]:
    """Read `root/cache.json`, checking it is a ditkit latent cache of a known version."""
    path = Path(root) / CACHE_MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise UserError(
            f"{root} is not a latent cache (no {CACHE_MANIFEST}); make one with `ditkit prepare`"
        ) from err
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read {path}: {err}; rerun `ditkit prepare` with --overwrite") from err
    if not isinstance(manifest, dict) or manifest.get("format") != CACHE_FORMAT:
        raise UserError(f"{path} is not a ditkit latent-cache manifest")
    if manifest.get("version") != CACHE_VERSION:
        raise UserError(
            f"{path} has cache version {manifest.get('version')}; this ditkit reads {CACHE_VERSION}"
        )
    return manifest


def sample_latent(
    mean: torch.Tensor, std: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draw a latent from the diagonal Gaussian posterior: mean + std * noise (any shape)."""
    noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
    return mean + std * noise


class LatentCacheDataset(Dataset[tuple[torch.Tensor, int]]):
    """Items `(latent, label)`: latent float32 (C, h, w) already scaled for the model, label int.

    Randomness (which flip, posterior noise) comes from a generator seeded by (seed, epoch, index),
    so items do not depend on workers or batch size and a resumed run sees the same data; call
    `set_epoch` before each epoch (without persistent DataLoader workers).

    Args:
        root: cache folder written by `ditkit prepare`.
        flip: "random" (one of the two stored flips per item, as DiT's random flip), "none"
            (always the unflipped image), or "both" (2N items: item 2i is image i, item 2i+1 its mirror).
        posterior: "sample" (mean + std * noise, as in DiT training) or "mean".
        seed: seed of the per-item random streams.
    """

    def __init__(
        self, root: str | os.PathLike[str], *, flip: str = "random", posterior: str = "sample", seed: int = 0
    ) -> None:
        if flip not in CACHE_FLIP_MODES:
            raise UserError(f"unknown flip mode {flip!r}; use one of {', '.join(CACHE_FLIP_MODES)}")
        if posterior not in POSTERIOR_MODES:
            raise UserError(f"unknown posterior mode {posterior!r}; use one of {', '.join(POSTERIOR_MODES)}")
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        if not self.manifest.get("complete"):
            raise UserError(
                f"latent cache {self.root} is incomplete; rerun the same `ditkit prepare` command to finish it"
            )
        config = self.manifest["config"]
        self.classes: tuple[str, ...] = tuple(self.manifest["classes"])
        self.latent_shape: tuple[int, int, int] = tuple(config["latent_shape"])  # type: ignore[assignment]
        self.image_size = int(config["image_size"])
        self.first_stage: dict[str, Any] = config["first_stage"]
        self.has_std = bool(config["has_std"])
        self.flip, self.posterior, self.seed, self.epoch = flip, posterior, seed, 0
        self._names = [shard["name"] for shard in self.manifest["shards"]]
        counts = [int(shard["count"]) for shard in self.manifest["shards"]]
        self._offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)  # image i is in shard k iff
        self.num_images = int(self._offsets[-1])  # offsets[k] <= i < offsets[k + 1]
        self._arrays: list[dict[str, np.ndarray]] | None = None
        self._open()  # check every shard now rather than mid-training

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return 2 * self.num_images if self.flip == "both" else self.num_images

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose flips and posterior noise the following items use."""
        self.epoch = epoch

    def read(self, image: int, flipped: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Stored (mean, std, label) of image `image`, flip 0 or 1; std is zeros when not stored."""
        if not 0 <= image < self.num_images:
            raise IndexError(f"image {image} out of range for a cache of {self.num_images} images")
        shard = int(np.searchsorted(self._offsets, image, side="right")) - 1
        row = image - int(self._offsets[shard])
        arrays = self._open()[shard]
        mean = torch.from_numpy(np.array(arrays["mean"][row, flipped], dtype=np.float32))  # (C, h, w)
        if self.has_std:
            std = torch.from_numpy(np.array(arrays["std"][row, flipped], dtype=np.float32))
        else:
            std = torch.zeros_like(mean)
        return mean, std, int(arrays["labels"][row])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        generator = item_generator(self.seed, self.epoch, index)
        if self.flip == "both":
            image, flipped = divmod(index, 2)
        else:
            image, flipped = index, int(self.flip == "random" and coin_flip(generator))
        mean, std, label = self.read(image, flipped)
        if self.posterior == "mean" or not self.has_std:
            return mean, label
        return sample_latent(mean, std, generator), label

    def _open(self) -> list[dict[str, np.ndarray]]:
        if self._arrays is None:
            self._arrays = [self._open_shard(name, end - start) for name, start, end in self._shard_spans()]
        return self._arrays

    def _shard_spans(self) -> list[tuple[str, int, int]]:
        return [
            (name, int(self._offsets[k]), int(self._offsets[k + 1])) for k, name in enumerate(self._names)
        ]

    def _open_shard(self, name: str, count: int) -> dict[str, np.ndarray]:
        wanted = [a for a in SHARD_ARRAYS if a != "std" or self.has_std]
        arrays = {}
        for array in wanted:
            path = shard_path(self.root, name, array)
            try:
                arrays[array] = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as err:
                raise UserError(
                    f"latent cache {self.root} is damaged ({path.name}: {err}); rebuild it with "
                    "`ditkit prepare ... --overwrite`"
                ) from err
        latents = (count, 2, *self.latent_shape)
        expected: dict[str, tuple[int, ...]] = {
            "mean": latents,
            "std": latents,
            "labels": (count,),
            "index": (count,),
        }
        for array in arrays:
            if arrays[array].shape != expected[array]:
                raise UserError(
                    f"{shard_path(self.root, name, array)} has shape {arrays[array].shape}, the manifest says "
                    f"{expected[array]}; rebuild the cache with --overwrite"
                )
        return arrays

    def __getstate__(self) -> dict[str, Any]:
        # Memory maps would be pickled as full copies for spawned DataLoader workers: reopen there instead.
        state = self.__dict__.copy()
        state["_arrays"] = None
        return state
