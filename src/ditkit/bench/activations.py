"""Bytes of activations a DiT keeps for backward, counted on any device (the CPU included).

`saved_activation_bytes` (in `ditkit.training.memory`, whose check refuses a run that cannot fit
before its model is built) runs one training-mode forward and counts every storage the forward
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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ditkit.errors import UserError
from ditkit.model.dit import DiT
from ditkit.training.memory import SavedBytes, saved_activation_bytes

__all__ = [
    "SavedBytes",
    "activation_memory",
    "format_activation_table",
    "measure_row",
    "saved_activation_bytes",
]

# The rows of the memory table: no checkpointing, then the two checkpoint policies on every block.
POLICIES = ("none", "full", "selective")
# Batch size the table projects to: the global batch of the DiT paper (Sec. 4) on one GPU (issue 7).
PROJECT_BATCH = 256
MIB, GIB = 2**20, 2**30


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
