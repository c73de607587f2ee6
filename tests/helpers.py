"""Builders and checks shared by several test files: tiny random DiTs, fake Fashion-MNIST files, file errors.

pytest's default ("prepend") import mode puts the tests folder on sys.path, so test files import these
as `from helpers import random_tiny_dit`, like the sibling test modules they already import from.
"""

from __future__ import annotations

import gzip
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from ditkit.errors import UserError
from ditkit.model.dit import DiT, DiTConfig

# DiT-T/2's shape (hidden 32, depth 2, 2 heads) on 8x8x4 latents with 10 classes: 16 tokens, milliseconds a call.
TINY_DIT = dict(
    input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=2, num_classes=10
)
# Std of the random weights: large enough that every weight moves the output (the adaLN-Zero and output
# layers start at zero, which would hide most mistakes in conversion and checkpointing code).
WEIGHT_STD = 0.2
# Smaller weights for the sampling tests: several sampler steps stay in a moderate range, and their
# tolerances (e.g. the bf16 one in test_sampling_fast) were measured with this scale.
SAMPLING_WEIGHT_STD = 0.05


def tiny_dit_config(**overrides: Any) -> DiTConfig:
    """The TINY_DIT config with any field overridden (no preset name: overrides may change its shape)."""
    return DiTConfig(**{**TINY_DIT, **overrides})


def randomise_weights(model: DiT, seed: int = 0, std: float = WEIGHT_STD) -> DiT:
    """Give every parameter but the fixed sin-cos `pos_embed` N(0, std^2) values, in place; returns model."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name != "pos_embed":
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def random_dit(config: DiTConfig, seed: int = 0, std: float = WEIGHT_STD) -> DiT:
    """A DiT of `config` in eval mode with every weight random (a function of `seed` alone)."""
    return randomise_weights(DiT(config), seed, std).eval()


def random_tiny_dit(seed: int = 0, std: float = WEIGHT_STD, **overrides: Any) -> DiT:
    """`random_dit` of `tiny_dit_config(**overrides)`."""
    return random_dit(tiny_dit_config(**overrides), seed, std)


def sampling_dit(num_classes: int = 10, seed: int = 0, in_channels: int = 1) -> DiT:
    """The sampling tests' model: a random tiny DiT on 8x8 one-channel images (identity first stage)."""
    return random_tiny_dit(seed, SAMPLING_WEIGHT_STD, num_classes=num_classes, in_channels=in_channels)


def _idx_bytes(array: np.ndarray) -> bytes:
    """The IDX format of the MNIST files: magic (0, 0, uint8 type 0x08, ndim), big-endian dims, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_fake_fmnist(root: Path, n: int = 64, seed: int = 0, min_pixel: int = 0) -> Path:
    """Four gzipped IDX files (train and t10k) of n random 28x28 images >= min_pixel, labels 0..9 cycling."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for prefix in ("train", "t10k"):
        images = rng.integers(min_pixel, 256, (n, 28, 28), dtype=np.uint8)
        labels = np.arange(n) % 10
        (root / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(images)))
        (root / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(labels)))
    return root


def assert_junk_and_missing_files_rejected(
    load: Callable[[Path], object], folder: Path, suffix: str, unreadable: str, missing: str
) -> None:
    """`load` raises a UserError matching `unreadable` on a file of junk bytes, `missing` on an absent path."""
    junk = folder / f"junk{suffix}"
    junk.write_bytes(b"definitely not a valid file")
    with pytest.raises(UserError, match=unreadable):
        load(junk)
    with pytest.raises(UserError, match=missing):
        load(folder / f"absent{suffix}")


# Set by `make test` and CI: tests that need the real Fashion-MNIST fail instead of skipping without it.
REQUIRE_DATA_ENV = "DITKIT_REQUIRE_DATA"


def fashion_mnist_missing(reason: str) -> None:
    """Skip a test that needs Debian's Fashion-MNIST, or fail it where the data must be there.

    Under CI=true or DITKIT_REQUIRE_DATA=1 (as `make test` sets after installing the package) a missing
    dataset is an error of the machine's setup, which a skip would hide in a summary line.
    """
    message = f"Fashion-MNIST not installed ({reason}); `make test` installs Debian's dataset-fashion-mnist"
    if os.environ.get("CI", "").lower() == "true" or os.environ.get(REQUIRE_DATA_ENV) == "1":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def ctrl_c_reaches_it() -> None:
    """A subprocess `preexec_fn`: SIGINT back to its default, as in a terminal. A shell without job
    control starts background jobs with SIGINT ignored and children inherit that, so under `make test &`
    a server would never see the Ctrl+C a test sends."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
