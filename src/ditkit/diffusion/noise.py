"""Per-sample random streams: sample i's noise depends only on seed i.

Each sample owns a CPU `torch.Generator`; its noise is drawn in float32 on the CPU and then
moved (through pinned memory, without blocking the host), so results do not depend on the batch
size, the number of devices, or the device type (the idea of NVlabs/edm's StackedRandomGenerator).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
from torch import Tensor


class NoiseSource(Protocol):
    """Where a stochastic sampler gets its step noise: randn(sample_shape) -> (B, *sample_shape)."""

    def randn(self, sample_shape: Sequence[int]) -> Tensor: ...


class SeededNoise:
    """One independent Gaussian stream per sample.

    Args:
        seeds: one integer seed per sample.
        device: where the drawn tensors are put.
        dtype: dtype of the drawn tensors (drawn in float32 regardless).

    Example:
        >>> noise = SeededNoise([0, 1, 2])
        >>> noise.randn((4, 8, 8)).shape
        torch.Size([3, 4, 8, 8])
    """

    def __init__(
        self,
        seeds: Sequence[int],
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.seeds = [int(s) for s in seeds]
        self.device = torch.device(device)
        self.dtype = dtype
        self._generators = [torch.Generator("cpu").manual_seed(s) for s in self.seeds]

    def __len__(self) -> int:
        return len(self.seeds)

    def randn(self, sample_shape: Sequence[int]) -> Tensor:
        """Draw one standard normal tensor per sample.

        Args:
            sample_shape: shape of one sample, e.g. (C, H, W).

        Returns:
            (B, *sample_shape) tensor on `device` in `dtype`.
        """
        draws = [torch.randn(tuple(sample_shape), generator=g, dtype=torch.float32) for g in self._generators]
        return host_to_device(torch.stack(draws), self.device).to(self.dtype)


def host_to_device(tensor: Tensor, device: torch.device | str) -> Tensor:
    """Copy a CPU tensor to `device` without making the host wait for a CUDA device.

    A copy from pageable memory waits until the device has finished its queued work; from pinned
    memory with non_blocking=True it is queued like a kernel (the pinned block is not reused before
    the copy has run).
    """
    if torch.device(device).type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)
