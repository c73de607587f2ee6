"""Count the host synchronisations of the trainer's step on CUDA (the step should make none).

The step is assembled from the trainer's own pieces: per-sample draws copied through pinned memory,
`forward_backward` under bf16 autocast, gradient clipping, fused AdamW, the multi-tensor EMA, and the
device-side reduction of the logged values (`reduce_step`, `PendingSteps`). CUDA's sync debug mode
warns at every synchronisation (a blocking copy, `.item()`, a stream or device synchronize); the
warnings are counted. Reading the pending values afterwards is one deliberate synchronisation and
shows that the counter works.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import nn

from ditkit.diffusion.gaussian import GaussianDiffusion
from ditkit.diffusion.schedule import make_schedule
from ditkit.errors import UserError
from ditkit.model.dit import DiTConfig
from ditkit.training.ema import EMA
from ditkit.training.randomness import draw_step
from ditkit.training.setup import fused_supported
from ditkit.training.step import PendingSteps, StepStats, forward_backward, reduce_step

# Gradient-norm clipping threshold of the counted step (clipping computes a norm on the device).
GRAD_CLIP = 1.0


def trainer_step(model: nn.Module, batch: int, seed: int = 0) -> tuple[Callable[[int], None], PendingSteps]:
    """The trainer's step on a synthetic batch: `one_step(step)` queues step `step`; the logged
    values accumulate in the returned `PendingSteps` until read.

    Args:
        model: a DiT in training mode (on any device).
        batch: samples per step.
        seed: seeds the synthetic batch and the draws.
    """
    device = next(model.parameters()).device
    config: DiTConfig = model.config  # type: ignore[assignment]
    h, w = config.size_hw
    g = torch.Generator("cpu").manual_seed(seed)
    x = torch.randn(batch, config.in_channels, h, w, generator=g).to(device)
    y = torch.randint(0, max(config.num_classes, 1), (batch,), generator=g).to(device)
    labels = y if getattr(model, "null_class", None) is not None else None
    diffusion = GaussianDiffusion(make_schedule())
    params = list(model.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-4, fused=fused_supported(device, params) or None)
    ema = EMA(model, 0.9999)
    pending = PendingSteps()
    bf16 = device.type == "cuda"

    def one_step(step: int) -> None:
        draws = draw_step(seed, step, range(batch), x.shape[1:], diffusion.num_timesteps, 0.1).to(device)
        stats = StepStats()
        stats.add(forward_backward(model, diffusion, x, labels, draws, 1.0 / batch, bf16=bf16))
        norm = torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.update(model)
        values, flags = reduce_step(stats, stop=False)
        pending.add({**values, "grad_norm": norm}, flags)

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

    one_step(0)
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for step in range(1, steps + 1):
                one_step(step)
            in_steps = syncs(caught)
            pending.read(since=0.0)
            in_read = syncs(caught) - in_steps
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return {"step": in_steps / steps, "read": float(in_read)}
