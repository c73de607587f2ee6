"""Bytes of activations a DiT keeps for backward, counted on any device (the CPU included).

`saved_activation_bytes` runs one training-mode forward and counts every storage the forward
created that is still alive once the forward is done, while the loss (and so the autograd graph)
is kept: that is exactly what backward will need, however it is kept:
- without checkpointing: the tensors autograd nodes saved (`saved_tensors_hooks` would see them);
- with checkpointing: the inputs each checkpointed block holds for its recompute, and, under the
  selective policy, the op outputs in the policy's cache (not seen by `saved_tensors_hooks`).
Storages are counted once however many views or nodes share them; parameters, the inputs and the
model output are not counted (they exist before the forward or are dropped after it).

The count depends on the model and the precision, not on the device, except for the attention
kernel's own small buffers (e.g. its per-row log-sum-exp), which differ slightly between the CPU
kernel and CUDA's flash or memory-efficient ones. `activation_memory` measures a preset at two
batch sizes and splits the bytes into a per-image part and a batch-independent part (bf16 weight
copies under autocast), to project a larger batch.
"""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from ditkit.bench.train import synthetic_batch
from ditkit.errors import UserError
from ditkit.model.compilation import is_compiled
from ditkit.model.dit import DiT
from ditkit.model.precision import autocast, check_precision

# The rows of the memory table: no checkpointing, then the two checkpoint policies on every block.
POLICIES = ("none", "full", "selective")
# Batch size the table projects to: the global batch of the DiT paper (Sec. 4) on one GPU (issue 7).
PROJECT_BATCH = 256
MIB, GIB = 2**20, 2**30
OTHER = "other"  # label of the storages created outside the transformer blocks


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


@dataclass
class ActivationRow:
    """One row of the memory table: a checkpoint policy in a precision, bytes per image and fixed.

    Attributes:
        policy: "none", "full" or "selective" (the last two on every block).
        precision: "fp32" or "bf16".
        per_image: bytes per image of the whole model.
        per_block_image: bytes per image of one transformer block (the mean over the blocks).
        fixed: bytes that do not grow with the batch (bf16 weight copies kept by autocast).
        projected: per_image x `batch` + fixed, activations only.
        batch: the batch size of the projection.
    """

    policy: str
    precision: str
    per_image: float
    per_block_image: float
    fixed: float
    projected: float
    batch: int


def measure_row(
    model: DiT, precision: str, batches: Sequence[int], project: int, seed: int = 0
) -> ActivationRow:
    """Count at two batch sizes; bytes = fixed + per_image x batch is exact, so two points fit it."""
    b0, b1 = batches
    if b0 == b1:
        raise UserError("give two different batch sizes to separate per-image and fixed bytes")
    s0, s1 = (saved_activation_bytes(model, b, precision, seed) for b in (b0, b1))
    per_image = (s1.total - s0.total) / (b1 - b0)
    per_block = [(p1 - p0) / (b1 - b0) for p0, p1 in zip(s0.per_block, s1.per_block, strict=True)]
    fixed = s0.total - per_image * b0
    c = model.config
    policy = "none" if c.recompute_blocks == 0 else c.recompute_policy
    return ActivationRow(
        policy=policy, precision=precision, per_image=per_image,
        per_block_image=sum(per_block) / len(per_block), fixed=fixed,
        projected=fixed + per_image * project, batch=project,
    )  # fmt: skip


def activation_memory(
    model: str = "DiT-XL/2",
    input_size: int = 32,
    num_classes: int = 1000,
    precisions: Sequence[str] = ("bf16", "fp32"),
    policies: Sequence[str] = POLICIES,
    batches: Sequence[int] = (1, 2),
    project: int = PROJECT_BATCH,
    device: str = "cpu",
    seed: int = 0,
) -> dict[str, Any]:
    """The memory table of a preset: saved activations per image for each policy and precision.

    Every block is checkpointed under "full" and "selective". One model is built and reused (only
    its config's checkpointing fields change between rows).

    Returns:
        {"model", "input_size", "device", "batches", "project", "rows": [ActivationRow as dict]}.
    """
    from ditkit.bench.train import build_model

    for policy in policies:
        if policy not in POLICIES:
            raise UserError(f"unknown policy {policy!r}; choose from {', '.join(POLICIES)}")
    if len(batches) != 2:
        raise UserError(f"give exactly two batch sizes, got {list(batches)}")
    dev = torch.device(device)
    net = build_model(model, input_size, num_classes, dev)
    rows = []
    for precision in precisions:
        for policy in policies:
            ckpt = 0 if policy == "none" else net.config.depth
            kept = "full" if policy == "none" else policy
            net.config = dataclasses.replace(net.config, recompute_blocks=ckpt, recompute_policy=kept)
            rows.append(dataclasses.asdict(measure_row(net, precision, batches, project, seed)))
    return {
        "model": net.config.name or model, "input_size": input_size, "device": str(dev),
        "batches": list(batches), "project": project, "rows": rows,
    }  # fmt: skip


def format_activation_table(result: dict[str, Any]) -> str:
    """The table `ditkit bench memory` prints: MiB per image, and the projection in GiB."""
    batch = result["project"]
    lines = [
        f"{result['model']} ({result['input_size']}x{result['input_size']} latents): activations saved "
        f"for backward, counted on {result['device']} at batches {result['batches'][0]} and "
        f"{result['batches'][1]}",
        f"{'policy':<11}{'precision':<11}{'MiB/image':>11}{'MiB/image/block':>17}{'fixed MiB':>11}"
        f"{f'GiB at batch {batch}':>18}",
    ]
    for r in result["rows"]:
        lines.append(
            f"{r['policy']:<11}{r['precision']:<11}{r['per_image'] / MIB:>11.1f}"
            f"{r['per_block_image'] / MIB:>17.2f}{r['fixed'] / MIB:>11.1f}{r['projected'] / GIB:>18.1f}"
        )
    lines.append(
        f"GiB at batch {batch}: activations only (per image x {batch} + fixed), projected from the "
        "count, not measured on a GPU; weights, gradients, optimizer and EMA state and backward's "
        "temporaries come on top."
    )
    return "\n".join(lines)
