"""One optimizer step of the training recipe (`TrainStep`, for any `Objective`), and the bookkeeping of
the logged numbers.

`TrainStep` is the one function both the trainer and `ditkit.bench` run for a step, so what a
benchmark times is what a training run computes.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ditkit import distributed as D
from ditkit.model.precision import autocast, check_precision, matmul_precision
from ditkit.objectives import Objective
from ditkit.objectives.base import TrainingBatch
from ditkit.training.ema import EMA
from ditkit.training.randomness import StepDraws, draw_step

# The loss terms that are logged (per-sample means); "vb" exists only for diffusion models that learn
# sigma; flow matching logs "loss" alone, and "mse" and "cos" with --cosine-loss; "repa" is REPA's
# alignment term (`ditkit.training.repa`), which "loss" includes times --repa-coeff.
LOGGED_TERMS = ("loss", "mse", "vb", "cos", "repa")


def loss_terms(
    model: nn.Module, objective: Objective, x: Tensor, labels: Tensor | None, draws: StepDraws
) -> dict[str, Tensor]:
    """Per-sample loss terms {"loss"(, "mse", "vb")}, each (B,), of `model` on given draws (with grad).

    The model is called as model(x_t, t, y, force_drop_ids=draws.drop) (labels dropped as drawn; an
    objective may pass another mask as `drop=`), or model(x_t, t) when `labels` is None.
    """

    def denoiser(x_t: Tensor, t: Tensor, y: Tensor | None, drop: Tensor | None = None) -> Tensor:
        if y is None:
            return model(x_t, t)
        return model(x_t, t, y, force_drop_ids=draws.drop if drop is None else drop)

    drop = draws.drop if labels is not None else None
    return objective.losses(TrainingBatch(denoiser, x, labels, draws.t, draws.noise, drop))


def forward_backward(
    model: nn.Module,
    objective: Objective,
    x: Tensor,
    labels: Tensor | None,
    draws: StepDraws,
    scale: float,
    precision: str = "fp32",
    aux: Callable[[Callable[[], dict[str, Tensor]]], dict[str, Tensor]] | None = None,
) -> dict[str, Tensor]:
    """Backpropagate `scale * sum of the per-sample losses` of one micro-batch.

    With scale = 1 / (samples per process per step), gradients accumulated over the micro-batches
    are the mean over the process's samples; DDP's average over processes then gives the mean over
    the global batch, whatever the number of processes.

    Args:
        model: the (possibly wrapped) DiT, called as model(x_t, t, y, force_drop_ids=...).
        objective: the training objective (`ditkit.objectives`).
        x: (B, C, H, W) clean model inputs.
        labels: (B,) int64 labels, or None for an unconditional model.
        draws: the micro-batch's timesteps, noise and label-dropout flags.
        scale: factor on the summed loss.
        precision: "bf16" runs the forward and the loss under bfloat16 autocast (the backward follows
            the forward's dtypes); "fp32" and "tf32" add no autocast (set their matmul flags around
            the call with `matmul_precision`), nor do they switch off one the caller entered.
        aux: adds auxiliary terms around the objective's loss: called with a function that computes the
            objective's terms, returns them with its own added (REPA's `Repa.losses`); None: none.

    Returns:
        Detached per-sample terms {"loss", "mse"(, "vb")}, each (B,).
    """

    with autocast(precision, x.device):
        if aux is None:
            terms = loss_terms(model, objective, x, labels, draws)
        else:
            terms = aux(lambda: loss_terms(model, objective, x, labels, draws))
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


@dataclass
class MicroBatch:
    """The samples one forward pass of a step sees on this process.

    Attributes:
        positions: their positions in the step's global batch (they key the per-sample draws).
        x: (B, C, H, W) model inputs, or images when the step has an encoder.
        y: (B,) int64 labels (ignored by an unconditional model).
    """

    positions: Sequence[int]
    x: Tensor
    y: Tensor


@dataclass
class StepOutput:
    """What one optimizer step leaves on the device (nothing is read by the host).

    Attributes:
        stats: sums of the logged per-sample terms over this process's samples.
        grad_norm: 0-d global gradient norm before clipping, or None without clipping.
    """

    stats: StepStats
    grad_norm: Tensor | None


class TrainStep:
    """One optimizer step of DiT's recipe (Peebles & Xie 2023, sec. 5; the trainer's and the bench's).

    For every micro-batch: each sample's timestep (or flow time), noise and label dropout from its
    keyed generator (`draw_step`), the objective's loss forward and backward under the precision's
    autocast (`forward_backward`); then the gradient clip (if asked), the optimizer step and the
    EMA update. Gradients are all-reduced on the last micro-batch only (`grad_sync`).

    Args:
        model: the model the forward runs (DDP/FSDP-wrapped or compiled as the run chose).
        objective: the training objective; the draws take their times from its `training_times()`.
        optimizer: steps `model`'s parameters.
        ema: averages `raw`'s parameters.
        seed: the run's seed (keys the draws).
        class_dropout: probability of dropping a label to the null class.
        precision: "fp32", "tf32" or "bf16" (see `ditkit.model.precision`).
        grad_clip: clip the global gradient norm to this (None: no clipping, as DiT).
        raw: the unwrapped model (default `model`): its `null_class` says whether labels are used.
        encoder: a first stage that encodes image micro-batches to latents on the fly (posterior
            sample with the per-sample posterior noise), or None when inputs are model inputs.
        sample_shape: (C, H, W) of one model input; needed with `encoder` (default: the input's).
        repa: REPA's alignment term (`ditkit.training.repa.Repa`): its encoder sees each micro-batch's
            images, its projector is stepped with the model (and clipped with it), or None.
    """

    def __init__(
        self,
        model: nn.Module,
        objective: Objective,
        optimizer: torch.optim.Optimizer,
        ema: EMA,
        *,
        seed: int,
        class_dropout: float,
        precision: str,
        grad_clip: float | None = None,
        raw: nn.Module | None = None,
        encoder: Any = None,
        sample_shape: Sequence[int] | None = None,
        repa: Any = None,
    ) -> None:
        self.model, self.raw = model, model if raw is None else raw
        self.device = next(self.raw.parameters()).device
        check_precision(precision, self.device)
        if encoder is not None and sample_shape is None:
            raise ValueError("a step that encodes its inputs needs the latents' sample_shape")
        self.objective, self.optimizer, self.ema = objective, optimizer, ema
        self.times = objective.training_times()
        self.seed, self.class_dropout, self.precision = seed, class_dropout, precision
        self.grad_clip, self.encoder = grad_clip, encoder
        self.sample_shape = None if sample_shape is None else tuple(sample_shape)
        self.conditional = getattr(self.raw, "null_class", None) is not None
        self.repa = repa

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        """The step's optimizers: the model's, and REPA's projector's when there is one."""
        return [self.optimizer] if self.repa is None else [self.optimizer, self.repa.optimizer]

    def __call__(self, step: int, micro_batches: Iterable[MicroBatch], samples: int) -> StepOutput:
        """Run optimizer step `step` (0-based) over `micro_batches`, which hold `samples` samples in all.

        The gradients are the mean over this process's `samples` (and, through DDP, over the
        global batch); the last micro-batch is the one that completes `samples`.
        """
        stats, done = StepStats(), 0
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        with matmul_precision(self.precision):
            for micro in micro_batches:
                done += len(micro.positions)
                with D.grad_sync(self.model, done >= samples):
                    stats.add(self._forward_backward(step, micro, 1.0 / samples))
            params = list(self.model.parameters())
            if self.repa is not None:
                self.repa.sync_gradients()
                params += self.repa.parameters()  # one global norm, as REPA clips the SiT with its projectors
            grad_norm = None
            if self.grad_clip is not None:
                grad_norm = D.full_tensor(torch.nn.utils.clip_grad_norm_(params, self.grad_clip))
            for optimizer in self.optimizers:
                optimizer.step()
        self.ema.update(self.raw)
        return StepOutput(stats, grad_norm)

    def _forward_backward(self, step: int, micro: MicroBatch, scale: float) -> dict[str, Tensor]:
        shape = self.sample_shape or tuple(micro.x.shape[1:])
        draws = draw_step(
            self.seed,
            step,
            micro.positions,
            shape,
            self.times,
            self.class_dropout,
            posterior=self.encoder is not None,
        ).to(self.device)
        x = micro.x.to(self.device, non_blocking=True)
        labels = micro.y.to(self.device, non_blocking=True) if self.conditional else None
        aux = None
        if self.repa is not None:  # its encoder sees the images, before a first stage encodes them
            with autocast(self.precision, self.device):
                targets = self.repa.targets(x)
            aux = functools.partial(self.repa.losses, targets=targets)
        if self.encoder is not None:
            with torch.no_grad():
                mean, std = self.encoder.encode(x)
                x = mean + std * draws.posterior_noise
        return forward_backward(self.model, self.objective, x, labels, draws, scale, self.precision, aux)


def reduce_step(stats: StepStats, stop: bool, decay: bool = False) -> tuple[dict[str, Tensor], Tensor]:
    """One all-reduce per step, left on the device (the host reads it later, see `PendingSteps`).

    Args:
        stats: this process's sums of the step.
        stop: this process asks to stop (a signal or the time budget).
        decay: this process's clock says the learning-rate decay is due (see `training.lr_schedule`).

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

    def add_step(self, out: StepOutput, stop: bool, decay: bool = False) -> None:
        """Reduce a step's logged values (and gradient norm) over processes; keep them until a read.

        Args:
            out: what `TrainStep` returned.
            stop: this process asks to stop (a signal, the time budget).
            decay: this process's clock says the learning-rate decay is due.
        """
        values, flags = reduce_step(out.stats, stop, decay)
        if out.grad_norm is not None:
            values["grad_norm"] = out.grad_norm
        self.add(values, flags)

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
