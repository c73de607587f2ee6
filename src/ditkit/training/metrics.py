"""Training metrics: one JSON line per logged step (`metrics.jsonl`), optionally TensorBoard, and the loss plot.

`metrics.jsonl` is always written (the loss curve and resumption read it). With the "tensorboard"
logger the same scalars, and the preview grids, also go to TensorBoard event files in
`<out>/tensorboard` (`tensorboard --logdir <out>`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ditkit.atomic import atomic_path, atomic_write_text
from ditkit.extras import optional_dependency

METRICS_FILE = "metrics.jsonl"
LOSS_CURVE_FILE = "loss_curve.png"
TENSORBOARD_DIR = "tensorboard"
# Record fields that are not scalars to plot.
_NOT_SCALARS = ("step",)


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Records of a metrics.jsonl file; a torn last line (a crash mid-write) is ignored."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def check_logger(logger: str) -> None:
    """Raise UserError if `logger` needs a package that is not installed (checked before a run starts)."""
    if logger == "tensorboard":
        with optional_dependency("tensorboard", "--logger tensorboard"):
            import tensorboard  # noqa: F401


class MetricsLog:
    """Appends records to `folder/metrics.jsonl`, one JSON object per line, flushed at once.

    Args:
        folder: the run folder.
        resume_step: when resuming, records after this step (written by the interrupted run after
            its last checkpoint) are dropped, so the file describes the resumed run only once;
            TensorBoard hides its events after that step too.
        logger: "jsonl", or "tensorboard" to also write the scalars and images as TensorBoard events.
    """

    def __init__(
        self, folder: str | os.PathLike[str], resume_step: int | None = None, logger: str = "jsonl"
    ) -> None:
        self.path = Path(folder) / METRICS_FILE
        if resume_step is None:
            atomic_write_text(self.path, "")
        else:
            kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self._board = None
        if logger == "tensorboard":
            check_logger(logger)
            from torch.utils.tensorboard import SummaryWriter

            purge = None if resume_step is None else resume_step + 1
            self._board = SummaryWriter(str(Path(folder) / TENSORBOARD_DIR), purge_step=purge)

    def write(self, record: dict[str, Any]) -> None:
        """Append one record ({"step": int, name: number, ...}); every number is also a TensorBoard scalar."""
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
        if self._board is not None:
            step = int(record["step"])
            for name, value in record.items():
                if (
                    name not in _NOT_SCALARS
                    and isinstance(value, int | float)
                    and not isinstance(value, bool)
                ):
                    self._board.add_scalar(name, value, step)
            self._board.flush()

    def image(self, tag: str, image: np.ndarray | str | os.PathLike[str], step: int) -> None:
        """Log an image (uint8 (H, W, C), or a PNG such as a preview grid) to TensorBoard; a no-op for JSONL."""
        if self._board is not None:
            if not isinstance(image, np.ndarray):
                from PIL import Image

                with Image.open(image) as png:
                    image = np.asarray(png.convert("RGB"))  # (H, W, 3) uint8
            self._board.add_image(tag, image, step, dataformats="HWC")
            self._board.flush()

    def close(self) -> None:
        if self._board is not None:
            self._board.close()
            self._board = None

    def records(self) -> list[dict[str, Any]]:
        return read_metrics(self.path)


def smooth(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing moving average over up to `window` values (shorter at the start)."""
    v = np.asarray(values, dtype=np.float64)
    if window <= 1 or len(v) == 0:
        return v
    c = np.cumsum(np.insert(v, 0, 0.0))
    idx = np.arange(1, len(v) + 1)
    lo = np.maximum(0, idx - window)
    return (c[idx] - c[lo]) / (idx - lo)


def plot_loss_curve(
    records: Sequence[dict[str, Any]], path: str | os.PathLike[str], title: str = "training loss"
) -> Path | None:
    """Plot loss against step (log scale, raw and smoothed) to a PNG, atomically.

    Returns:
        The path written, or None when there are no finite losses to plot.
    """
    points = [(r["step"], r["loss"]) for r in records if "loss" in r and math.isfinite(r["loss"])]
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede pyplot's import
    import matplotlib.pyplot as plt

    steps, losses = zip(*points, strict=True)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    # A short run logs few points: mark them, so that one or two are visible at all.
    marker = "o" if len(points) < 20 else None
    ax.plot(steps, losses, lw=0.8, alpha=0.6, marker=marker, label="logged (mean of each log window)")
    if len(points) >= 5:
        ax.plot(steps, smooth(losses, max(2, len(points) // 20)), lw=1.6, label="smoothed")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if min(losses) > 0:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.subplots_adjust(left=0.13, right=0.97, top=0.92, bottom=0.12)  # fixed: tight_layout costs seconds
    target = Path(path)
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return target
