"""One forward/backward pass of the diffusion loss, and the bookkeeping of the logged numbers."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ditkit.diffusion.gaussian import GaussianDiffusion
from ditkit.training import distributed as D
from ditkit.training.randomness import StepDraws

# The loss terms that are logged (per-sample means); "vb" exists only for models that learn sigma.
LOGGED_TERMS = ("loss", "mse", "vb")


def forward_backward(
    model: nn.Module,
    diffusion: GaussianDiffusion,
    x: Tensor,
    labels: Tensor | None,
    draws: StepDraws,
    scale: float,
    bf16: bool = False,
) -> dict[str, Tensor]:
    """Backpropagate `scale * sum of the per-sample losses` of one micro-batch.

    With scale = 1 / (samples per process per step), gradients accumulated over the micro-batches
    are the mean over the process's samples; DDP's average over processes then gives the mean over
    the global batch, whatever the number of processes.

    Args:
        model: the (possibly wrapped) DiT, called as model(x_t, t, y, force_drop_ids=...).
        diffusion: the training process.
        x: (B, C, H, W) clean model inputs.
        labels: (B,) int64 labels, or None for an unconditional model.
        draws: the micro-batch's timesteps, noise and label-dropout flags.
        scale: factor on the summed loss.
        bf16: run the forward pass under bfloat16 autocast (the backward follows the forward's dtypes).

    Returns:
        Detached per-sample terms {"loss", "mse"(, "vb")}, each (B,).
    """

    def denoiser(x_t: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
        if y is None:
            return model(x_t, t)
        return model(x_t, t, y, force_drop_ids=draws.drop)

    with torch.autocast(x.device.type, torch.bfloat16, enabled=bf16):
        terms = diffusion.training_losses(denoiser, x, draws.t, draws.noise, labels)
    (terms["loss"].float().sum() * scale).backward()
    return {k: v.detach().float() for k, v in terms.items() if k in LOGGED_TERMS}


class StepStats:
    """Sums of the logged terms over the micro-batches of one step, on one process (device tensors)."""

    def __init__(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.count = 0

    def add(self, terms: dict[str, Tensor]) -> None:
        for k, v in terms.items():
            self.sums[k] = self.sums[k] + v.sum() if k in self.sums else v.sum()
        self.count += int(next(iter(terms.values())).shape[0])

    def means(self) -> tuple[list[str], Tensor]:
        """Names and (n,) tensor of the per-sample means on this process."""
        names = [k for k in LOGGED_TERMS if k in self.sums]
        return names, torch.stack([self.sums[k] for k in names]) / self.count


def reduce_step(stats: StepStats, stop: bool) -> tuple[dict[str, float], bool, bool]:
    """One all-reduce per step: the global mean of each logged term, and whether any process saw a
    non-finite loss or asked to stop.

    Returns:
        (values, nonfinite, stop); values["loss"] is a non-finite local loss when `nonfinite`.
    """
    names, means = stats.means()
    flags = torch.stack(
        [(~torch.isfinite(means)).any().float(), torch.tensor(float(stop), device=means.device)]
    )
    finite = torch.nan_to_num(means, nan=0.0, posinf=0.0, neginf=0.0)
    reduced = D.all_reduce_mean(torch.cat([finite, flags])).cpu()
    nonfinite = bool(reduced[-2] > 0)
    values = {k: float(v) for k, v in zip(names, reduced[: len(names)], strict=True)}
    if nonfinite:
        local = float(means[0])
        values["loss"] = local if not math.isfinite(local) else float("nan")
    return values, nonfinite, bool(reduced[-1] > 0)


class LogWindow:
    """Global per-step values (floats) averaged over a logging window, and the time the steps took."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self.count = 0
        self.seconds = 0.0

    def add(self, values: dict[str, float], seconds: float) -> None:
        for k, v in values.items():
            self.totals[k] = self.totals.get(k, 0.0) + v
        self.count += 1
        self.seconds += seconds

    def summary(self, global_batch: int) -> dict[str, Any]:
        """Mean values, and steps and samples per second (time in previews and checkpoints excluded)."""
        if not self.count:
            return {}
        out: dict[str, Any] = {k: v / self.count for k, v in self.totals.items()}
        rate = self.count / self.seconds if self.seconds > 0 else None
        out["steps_per_sec"] = rate
        out["samples_per_sec"] = None if rate is None else rate * global_batch
        return out
