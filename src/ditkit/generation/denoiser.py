"""How the pipeline calls its denoiser: the precision it runs in, and the fast path for its own DiT.

Precisions (see `ditkit.model.precision`): "fp32" (strict float32), "tf32" (TF32 matmuls, CUDA only),
"bf16" (bfloat16 autocast, float32 weights), and "fp16" (float16 autocast), which only the older
`dtype=` argument asks for and which has no fast path. "auto" is `default_precision(device)`:
bf16 on CUDA devices that support it, else fp32, so results on the CPU stay exact float32.

The pipeline's own DiT runs through one cached `fast_denoiser` (CUDA graphs on CUDA, reused for
every batch of a shape); stand-ins such as the class walk's label mixer run eagerly under the same
precision (`eager_denoiser`), since a CUDA graph would freeze their per-call state.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from ditkit.choices import PRECISION_MODES
from ditkit.diffusion.gaussian import ModelFn
from ditkit.errors import UserError
from ditkit.model.precision import autocast, check_precision, default_precision, precision_context

AUTOCAST_DTYPES = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}
# The precision each autocast dtype of the older `dtype=` argument stands for.
_DTYPE_PRECISION = {torch.bfloat16: "bf16", torch.float16: "fp16"}


def autocast_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """None / "fp32" -> no autocast; "bf16" or torch.bfloat16 (or fp16) -> that autocast dtype."""
    if dtype is None or dtype in ("fp32", "float32", torch.float32):
        return None
    if isinstance(dtype, torch.dtype) and dtype in AUTOCAST_DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in AUTOCAST_DTYPES:
        return AUTOCAST_DTYPES[dtype]
    raise UserError(f"unsupported dtype {dtype!r}; use fp32, bf16 or fp16")


def resolve_precision(
    precision: str | None, dtype: torch.dtype | str | None, device: torch.device | str
) -> str:
    """The precision to sample in: "fp32", "tf32", "bf16", or "fp16" (only through `dtype`).

    Args:
        precision: "auto" / None (`dtype` if given, else `default_precision(device)`), "fp32", "tf32"
            or "bf16".
        dtype: the older way to ask for autocast: None, "fp32", "bf16", "fp16" or a torch dtype.
        device: where the model runs (tf32 needs CUDA).

    Raises:
        UserError: an unknown choice, `dtype` and `precision` asking for different things, or tf32
            off CUDA.
    """
    if precision is not None and precision not in PRECISION_MODES:
        raise UserError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISION_MODES)}")
    legacy = None
    if dtype is not None:
        autocast = autocast_dtype(dtype)
        legacy = "fp32" if autocast is None else _DTYPE_PRECISION[autocast]
    if precision is None or precision == "auto":
        resolved = legacy or default_precision(device)
    elif legacy is not None and legacy != precision:
        raise UserError(f"dtype {dtype!r} means {legacy} but precision is {precision}; give only precision")
    else:
        resolved = precision
    if resolved != "fp16":
        check_precision(resolved, device)
    return resolved


def _context(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    if precision == "fp16":
        return autocast(precision, device)
    return precision_context(precision, device)


def eager_denoiser(model: ModelFn, precision: str, device: torch.device | str) -> ModelFn:
    """`model` called under `precision` (autocast / matmul flags), its output (B, C', H, W) in float32."""
    dev = torch.device(device)

    def call(x: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
        with _context(precision, dev):
            return model(x, t, y).float()

    return call
