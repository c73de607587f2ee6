"""One code path for 1 or N processes: torchrun's environment, DDP or FSDP, and a few collectives.

Outside torchrun (no WORLD_SIZE in the environment) `rank()` is 0 and `world_size()` is 1, and
every collective here is a no-op, so neither the trainer nor the sampler branches on being
distributed. Backends: NCCL on GPUs, gloo on CPUs (or gloo everywhere, for sampling, which only
needs a barrier); one or many machines, as torchrun arranges.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from ditkit.errors import UserError

T = TypeVar("T")

# Generous, so that a slow checkpoint write on rank 0 does not time out the other ranks.
PROCESS_GROUP_TIMEOUT = datetime.timedelta(minutes=30)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes (1 when not distributed)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """True on rank 0 (and when not distributed)."""
    return rank() == 0


def launched_by_torchrun() -> bool:
    """True when the environment describes several processes (torchrun sets WORLD_SIZE, RANK...)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@dataclass(frozen=True)
class DistContext:
    """Where this process runs. `owns_group`: this code created the process group and destroys it."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool


def pick_device(device: str | torch.device | None = "auto", local_rank: int | None = 0) -> torch.device:
    """The device to run on, the one place that chooses it.

    Args:
        device: "auto" or None (cuda when a GPU is visible, else cpu), "cpu", "cuda", "cuda:N", or a
            torch.device.
        local_rank: a bare "cuda" becomes cuda:`local_rank` (one GPU per torchrun process); None
            leaves it bare (the current CUDA device), as benchmarks report it.

    Raises:
        UserError: a CUDA device is asked for but no GPU is visible.
    """
    if device is None or str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {device} was asked for but no GPU is visible; use --device cpu")
        if dev.index is None and local_rank is not None:
            dev = torch.device("cuda", local_rank)
    return dev


def init_distributed(device: str = "auto", backend: str | None = None) -> DistContext:
    """Join torchrun's process group when launched by torchrun (WORLD_SIZE > 1), else run alone.

    Args:
        device: "auto" (cuda:LOCAL_RANK when a GPU is present, else cpu), "cpu", "cuda" or "cuda:N".
        backend: the process group's backend; default NCCL on GPUs and gloo on CPUs.
    """
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local_rank)
    if not launched_by_torchrun():
        return DistContext(0, 1, 0, dev, owns_group=False)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    owns = not is_distributed()
    if owns:
        backend = backend or ("nccl" if dev.type == "cuda" else "gloo")
        dist.init_process_group(backend, timeout=PROCESS_GROUP_TIMEOUT)
    return DistContext(rank(), world_size(), local_rank, dev, owns_group=owns)


def shutdown(ctx: DistContext) -> None:
    if ctx.owns_group and is_distributed():
        dist.destroy_process_group()


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over processes (returns a new tensor; the input is unchanged)."""
    out = values.detach().clone()
    if is_distributed():
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        out /= world_size()
    return out


def any_process(flag: bool, device: torch.device) -> bool:
    """True if `flag` is True on any process (all processes must call it)."""
    if not is_distributed():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def all_gather_objects(obj: Any) -> list[Any]:
    """One picklable object from every process, in rank order."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def agree(check: Callable[[], T]) -> T:
    """Run `check` on every process and stop them all when any refuses: a UserError raised on one
    process is raised on every one (the lowest rank's message), so that all stop with the same line
    instead of one stopping and the others waiting for it in their first collective.

    All processes must call it; alone it is `check()`.
    """
    try:
        result, refusal = check(), None
    except UserError as err:
        if not is_distributed():
            raise
        result, refusal = None, str(err)
    refusals = [r for r in all_gather_objects(refusal) if r is not None]
    if refusals:
        raise UserError(refusals[0])
    return result  # type: ignore[return-value]


def barrier() -> None:
    """Wait for every process (a no-op when not distributed)."""
    if is_distributed():
        dist.barrier()


def wrap_model(model: nn.Module, parallel: str, ctx: DistContext) -> nn.Module:
    """Apply data parallelism after the model is built: DDP, or FSDP (parameters sharded per block).

    Alone (world size 1) the model is returned as is, for either mode.
    """
    if ctx.world_size == 1:
        return model
    if parallel == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)
    if parallel == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for block in getattr(model, "blocks", []):
            fully_shard(block)
        fully_shard(model)
        return model
    raise UserError(f"unknown parallel mode {parallel!r}; use ddp or fsdp")


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor of an FSDP shard (a collective: every process must call it), else t itself."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def like_layout(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`full` laid out as `like`: this process's shard when `like` is an FSDP DTensor, else `full` moved."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if isinstance(like, DTensor):
        return distribute_tensor(full.to(like.device, like.dtype), like.device_mesh, like.placements)
    return full.to(like.device, like.dtype)


def grad_sync(model: nn.Module, enabled: bool) -> contextlib.AbstractContextManager[Any]:
    """Inside, backward passes all-reduce gradients only if `enabled` (the last micro-batch of a step):
    DDP's `no_sync`, or FSDP2's `set_requires_gradient_sync`; a no-op for a single process."""
    if enabled or not is_distributed():
        return contextlib.nullcontext()
    if isinstance(model, nn.parallel.DistributedDataParallel):
        return model.no_sync()
    return _fsdp_no_sync(model)


@contextlib.contextmanager
def _fsdp_no_sync(model: nn.Module) -> Iterator[None]:
    toggle = getattr(model, "set_requires_gradient_sync", None)
    if toggle is None:
        yield
        return
    toggle(False)
    try:
        yield
    finally:
        toggle(True)
