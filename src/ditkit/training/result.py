"""How a training run ended: `train()`'s return value, also written to the run folder as JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

SUMMARY_FILE = "train_summary.json"


@dataclass
class TrainResult:
    """How a run ended.

    Attributes:
        out: the run folder.
        step: steps done (the step of the last checkpoint).
        total_steps: steps the run was asked for.
        checkpoint: the last checkpoint written.
        stopped: "finished", "time budget" or the signal's name ("SIGTERM", "SIGINT").
        loss: the last logged loss: the mean over the global batch and the steps `loss_steps` (the last
            line of metrics.jsonl); the progress bar shows the loss of the most recent steps instead.
        steps_per_second: optimizer steps per second of this session.
        elapsed_seconds: wall time of this session's loop.
        start_step: the step this session started from (0, or the checkpoint resumed).
        loss_steps: first and last step averaged in `loss`.
    """

    out: Path
    step: int
    total_steps: int
    checkpoint: Path | None
    stopped: str
    loss: float | None
    steps_per_second: float
    elapsed_seconds: float
    start_step: int = 0
    loss_steps: tuple[int, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["out"], d["checkpoint"] = str(self.out), str(self.checkpoint) if self.checkpoint else None
        return d
