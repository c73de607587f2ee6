"""Sample and reference batches in the ADM evaluator's `.npz` layout: the one writer, and streamed reads.

- `arr_0`: uint8 images (N, H, W, 3); greyscale (N, H, W) or (N, H, W, 1) is broadcast to 3 channels.
- reference batches may also hold the precomputed statistics `mu`, `sigma` (pool_3, 2048-d) and
  `mu_s`, `sigma_s` (spatial, 2023-d); when present they are used instead of statistics of `arr_0`.
- sample batches may hold class labels as `labels` or, as ADM's sampler writes them, `arr_1`.

ditkit writes this layout only (`write_npz`); files with images under `images` (as `ditkit demo` wrote
them before) are still read.

`np.load` reads a whole member into memory (an npz cannot be memory-mapped), so images are read
here straight from the zip member, a batch at a time: 50,000 images never sit in memory at once.
"""

from __future__ import annotations

import contextlib
import os
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from ditkit.errors import UserError
from ditkit.evaluation.inception import POOL_DIM, SPATIAL_DIM

# ADM's key for images, the one ditkit writes; `images` (older `ditkit demo` files) is read when there
# is no arr_0.
IMAGE_KEYS = ("arr_0", "images")
IMAGES_KEY = IMAGE_KEYS[0]
# Reference statistics: key -> expected shape.
STATS_SHAPES = {
    "mu": (POOL_DIM,),
    "sigma": (POOL_DIM, POOL_DIM),
    "mu_s": (SPATIAL_DIM,),
    "sigma_s": (SPATIAL_DIM,) * 2,
}
# Class labels as ditkit writes them, then as ADM's sampler does.
LABEL_KEYS = ("labels", "arr_1")
LABELS_KEY = LABEL_KEYS[0]


class NpzImages:
    """A uint8 image array inside an `.npz`, read in batches of (B, H, W, 3) without loading it whole."""

    def __init__(self, path: str | os.PathLike[str], key: str | None = None) -> None:
        """Open `key` in the npz at `path`; by default the first of `arr_0`, `images` present."""
        self.path, self.key = Path(path), key or IMAGE_KEYS[0]
        if key is None:
            with contextlib.suppress(zipfile.BadZipFile, OSError):  # reported below by _open_member
                with zipfile.ZipFile(self.path) as zf:
                    names = set(zf.namelist())
                self.key = next((k for k in IMAGE_KEYS if f"{k}.npy" in names), IMAGE_KEYS[0])
        key = self.key
        with self._open_member() as (f, header):
            shape, self.fortran, dtype = header
        self.shape: tuple[int, ...] = tuple(shape)
        if dtype != np.uint8:
            raise UserError(f"{self.path}: {key} is {dtype}, expected uint8 images in 0..255 (ADM layout)")
        if len(self.shape) not in (3, 4) or (len(self.shape) == 4 and self.shape[3] not in (1, 3)):
            raise UserError(
                f"{self.path}: {key} has shape {self.shape}, expected (N, H, W, 3), (N, H, W, 1) or (N, H, W)"
            )
        if self.shape[0] == 0:
            raise UserError(f"{self.path}: {key} holds no images")

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, 3) of the images as yielded."""
        return (self.shape[1], self.shape[2], 3)

    @contextlib.contextmanager
    def _open_member(self) -> Iterator[tuple[IO[bytes], Any]]:
        if not self.path.is_file():
            raise UserError(f"no such file: {self.path}")
        try:
            with zipfile.ZipFile(self.path) as zf:
                name = f"{self.key}.npy"
                if name not in zf.namelist():
                    keys = ", ".join(n.removesuffix(".npy") for n in zf.namelist()) or "nothing"
                    raise UserError(
                        f"{self.path} has no {self.key!r} array (it holds {keys}); expected ADM's layout"
                    )
                with zf.open(name) as f:
                    version = np.lib.format.read_magic(f)
                    read = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0
                    )
                    yield f, read(f)
        except (zipfile.BadZipFile, ValueError, EOFError, OSError) as err:
            raise UserError(f"{self.path} is not a readable .npz file ({err}); re-create it") from err

    def batches(self, batch_size: int, limit: int | None = None) -> Iterator[np.ndarray]:
        """Yield uint8 (B, H, W, 3) batches of the first `limit` images (all by default)."""
        total = len(self) if limit is None else min(limit, len(self))
        if self.fortran:  # rare: a Fortran-ordered array cannot be streamed row by row
            data = np.load(self.path)[self.key]
            for start in range(0, total, batch_size):
                yield to_rgb(np.ascontiguousarray(data[start : min(start + batch_size, total)]))
            return
        row_bytes = int(np.prod(self.shape[1:]))
        with self._open_member() as (f, _):
            for start in range(0, total, batch_size):
                n = min(batch_size, total - start)
                try:
                    data = f.read(n * row_bytes)
                except (zipfile.BadZipFile, OSError, EOFError) as err:
                    raise UserError(
                        f"{self.path}: {self.key} is corrupt ({err}); re-create the file"
                    ) from err
                if len(data) != n * row_bytes:
                    raise UserError(
                        f"{self.path}: {self.key} is truncated at image {start}; re-create the file"
                    )
                yield to_rgb(np.frombuffer(data, np.uint8).reshape(n, *self.shape[1:]))


def to_rgb(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W), (N, H, W, 1) or (N, H, W, 3) -> (N, H, W, 3), grey broadcast to 3 channels."""
    if images.ndim == 3:
        images = images[..., None]
    if images.shape[-1] == 1:
        images = np.broadcast_to(images, (*images.shape[:3], 3))
    return images


