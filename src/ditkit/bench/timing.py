"""Clocks for benchmarks: per-call times without host synchronisation, peak memory, matmul peak.

On CUDA, calls are timed with CUDA events recorded between them and read after one final
synchronisation, so the timed loop never waits on the device. On the CPU, a monotonic clock.
"""

from __future__ import annotations

import functools
import resource
import statistics
import sys
import time
from collections.abc import Callable

import torch

from ditkit.errors import UserError
from ditkit.model.precision import check_precision, matmul_precision

# Side of the square matmul that measures the peak: large enough to saturate the device.
CUDA_PEAK_SIZE = 8192
CPU_PEAK_SIZE = 1024
# Independent trials of the peak measurement; the best one is the peak.
PEAK_TRIALS = 5
# Rough seconds per peak trial (calls are batched to last about this long).
PEAK_TRIAL_SECONDS = 0.2


def synchronize(device: torch.device) -> None:
    """Wait for all queued work on `device` (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], object], iters: int, device: torch.device) -> list[float]:
    """Seconds taken by each of `iters` consecutive calls of `fn`.

    On CUDA the loop records an event between calls and synchronises once at the end, so each
    time is the device-side interval between consecutive call boundaries (idle gaps included).
    """
    if iters < 1:
        raise UserError(f"need at least one timed iteration, got {iters}")
    if device.type == "cuda":
        events = [torch.cuda.Event(enable_timing=True) for _ in range(iters + 1)]
        events[0].record()
        for i in range(iters):
            fn()
            events[i + 1].record()
        torch.cuda.synchronize(device)
        return [events[i].elapsed_time(events[i + 1]) / 1e3 for i in range(iters)]
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gb(device: torch.device) -> float:
    """Peak memory since the last reset: CUDA allocator peak, or on the CPU the process's peak RSS.

    The CPU figure cannot be reset: it is the largest resident size the process has had so far.
    """
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1e9 if sys.platform == "darwin" else rss * 1024 / 1e9  # bytes on macOS, KiB on Linux


@functools.cache
def matmul_peak_tflops(device: str, precision: str, size: int | None = None) -> float:
    """Measured dense matmul throughput (TFLOP/s) of `device` in `precision`: the MFU denominator.

    Multiplies two random size x size matrices (bfloat16 for "bf16", float32 otherwise, with TF32
    on for "tf32"), repeatedly, and returns the best of a few trials. Cached per process.

    Args:
        device: e.g. "cuda", "cuda:0", "cpu".
        precision: "fp32", "tf32" or "bf16".
        size: matrix side; default 8192 on CUDA, 1024 on the CPU.
    """
    dev = torch.device(device)
    check_precision(precision, dev)
    n = size or (CUDA_PEAK_SIZE if dev.type == "cuda" else CPU_PEAK_SIZE)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    gen = torch.Generator(dev).manual_seed(0)
    a = torch.randn(n, n, device=dev, dtype=dtype, generator=gen)
    b = torch.randn(n, n, device=dev, dtype=dtype, generator=gen)
    flop = 2.0 * n**3
    with matmul_precision(precision):
        one = median(time_calls(lambda: a @ b, 3, dev))  # also the warm-up
        calls = max(1, int(PEAK_TRIAL_SECONDS / max(one, 1e-6)))
        best = 0.0
        for _ in range(PEAK_TRIALS):
            seconds = sum(time_calls(lambda: a @ b, calls, dev))
            best = max(best, flop * calls / seconds / 1e12)
    return best
