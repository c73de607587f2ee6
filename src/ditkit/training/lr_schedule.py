"""The learning-rate schedule: DiT's constant rate, or warmup-stable-decay for runs with a known end.

DiT trains at a constant 1e-4 (after an optional linear warmup). A short run ends better when the
rate decays to zero by its end ("warmup-stable-decay", Hu et al. 2024, MiniCPM sec. 4): the rate
holds, then falls linearly to 0 over the last `decay_fraction` of the run. The end of a run is its
step count or, with a time budget, the moment the budget runs out, whichever comes first. For the
time budget the decay starts at the step where `1 - decay_fraction` of the budget has passed, and
lasts 95% of the steps that elapsed fraction predicts at a steady step rate (a margin for a machine
that slows down).
That step is decided once, all processes alike, and kept in the checkpoint, so a resumed run
follows the same schedule as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ditkit.training.config import TrainConfig

__all__ = ["LRSchedule", "schedule_for"]

# A decay timed by the clock is planned 5% shorter than the steady step rate predicts, so that it
# reaches 0 before the budget cuts the run even when the machine slows down a little.
TIME_DECAY_MARGIN = 0.95


@dataclass
class LRSchedule:
    """Learning rate per (0-based) optimizer step.

    Args:
        lr: the peak (and, for "constant", the only) rate.
        warmup_steps: linear warmup from 0 over this many steps (0 = none, as DiT).
        kind: "constant" (DiT) or "wsd" (warmup, stable, then linear decay to 0).
        decay_fraction: for "wsd", the share of the run spent decaying, in (0, 1].
        total_steps: the run's step count.
    """

    lr: float
    warmup_steps: int
    kind: str
    decay_fraction: float
    total_steps: int
    decay_start: int | None = None
    decay_end: int | None = None

    def __post_init__(self) -> None:
        if self.kind == "wsd" and self.decay_start is None:
            self.decay_start = round(self.total_steps * (1.0 - self.decay_fraction))
            self.decay_end = self.total_steps

    @property
    def end_step(self) -> int:
        """The step the run ends at: the decay's end, which a time budget may bring forward."""
        return self.decay_end if self.decay_end is not None else self.total_steps

    def start_decay(self, step: int) -> bool:
        """Start the decay at `step` (the time budget says so) unless it has started already.

        Returns:
            True when this call moved the start (the caller may want to say so).
        """
        if self.kind != "wsd" or self.decay_start is None or step >= self.decay_start:
            return False
        stable = 1.0 - self.decay_fraction
        length = max(1, round(TIME_DECAY_MARGIN * step * self.decay_fraction / stable)) if stable > 0 else 1
        self.decay_start, self.decay_end = step, min(self.total_steps, step + length)
        return True

    def at(self, step: int) -> float:
        """The rate of (0-based) step `step`."""
        rate = self.lr
        if self.warmup_steps > 0:
            rate *= min(1.0, (step + 1) / self.warmup_steps)
        if self.decay_start is not None and self.decay_end is not None and step >= self.decay_start:
            span = max(1, self.decay_end - self.decay_start)
            rate *= max(0.0, (self.decay_end - step) / span)
        return rate

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "decay_start": self.decay_start, "decay_end": self.decay_end}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") == self.kind and self.kind == "wsd":
            self.decay_start, self.decay_end = state["decay_start"], state["decay_end"]


def schedule_for(config: TrainConfig, total_steps: int) -> LRSchedule:
    """The schedule a run's options ask for."""
    return LRSchedule(config.lr, config.warmup_steps, config.lr_schedule, config.decay_fraction, total_steps)
