"""How much memory a training run needs, estimated before its model is built.

A run that cannot fit is refused in one line, with the option that would make it fit, instead of
being killed by the kernel (or CUDA) after minutes of setup. The estimate adds:
- the float32 weights, their gradients, the EMA copy and the optimizer state, from the closed-form
  parameter count (`ditkit.model.cost.dit_cost`), each divided over the processes under FSDP; with
  `--freeze`, gradients and optimizer state only for the parameters that train (the weights and the
  EMA cover all of them);
- the activations kept for backward at the micro-batch, counted by `saved_activation_bytes` on a
  two-block copy of the model (one recomputed block and one not when the run recomputes some) at
  batch 1 and 2, and scaled to the run's depth and micro-batch.

`saved_activation_bytes` counts every storage a training forward created that is still alive once
the forward is done, while the loss (and so the autograd graph) is kept: exactly what backward will
need, however it is kept:
- without checkpointing: the tensors autograd nodes saved (`saved_tensors_hooks` would see them);
- with checkpointing: the inputs each checkpointed block holds for its recompute, and, under the
  selective policy, the op outputs in the policy's cache (not seen by `saved_tensors_hooks`).
Storages are counted once however many views or nodes share them; parameters, the inputs and the
model output are not counted. `ditkit bench memory` (`ditkit.bench.activations`) builds its table
from the same count.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from ditkit.errors import UserError
from ditkit.model.compilation import is_compiled
from ditkit.model.cost import dit_cost
from ditkit.model.dit import DiT, DiTConfig
from ditkit.model.precision import autocast, check_precision
from ditkit.training.freeze import frozen_count

GIB = 2**30
OTHER = "other"  # label of the storages created outside the transformer blocks
FLOAT32_BYTES = 4
# float32 copies of the parameters a step holds besides the weights: gradients and the EMA, plus the
# optimizer's state (AdamW: two moments; Muon: one momentum on the matrices, AdamW's two on the rest,
# counted as two so that the estimate stays an upper bound).
GRADIENT_COPIES, EMA_COPIES, OPTIMIZER_COPIES = 1, 1, 2
# Backward's own temporaries, the allocator's slack and the runtime (CUDA context, libraries) on top
# of what is counted: a run whose count exceeds this share of the free memory gets a warning.
WARN_FRACTION = 0.8


def _storage_key(t: Tensor) -> int:
    return t.untyped_storage()._cdata


class _StorageTracker(TorchDispatchMode):
    """Weakly records every storage an ATen op creates while active, with the label current then.

    A storage is new when no tensor argument of the op shares it (views and in-place results
    share their input's storage and are not recorded again).
    """

    def __init__(self) -> None:
        super().__init__()
        self.label = OTHER
        self.records: dict[int, tuple[StorageWeakRef, int, str]] = {}

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        inputs = {_storage_key(t) for t in tree_leaves((args, kwargs)) if isinstance(t, Tensor)}
        out = func(*args, **kwargs)
        for t in tree_leaves(out):
            if isinstance(t, Tensor) and t.device.type != "meta":
                key = _storage_key(t)
                if key not in inputs:
                    storage = t.untyped_storage()
                    self.records[key] = (StorageWeakRef(storage), storage.nbytes(), self.label)
        return out

    def live_bytes(self) -> dict[str, int]:
        """Bytes of the recorded storages still alive, summed per label."""
        gc.collect()
        totals: dict[str, int] = {}
        for ref, nbytes, label in self.records.values():
            if not ref.expired():
                totals[label] = totals.get(label, 0) + nbytes
        return totals


@contextmanager
def _block_labels(model: DiT, tracker: _StorageTracker) -> Iterator[None]:
    """Label storages by the block whose forward created them ("block 3"), else OTHER."""
    handles = []
    for i, block in enumerate(model.blocks):

        def enter(module: Any, args: Any, i: int = i) -> None:
            tracker.label = f"block {i}"

        def leave(module: Any, args: Any, out: Any) -> None:
            tracker.label = OTHER

        handles += [block.register_forward_pre_hook(enter), block.register_forward_hook(leave)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def synthetic_batch(
    model: DiT, batch: int, device: torch.device, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random latents (B, C, H, W) and labels (B,): a step's cost does not depend on the data."""
    g = torch.Generator(device).manual_seed(seed)
    h, w = model.config.size_hw
    x = torch.randn(batch, model.in_channels, h, w, device=device, generator=g)
    y = torch.randint(0, max(model.num_classes, 1), (batch,), device=device, generator=g)
    return x, y


@dataclass
class SavedBytes:
    """Bytes kept for backward after one forward: `total`, and how they split by where they were made.

    Attributes:
        total: all of them.
        per_block: the part created inside each transformer block (its output included), in order.
        other: the part created outside the blocks (embeddings, final layer, conditioning).
    """

    total: int
    per_block: list[int]
    other: int


def saved_activation_bytes(model: DiT, batch: int, precision: str = "fp32", seed: int = 0) -> SavedBytes:
    """Bytes of activations `model` keeps for backward after a training forward of `batch` images.

    The model's own checkpointing settings (`config.recompute_blocks`, `config.recompute_policy`)
    apply; the forward runs in training mode with no labels dropped, on the model's device.

    Args:
        model: an eager (not compiled) DiT; compiled kernels allocate outside the ATen dispatcher,
            where they cannot be counted.
        batch: images in the forward.
        precision: "fp32", "tf32" or "bf16" (autocast, as the training step runs it).
        seed: seed of the random inputs (the count does not depend on their values).

    Returns:
        A `SavedBytes`; `total` is exact for this batch on this device.
    """
    if batch < 1:
        raise UserError(f"batch must be at least 1, got {batch}")
    if is_compiled(model):
        raise UserError("count saved activations on an eager model: compiled kernels are not visible")
    device = next(model.parameters()).device
    check_precision(precision, device)
    x, y = synthetic_batch(model, batch, device, seed)  # (B, C, H, W), (B,)
    g = torch.Generator(device).manual_seed(seed + 1)
    t = torch.randint(0, 1000, (batch,), device=device, generator=g)
    keep = torch.zeros(batch, device=device)
    was_training = model.training
    model.train()
    tracker = _StorageTracker()
    try:
        with torch.enable_grad(), autocast(precision, device), _block_labels(model, tracker), tracker:
            out = model(x, t, y, force_drop_ids=keep)
        loss = out.float().sum()  # keeps the graph alive; the output itself is not an activation
        del out
        live = tracker.live_bytes()
        del loss
    finally:
        model.train(was_training)
    per_block = [live.get(f"block {i}", 0) for i in range(len(model.blocks))]
    return SavedBytes(total=sum(live.values()), per_block=per_block, other=live.get(OTHER, 0))


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one process of a run needs: `state` (weights, gradients, EMA, optimizer) and
    `activations` at the micro-batch (`per_image` x micro-batch + `fixed`)."""

    state: float
    per_image: float
    fixed: float
    micro_batch: int

    @property
    def activations(self) -> float:
        return self.fixed + self.per_image * self.micro_batch

    @property
    def total(self) -> float:
        return self.state + self.activations


def estimate_train_memory(
    config: DiTConfig,
    micro_batch: int,
    precision: str,
    *,
    world_size: int = 1,
    sharded: bool = False,
    freeze: str | None = None,
) -> MemoryEstimate:
    """What one process of a run of `config` needs, counted on the CPU on a two-block copy.

    Args:
        config: the run's DiT (its recompute settings included).
        micro_batch: images per forward on one process.
        precision: the resolved precision ("fp32", "tf32" or "bf16").
        world_size, sharded: the processes, and whether FSDP shards the state over them.
        freeze: the run's --freeze: frozen parameters have no gradient and no optimizer state. The
            activations are counted as if everything trained (an upper bound for such a run).
    """
    params, _ = dit_cost(**config.to_dict())
    trainable = max(params - frozen_count(config, freeze), 0)
    copies = (1 + EMA_COPIES) * params + (GRADIENT_COPIES + OPTIMIZER_COPIES) * trainable
    state = FLOAT32_BYTES * copies / (world_size if sharded else 1)
    depth, recomputed = config.depth, min(config.recompute_blocks, config.depth)
    # Block 0 of the copy is recomputed when some blocks of the run are, block 1 when all are.
    copy = dataclasses.replace(
        config, depth=2, recompute_blocks=(2 if recomputed == depth else int(recomputed > 0))
    )
    counted = "fp32" if precision == "tf32" else precision  # tf32 keeps float32 activations
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. a checkpoint policy's note about the torch version
        torch.manual_seed(0)
        try:
            model = DiT(copy)
        except ValueError as err:  # fields that cannot build a model, named as the trainer names them
            raise UserError(f"cannot build {config.name or 'the model'}: {err}") from err
        s1, s2 = (saved_activation_bytes(model, b, counted) for b in (1, 2))
    del model
    # bytes = fixed + per_image x batch, per block and outside the blocks: two batches fit it exactly
    per_block = [b2 - b1 for b1, b2 in zip(s1.per_block, s2.per_block, strict=True)]
    fixed_block = [2 * b1 - b2 for b1, b2 in zip(s1.per_block, s2.per_block, strict=True)]
    counts = (recomputed, depth - recomputed)  # blocks like the copy's block 0, like its block 1
    per_image = s2.other - s1.other + sum(n * b for n, b in zip(counts, per_block, strict=True))
    fixed = 2 * s1.other - s2.other + sum(n * b for n, b in zip(counts, fixed_block, strict=True))
    return MemoryEstimate(state=state, per_image=per_image, fixed=max(fixed, 0.0), micro_batch=micro_batch)


def available_bytes(device: torch.device) -> int | None:
    """Memory free for this process: the GPU's free memory, or the CPU's available memory (Linux's
    MemAvailable, capped by a cgroup limit); None where it cannot be read."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type != "cpu":
        return None
    found = []
    try:
        for line in open("/proc/meminfo", encoding="ascii"):
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    for folder, limit_file, usage_file, cache_key in (
        ("/sys/fs/cgroup", "memory.max", "memory.current", "inactive_file"),  # cgroup v2
        ("/sys/fs/cgroup/memory", "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"),
    ):
        limit = _read_int(os.path.join(folder, limit_file))
        if limit is None or limit >= 2**60:  # no limit ("max", or v1's huge number)
            continue
        used = _read_int(os.path.join(folder, usage_file)) or 0
        # Page cache the kernel can drop counts as used in the cgroup, not as needed
        found.append(limit - max(0, used - _cgroup_stat(folder, cache_key)))
    return min(found) if found else None


def _read_int(path: str) -> int | None:
    try:
        text = open(path, encoding="ascii").read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _cgroup_stat(folder: str, key: str) -> int:
    """One counter of a cgroup's memory.stat (0 when absent)."""
    try:
        for line in open(os.path.join(folder, "memory.stat"), encoding="ascii"):
            name, _, value = line.partition(" ")
            if name == key and value.strip().isdigit():
                return int(value)
    except OSError:
        pass
    return 0


def _gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def check_train_memory(
    config: DiTConfig,
    micro_batch: int,
    precision: str,
    device: torch.device,
    *,
    world_size: int = 1,
    parallel: str = "ddp",
    available: int | None = None,
    freeze: str | None = None,
) -> str | None:
    """Refuse a run that cannot fit `device`, naming what would make it fit; warn near the limit.

    Args:
        config, micro_batch, precision, world_size: as `estimate_train_memory`.
        device: the run's device; its free memory is read unless `available` is given.
        parallel: "ddp" or "fsdp" (FSDP shards the state over the processes).
        freeze: the run's --freeze (see `estimate_train_memory`).

    Returns:
        A warning when the estimate is close to the free memory, else None.

    Raises:
        UserError: the estimate exceeds the free memory.
    """
    free = available_bytes(device) if available is None else available
    if free is None:
        return None
    sharded = parallel == "fsdp" and world_size > 1
    need = estimate_train_memory(
        config, micro_batch, precision, world_size=world_size, sharded=sharded, freeze=freeze
    )
    what = (
        f"{config.name or 'the model'} at micro-batch {micro_batch} needs about {_gib(need.total)} on "
        f"{device} (weights, gradients, EMA and optimizer state {_gib(need.state)}, activations "
        f"{_gib(need.activations)})"
    )
    if need.total <= WARN_FRACTION * free:
        return None
    if need.total <= free:
        return f"{what}, close to the {_gib(free)} free; a larger step may run out of memory"
    raise UserError(f"{what} but only {_gib(free)} is free; {_remedy(config, need, free, world_size)}")


def _remedy(config: DiTConfig, need: MemoryEstimate, free: int, world_size: int) -> str:
    """The options that would make the run fit, cheapest first."""
    room = WARN_FRACTION * free - need.state - need.fixed
    fits = int(room // need.per_image) if need.per_image > 0 and room > 0 else 0
    if fits >= 1:
        micro = 1 << (min(fits, need.micro_batch).bit_length() - 1)  # a power of two divides most batches
        hint = f"pass --micro-batch {micro} (gradient accumulation keeps the global batch)"
        if config.recompute_blocks < config.depth:
            hint += f" or --recompute-blocks {config.depth} (recompute every block in backward)"
        return hint
    if world_size > 1:
        return "the weights and optimizer state alone do not fit: shard them with --parallel fsdp"
    return (
        "the weights and optimizer state alone do not fit: choose a smaller --model, or shard them over "
        "several GPUs with torchrun and --parallel fsdp"
    )
