"""Which kernel computes attention: PyTorch's scaled_dot_product_attention picks one unless pinned."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from ditkit.choices import SDPA_BACKENDS
from ditkit.errors import UserError

# The ATen ops scaled_dot_product_attention dispatches to, by kernel name; without one, it ran "math".
_FUSED_SDPA_OPS = {
    "_scaled_dot_product_flash_attention": "flash",
    "_scaled_dot_product_flash_attention_for_cpu": "flash (CPU)",
    "_scaled_dot_product_efficient_attention": "efficient",
    "_scaled_dot_product_cudnn_attention": "cudnn",
    "_scaled_dot_product_fused_attention_overrideable": "fused (device-specific)",
}


def sdpa_backend(name: str = "auto") -> contextlib.AbstractContextManager:
    """Restrict scaled_dot_product_attention to one kernel ("flash", "efficient", "cudnn", "math").

    "auto" lets PyTorch pick (flash or memory-efficient on CUDA, the fused CPU kernel on the CPU);
    "math" is the unfused reference (softmax(q k^T / sqrt(d)) v with the full score matrix).
    """
    if name not in SDPA_BACKENDS:
        raise UserError(f"unknown attention backend {name!r}; choose one of {', '.join(SDPA_BACKENDS)}")
    if name == "auto":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = {
        "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "cudnn": SDPBackend.CUDNN_ATTENTION,
        "math": SDPBackend.MATH,
    }[name]
    return sdpa_kernel(backend)


def sdpa_kernels_used(fn: Callable[[], Any]) -> list[str]:
    """The attention kernels scaled_dot_product_attention ran while `fn()` ran (eagerly), in order of
    first use: "flash", "efficient", "cudnn", "flash (CPU)" or "math" (the unfused composite)."""
    import torch
    from torch.overrides import TorchFunctionMode
    from torch.utils._python_dispatch import TorchDispatchMode

    seen: dict[str, None] = {}
    calls = [0, 0]  # [sdpa calls, fused kernels run]

    class Calls(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            if func is torch.nn.functional.scaled_dot_product_attention:
                fused = calls[1]
                out = func(*args, **(kwargs or {}))
                calls[0] += 1
                if calls[1] == fused:
                    seen.setdefault("math")
                return out
            return func(*args, **(kwargs or {}))

    class Kernels(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            name = _FUSED_SDPA_OPS.get(func.overloadpacket.__name__)
            if name is not None:
                calls[1] += 1
                seen.setdefault(name)
            return func(*args, **(kwargs or {}))

    with Kernels(), Calls():
        fn()
    return list(seen)