def read_reference_stats(path: str | os.PathLike[str]) -> dict[str, np.ndarray] | None:
    """The precomputed `mu`, `sigma`, `mu_s`, `sigma_s` of a reference batch (float64), or None."""
    try:
        with np.load(path) as npz:
            present = [k for k in STATS_SHAPES if k in npz.files]
            if not present:
                return None
            if len(present) != len(STATS_SHAPES):
                missing = [k for k in STATS_SHAPES if k not in present]
                raise UserError(
                    f"{path} has {', '.join(present)} but not {', '.join(missing)}; rebuild the reference"
                )
            stats = {k: np.asarray(npz[k], dtype=np.float64) for k in STATS_SHAPES}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        raise UserError(f"{path} is not a readable .npz file ({err}); re-create it") from err
    for key, shape in STATS_SHAPES.items():
        if stats[key].shape != shape:
            raise UserError(
                f"{path}: {key} has shape {stats[key].shape}, expected {shape}; "
                "it was not made with the TF FID Inception (pool_3 / mixed_6/conv)"
            )
        if not np.isfinite(stats[key]).all():
            raise UserError(f"{path}: {key} holds NaN or inf; rebuild the reference")
    return stats


def read_labels(path: str | os.PathLike[str]) -> np.ndarray | None:
    """Class labels of a sample batch (`labels` or ADM's `arr_1`) as int64 (N,), or None."""
    try:
        with np.load(path) as npz:
            for key in LABEL_KEYS:
                if key in npz.files:
                    labels = np.asarray(npz[key])
                    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
                        raise UserError(
                            f"{path}: {key} must be integer class labels (N,), got {labels.dtype} {labels.shape}"
                        )
                    return labels.astype(np.int64)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        raise UserError(f"{path} is not a readable .npz file ({err}); re-create it") from err
    return None


def read_npz(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray | None]:
    """A whole batch: its images as stored (`arr_0`, else `images`) and its labels (int64 (N,)) or None."""
    key = NpzImages(path).key  # checks the file and the images
    try:
        with np.load(path) as npz:
            images = npz[key]
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        raise UserError(f"{path} is not a readable .npz file ({err}); re-create it") from err
    return images, read_labels(path)


def write_npz(
    path: str | os.PathLike[str], images: np.ndarray, labels: np.ndarray | None = None, **arrays: np.ndarray
) -> None:
    """Write a batch in ADM's layout, atomically.

    Args:
        path: the `.npz` file.
        images: uint8 (N, H, W, C) or (N, H, W), stored as `arr_0`.
        labels: class labels (N,), stored as int64 `labels`; None stores none.
        **arrays: more arrays stored under their names (a reference's `mu`, `sigma`, `mu_s`, `sigma_s`).
    """
    write_npz_streamed(path, images.shape, [(images, labels)], **arrays)


def write_npz_streamed(
    path: str | os.PathLike[str],
    shape: Iterable[int],
    batches: Iterable[tuple[np.ndarray, np.ndarray | None]],
    **arrays: np.ndarray,
) -> None:
    """`write_npz` for more images than fit in memory: only one batch is held at a time.

    Args:
        path: the `.npz` file (written atomically).
        shape: the shape of all the images together, (N, H, W, C) or (N, H, W).
        batches: (uint8 images (B, ...), labels (B,) or None), in order; their images add up to `shape`.
        **arrays: more arrays stored after the images and labels.
    """
    from ditkit.atomic import atomic_path

    shape = tuple(int(n) for n in shape)
    labels: list[np.ndarray] = []
    written = 0
    # A plain zip of .npy members, as np.savez writes one (the streamed member needs its header first).
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        with zf.open(f"{IMAGES_KEY}.npy", "w", force_zip64=True) as f:
            header = {
                "descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)),
                "fortran_order": False,
                "shape": shape,
            }
            np.lib.format.write_array_header_1_0(f, header)
            for images, batch_labels in batches:
                if images.dtype != np.uint8 or images.shape[1:] != shape[1:]:
                    raise ValueError(
                        f"expected uint8 images of shape (B, {shape[1:]}), got {images.dtype} {images.shape}"
                    )
                f.write(np.ascontiguousarray(images).tobytes())
                written += len(images)
                if batch_labels is not None:
                    labels.append(batch_labels)
        if written != shape[0]:
            raise ValueError(f"{written} images were written, the header says {shape[0]}")
        members = {LABELS_KEY: np.concatenate(labels).astype(np.int64)} if labels else {}
        for name, array in {**members, **arrays}.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(array))


def write_reference(path: str | os.PathLike[str], images: np.ndarray, stats: dict[str, np.ndarray]) -> None:
    """Write a reference batch in ADM's layout (`arr_0` plus `mu`, `sigma`, `mu_s`, `sigma_s`), atomically."""
    write_npz(path, images, **{k: stats[k] for k in STATS_SHAPES})
