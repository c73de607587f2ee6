"""The precision a DiT runs in: the one place that chooses it and enters it.

- "fp32": strict IEEE float32 everywhere.
- "tf32": float32 tensors, TensorFloat-32 matmuls (CUDA only).
- "bf16": autocast to bfloat16 for the forward and the loss; weights, gradients, optimizer state
  and EMA stay float32 (master weights). The backward follows the dtypes the forward chose.

Trainer, benchmarks and samplers all enter a precision through `autocast` / `precision_context`,
so what a benchmark labels "bf16" is what the trainer runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from ditkit.choices import PRECISIONS
from ditkit.errors import UserError

# Autocast dtypes by precision name; "fp16" is reachable only through the samplers' older `dtype=`.
# /proc/cpuinfo flags of the instructions that run bfloat16 matmuls natively (Intel AMX, AVX512-BF16).
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, device: torch.device | str) -> None:
    """Raise UserError unless `precision` is known and runs on `device`."""
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "tf32" and torch.device(device).type != "cuda":
        raise UserError("precision tf32 needs a CUDA device; use fp32 or bf16 on the CPU")


def cpu_bf16_instructions() -> list[str]:
    """The bfloat16 matmul instruction sets this CPU reports ("amx_bf16", "avx512_bf16"); [] if none
    (or not Linux). Without them oneDNN emulates bf16 matmuls with float32 arithmetic."""
    from pathlib import Path

    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return []
    flags: set[str] = set()
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    return [name for name in CPU_BF16_FLAGS if name in flags]


def default_precision(device: torch.device | str) -> str:
    """bf16 on CUDA devices that support it, else fp32.

    On the CPU results stay exactly float32 by default, and bf16 autocast is opt-in: on a CPU without
    bf16 instructions (`cpu_bf16_instructions`) a bf16 matmul was measured about 60x slower than a
    float32 one, and on a CPU with AMX or AVX512-BF16 the trainer's bf16 step has not been measured
    (see bench/RESULTS.md), so bf16 is not chosen for the user.
    """
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


@contextlib.contextmanager
def matmul_precision(precision: str) -> Iterator[None]:
    """Set float32 matmuls to strict IEEE ("fp32") or TF32 ("tf32") inside; restore the flags on exit.

    The flags are process-wide, so enter this around the whole training step (backward included).
    "bf16" leaves them alone: under autocast the matmuls are bfloat16 anyway. Uses
    `torch.set_float32_matmul_precision` and the cuDNN flag, which torch >= 2.9 keeps consistent
    with its newer `fp32_precision` settings (setting those directly breaks reads of the old ones).
    """
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "bf16":
        yield
        return
    saved = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    on = precision == "tf32"
    try:
        torch.set_float32_matmul_precision("high" if on else "highest")
        torch.backends.cudnn.allow_tf32 = on
        yield
    finally:
        torch.set_float32_matmul_precision(saved[0])
        torch.backends.cudnn.allow_tf32 = saved[1]


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """Autocast for `precision` ("bf16", or "fp16"), a no-op otherwise: enter it around the forward
    and the loss, never around the optimizer.

    A no-op is `nullcontext`, not `torch.autocast(enabled=False)`: an fp32 call inside a caller's
    autocast region leaves the caller's choice alone instead of silently switching it off.
    Autocast's cache of low-precision weight copies is off: a DiT uses each weight once per
    forward, so it would save nothing, and one autocast state everywhere lets compiled graphs be
    reused and CUDA graphs be captured.
    """
    dtype = _AUTOCAST_DTYPES.get(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype, cache_enabled=False)


@contextlib.contextmanager
def precision_context(precision: str, device: torch.device | str) -> Iterator[None]:
    """Both `matmul_precision` and `autocast`: what an inference call needs.

    Example:
        >>> with precision_context("bf16", "cuda"), torch.no_grad():
        ...     out = model(x, t, y)  # (B, 2C, H, W) in bfloat16
    """
    check_precision(precision, device)
    with matmul_precision(precision), autocast(precision, device):
        yield
