"""CPU speed: keep freed memory in the process instead of returning it to the kernel at every op.

glibc's malloc serves each block over its mmap threshold (at most 32 MiB) with a fresh `mmap` and
unmaps it when freed. An activation of a training step or a sampling batch is such a block, so in
eager PyTorch on the CPU nearly every op maps new memory, the kernel zero-fills it one 4 KiB page
fault at a time, and the op unmaps it again. Turning glibc's mmap path off (`M_MMAP_MAX` 0) and
raising the trim threshold keeps freed blocks on the heap, where the next op reuses them. On the
2-core AMD EPYC of the README, one thread, the demo's recipe: sampling its 1,000 images took 127-140
CPU s with glibc's defaults and 90-93 s kept, a training step 0.205-0.214 and 0.192-0.198 s, and a
one-core `make demo` went from 23.4 to 0.55 million page faults (bench/RESULTS.md).
PyTorch's CPU tuning guide reaches the same end by preloading jemalloc or tcmalloc; this needs no
extra library. The price: the process keeps its peak heap (up to `TRIM_THRESHOLD`) until it ends.

`ditkit` applies it at start-up (`ditkit.cli.main`); set DITKIT_CPU_MALLOC=system to keep glibc's
behaviour. Python code can call `configure_cpu_malloc()` itself. Elsewhere than glibc Linux it does
nothing and says so.
"""

from __future__ import annotations

import ctypes
import os
import platform

from ditkit.choices import CPU_MALLOC_MODES
from ditkit.errors import UserError

# The environment variable that picks a mode of CPU_MALLOC_MODES.
CPU_MALLOC_ENV = "DITKIT_CPU_MALLOC"
# mallopt parameters, from glibc's <malloc.h>.
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4
# Freed memory at the top of the heap up to this size stays with the process (mallopt takes an int).
TRIM_THRESHOLD = 1 << 30
# The heap grows by at least this much at a time, so a growing run asks the kernel rarely.
TOP_PAD = 64 << 20
# What `configure_cpu_malloc` reports where it cannot act (not glibc, or mallopt refused).
UNAVAILABLE = "unavailable"
# What the last `configure_cpu_malloc` call left in force ("system" until one runs).
_mode = "system"


def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def configure_cpu_malloc(mode: str | None = None) -> str:
    """Set how glibc's malloc treats freed memory for the rest of this process; returns what holds.

    Args:
        mode: "keep" (freed blocks stay for reuse) or "system" (glibc's defaults, untouched). None
            reads DITKIT_CPU_MALLOC, "keep" when unset. "keep" lasts until the process ends.

    Returns:
        "keep", "system", or "unavailable" where the C library is not glibc or refused a setting.
    """
    if mode is None:
        mode = os.environ.get(CPU_MALLOC_ENV, "").strip() or CPU_MALLOC_MODES[0]
    if mode not in CPU_MALLOC_MODES:
        raise UserError(
            f"{CPU_MALLOC_ENV}={mode!r} is not a mode; set it to one of {', '.join(CPU_MALLOC_MODES)}"
        )
    global _mode
    if mode == "keep" and _mode != "keep":
        libc = _glibc()
        settings = ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_TOP_PAD, TOP_PAD))
        ok = libc is not None and all(
            libc.mallopt(ctypes.c_int(param), ctypes.c_int(value)) == 1 for param, value in settings
        )
        _mode = mode if ok else UNAVAILABLE
    # "system" changes nothing: glibc's defaults hold unless "keep" already replaced them, for good.
    return _mode


def cpu_malloc_mode() -> str:
    """What holds in this process: "keep", "system" or "unavailable" (see `configure_cpu_malloc`)."""
    return _mode
