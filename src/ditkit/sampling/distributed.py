"""The few torch.distributed calls sampling needs: rank, world size and a barrier.

One code path serves 1 or N processes: without a process group, rank() is 0 and world_size() 1.
Under torchrun, `init_from_env()` joins the group (gloo: sampling only needs a barrier, and gloo works
on CPU-only machines as well as beside CUDA) and picks this process's GPU.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    """Number of processes (1 when not distributed)."""
    return dist.get_world_size() if is_initialized() else 1


def barrier() -> None:
    """Wait for every process (a no-op when not distributed)."""
    if is_initialized():
        dist.barrier()


def launched_by_torchrun() -> bool:
    """True when the environment describes several processes (torchrun sets WORLD_SIZE, RANK...)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env() -> torch.device | None:
    """Join the process group torchrun describes; return this process's device (None if not launched so).

    The device is cuda:LOCAL_RANK when CUDA is present, else the CPU.
    """
    if not launched_by_torchrun():
        return None
    if not is_initialized():
        dist.init_process_group(backend="gloo")
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def shutdown() -> None:
    """Leave the process group, if any."""
    if is_initialized():
        dist.destroy_process_group()
