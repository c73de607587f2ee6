"""Count the host synchronisations of the trainer's step on CUDA (the step should make none).

The step is the trainer's `TrainStep` (through `ditkit.bench.trainer_step.BenchStep`: the per-sample
draws copied through pinned memory, the loss under bf16 autocast, fused AdamW, the multi-tensor
EMA) with gradient clipping, followed by the trainer's device-side reduction of the logged values
(`PendingSteps.add_step`). CUDA's sync debug mode warns at every synchronisation (a blocking copy, `.item()`,
a stream or device synchronize); the warnings are counted. Reading the pending values afterwards
is one deliberate synchronisation and shows that the counter works.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import nn

from ditkit.bench.train import synthetic_batch
from ditkit.bench.trainer_step import BenchStep
from ditkit.errors import UserError
from ditkit.training.step import PendingSteps

# Gradient-norm clipping threshold of the counted step (clipping computes a norm on the device).
GRAD_CLIP = 1.0


def trainer_step(model: nn.Module, batch: int, seed: int = 0) -> tuple[Callable[[], None], PendingSteps]:
    """The trainer's step on a synthetic batch: each `one_step()` queues a step; the logged values
    (loss, gradient norm) accumulate in the returned `PendingSteps` until read.

    Args:
        model: a DiT in training mode (on any device); bf16 on CUDA, fp32 elsewhere.
        batch: samples per step.
        seed: seeds the synthetic batch and the draws.
    """
    device = next(model.parameters()).device
    x, y = synthetic_batch(model, batch, device, seed)  # type: ignore[arg-type]
    precision = "bf16" if device.type == "cuda" else "fp32"
    step = BenchStep(model, precision, seed, grad_clip=GRAD_CLIP)
    pending = PendingSteps()

    def one_step() -> None:
        step(x, y)
        assert step.last is not None
        pending.add_step(step.last, stop=False)

    return one_step, pending


def count_host_syncs(model: nn.Module, batch: int, steps: int = 3, seed: int = 0) -> dict[str, float]:
    """Run `steps` trainer steps (bf16) on a CUDA model and count the synchronisations they make.

    Args:
        model: a DiT in training mode on a CUDA device (compiled or not).
        batch: samples per step.
        steps: steps counted, after one uncounted warm-up step (lazy initialisation may synchronise).
        seed: seeds the synthetic batch and the draws.

    Returns:
        {"step": synchronisations per step (should be 0), "read": those of the one read (should be >= 1)}.

    Raises:
        UserError: the model is not on a CUDA device.
    """
    if next(model.parameters()).device.type != "cuda":
        raise UserError("counting host synchronisations needs a CUDA device")
    one_step, pending = trainer_step(model, batch, seed)

    def syncs(caught: list[warnings.WarningMessage]) -> int:
        return sum("synchroniz" in str(w.message) for w in caught)  # sync debug mode's warnings

    one_step()
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(steps):
                one_step()
            in_steps = syncs(caught)
            pending.read(since=0.0)
            in_read = syncs(caught) - in_steps
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return {"step": in_steps / steps, "read": float(in_read)}
