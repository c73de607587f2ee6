"""Shared helpers of the training tests: a fake Fashion-MNIST folder and a tiny run's options."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ditkit.training.config import TrainConfig


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_fake_fmnist(root: Path, n: int = 64, seed: int = 0) -> Path:
    """Four gzipped IDX files of n random 28x28 images with labels 0..9 (train and test)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for prefix in ("train", "t10k"):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        (root / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(images)))
        (root / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(labels)))
    return root


def tiny_config(tmp_path: Path, **overrides: Any) -> TrainConfig:
    """A DiT-T/2 on 8x8 fake Fashion-MNIST, 4 steps of 8 samples, on the CPU."""
    data_dir = tmp_path / "fmnist"
    if not data_dir.exists():
        write_fake_fmnist(data_dir)
    fields: dict[str, Any] = dict(
        model="DiT-T/2",
        data="fashion-mnist",
        data_dir=str(data_dir),
        image_size=8,
        global_batch=8,
        steps=4,
        lr=1e-3,
        ema_decay=0.9,
        ckpt_every=0,
        log_every=1,
        device="cpu",
        out=str(tmp_path / "run"),
    )
    fields.update(overrides)
    return TrainConfig(**fields)


def assert_state_equal(a: dict[str, Any], b: dict[str, Any], exact: bool = True, path: str = "") -> None:
    """Recursively compare nested dicts/lists of tensors and plain values."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), path
        if exact:
            assert torch.equal(a, b), f"{path} differs"
        else:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=lambda m: f"{path}: {m}")
    elif isinstance(a, dict):
        assert set(a) == set(b), f"{path}: keys {sorted(map(str, a))} != {sorted(map(str, b))}"
        for k in a:
            assert_state_equal(a[k], b[k], exact, f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_state_equal(x, y, exact, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"
