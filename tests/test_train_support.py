"""Shared helpers of the training tests: a tiny run's options on fake Fashion-MNIST, state comparison."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from helpers import write_fake_fmnist

from ditkit.training.config import TrainConfig


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
