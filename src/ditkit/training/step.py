"""One forward/backward pass of the training loss (diffusion or flow matching), and the bookkeeping of
the logged numbers."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ditkit import distributed as D
from ditkit.diffusion.gaussian import GaussianDiffusion, ModelFn
from ditkit.training.randomness import StepDraws
from ditkit.transport.transport import Transport

# The loss terms that are logged (per-sample means); "vb" exists only for diffusion models that learn
# sigma; flow matching logs "loss" alone.
LOGGED_TERMS = ("loss", "mse", "vb")
# What a run trains: DiT's Gaussian diffusion or SiT's flow matching.
Objective = GaussianDiffusion | Transport


def objective_losses(
    objective: Objective, denoiser: ModelFn, x: Tensor, labels: Tensor | None, draws: StepDraws
) -> dict[str, Tensor]:
    """Per-sample loss terms (B,) of either objective for the draws' times and noise.

    The diffusion chain is indexed by draws.t (int64); flow matching takes draws.t as times in [0, 1].
    """
    if isinstance(objective, Transport):
        return objective.training_losses(denoiser, x, {"y": labels}, t=draws.t, noise=draws.noise)
    return objective.training_losses(denoiser, x, draws.t, draws.noise, labels)


def forward_backward(
    model: nn.Module,
    objective: Objective,
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
        objective: the training objective (a GaussianDiffusion or a flow-matching Transport).
        x: (B, C, H, W) clean model inputs.
        labels: (B,) int64 labels, or None for an unconditional model.
        draws: the micro-batch's timesteps, noise and label-dropout flags.
        scale: factor on the summed loss.
        bf16: run the forward pass under bfloat16 autocast (the backward follows the forward's dtypes).

    Returns:
        Detached per-sample terms {"loss"(, "mse", "vb")}, each (B,).
    """

    def denoiser(x_t: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
        if y is None:
            return model(x_t, t)
        return model(x_t, t, y, force_drop_ids=draws.drop)

    with torch.autocast(x.device.type, torch.bfloat16, enabled=bf16):
        terms = objective_losses(objective, denoiser, x, labels, draws)
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


def reduce_step(stats: StepStats, stop: bool, decay: bool = False) -> tuple[dict[str, Tensor], Tensor]:
    """One all-reduce per step, left on the device (the host reads it later, see `PendingSteps`).

    Args:
        stats: this process's sums of the step.
        stop: this process asks to stop (a signal or the time budget).
        decay: this process's clock says the learning-rate decay is due (see `training.schedule`).

    Returns:
        ({term: 0-d global mean}, (3,) flags [any process saw a non-finite loss, any asked to stop,
        any found the decay due]). Non-finite local means enter the mean as 0; the flag says so.
    """
    names, means = stats.means()
    nonfinite = (~torch.isfinite(means)).any().float()
    asked = torch.full((), float(stop), device=means.device)  # a fill, not a host-to-device copy
    due = torch.full((), float(decay), device=means.device)
    finite = torch.nan_to_num(means, nan=0.0, posinf=0.0, neginf=0.0)
    reduced = D.all_reduce_mean(torch.cat([finite, torch.stack([nonfinite, asked, due])]))
    return dict(zip(names, reduced[: len(names)], strict=True)), reduced[len(names) :]


@dataclass
class Readout:
    """What the host learns when it reads the pending steps.

    Attributes:
        values: per-step global values averaged over the steps read.
        steps: how many steps were read.
        seconds: wall time those steps took (up to the read, which waits for the device).
        nonfinite: some step's loss was not finite on some process.
        stop: some process asked to stop.
        decay: some process found the learning-rate decay due.
    """

    values: dict[str, float]
    steps: int
    seconds: float
    nonfinite: bool
    stop: bool
    decay: bool = False


class PendingSteps:
    """Per-step values summed on the device until the host reads them: no synchronisation per step.

    Reading (`read`) is the only device-to-host copy, one per call, for all the steps since the last.
    """

    def __init__(self) -> None:
        self._clear()

    def _clear(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.flags: Tensor | None = None
        self.steps = 0

    def add(self, values: dict[str, Tensor], flags: Tensor) -> None:
        for k, v in values.items():
            v = v.detach().float()
            self.sums[k] = self.sums[k] + v if k in self.sums else v
        self.flags = flags if self.flags is None else self.flags + flags
        self.steps += 1

    def read(self, since: float) -> Readout | None:
        """The steps added since the last read (None if none), read in one copy; then starts over.

        Args:
            since: `time.perf_counter()` when the first of these steps started.
        """
        if self.flags is None:
            return None
        names = list(self.sums)
        packed = torch.cat([torch.stack([self.sums[k] for k in names]), self.flags]).cpu()
        values = {k: float(v) / self.steps for k, v in zip(names, packed[: len(names)], strict=True)}
        seconds = time.perf_counter() - since
        nonfinite, stop, decay = (bool(f > 0) for f in packed[len(names) :])
        out = Readout(values, self.steps, seconds, nonfinite, stop, decay)
        self._clear()
        return out


class LogWindow:
    """Global per-step values (floats) averaged over a logging window, and the time the steps took."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self.count = 0
        self.seconds = 0.0

    def add(self, readout: Readout) -> None:
        for k, v in readout.values.items():
            self.totals[k] = self.totals.get(k, 0.0) + v * readout.steps
        self.count += readout.steps
        self.seconds += readout.seconds

    def summary(self, global_batch: int) -> dict[str, Any]:
        """Mean values, and steps and samples per second (time in previews and checkpoints excluded)."""
        if not self.count:
            return {}
        out: dict[str, Any] = {k: v / self.count for k, v in self.totals.items()}
        rate = self.count / self.seconds if self.seconds > 0 else None
        out["steps_per_sec"] = rate
        out["samples_per_sec"] = None if rate is None else rate * global_batch
        return out
