"""`compare_steps`: the project's training step against a straightforward float32 baseline, side by side.

Each variant trains its own copy of one initial model. The variants take turns (repeat 1 of every
variant, then repeat 2, ...) in one process, so slow drifts in machine load hit all of them alike;
each repeat's median step time is kept, and the median over repeats is reported.
"""

from __future__ import annotations

import copy
import datetime
import os
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from ditkit.bench.step import StepOptions, TrainStep
from ditkit.bench.timing import median, resolve_device, time_calls
from ditkit.bench.train import build_model, device_name, synthetic_batch
from ditkit.errors import UserError
from ditkit.model.fast import apply_compile

# The straightforward float32 step: unfused attention, one-tensor-at-a-time AdamW and EMA.
BASELINE = StepOptions(precision="fp32", attention="math", optimizer="loop", ema="loop")
# The project's path on the CPU: fused attention kernel, fused AdamW, multi-tensor EMA.
DITKIT = StepOptions(precision="fp32", attention="auto", optimizer="fused", ema="multi-tensor")
# name -> (step options, compile choice)
VARIANTS: dict[str, tuple[StepOptions, str]] = {
    "baseline": (BASELINE, "none"),
    "ditkit": (DITKIT, "none"),
    "ditkit-bf16": (replace(DITKIT, precision="bf16"), "none"),
    "ditkit-compiled": (DITKIT, "blocks"),
}
DEFAULT_VARIANTS = ("baseline", "ditkit", "ditkit-bf16")


@dataclass
class CompareConfig:
    """A small preset on the CPU by default; `variants` are names in `VARIANTS`, the first the reference."""

    model: str = "DiT-XS/2"
    input_size: int = 32
    num_classes: int = 10
    batch: int = 8
    steps: int = 5
    repeats: int = 5
    warmup: int = 2
    variants: tuple[str, ...] = field(default=DEFAULT_VARIANTS)
    device: str = "cpu"
    seed: int = 0


def compare_steps(cfg: CompareConfig) -> dict[str, Any]:
    """Time the variants' training steps interleaved; see the module docstring.

    Returns:
        {"config", "device_name", "threads", "load_before", "load_after", "date", "rows"}; each row
        has variant, the step options, compile, step_ms (median over repeats of each repeat's
        median), step_ms_repeats, images_per_s, speedup (reference step time / this one), loss.
    """
    unknown = [v for v in cfg.variants if v not in VARIANTS]
    if unknown or not cfg.variants:
        raise UserError(
            f"unknown variant(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(VARIANTS)}"
        )
    if cfg.steps < 1 or cfg.repeats < 1:
        raise UserError("steps and repeats must be at least 1")
    device = resolve_device(cfg.device)
    load_before = _loadavg()
    base = build_model(cfg.model, cfg.input_size, cfg.num_classes, device).train()
    x, y = synthetic_batch(base, cfg.batch, device, cfg.seed)
    steps, losses = {}, {}
    for name in cfg.variants:
        options, how = VARIANTS[name]
        model = apply_compile(copy.deepcopy(base), how)
        steps[name] = TrainStep(model, options, seed=cfg.seed)
        for _ in range(cfg.warmup):
            steps[name](x, y)
    repeats: dict[str, list[float]] = {name: [] for name in cfg.variants}
    for _ in range(cfg.repeats):
        for name in cfg.variants:
            step_ms, losses[name] = _time_steps(steps[name], x, y, cfg.steps, device)
            repeats[name].append(step_ms)
    reference = median(repeats[cfg.variants[0]])
    rows = []
    for name in cfg.variants:
        options, how = VARIANTS[name]
        step_ms = median(repeats[name])
        rows.append(
            {
                "variant": name,
                **asdict(options),
                "compile": how,
                "step_ms": step_ms,
                "step_ms_repeats": repeats[name],
                "images_per_s": cfg.batch / step_ms * 1e3,
                "speedup": reference / step_ms,
                "loss": losses[name],
            }
        )
    return {
        "config": asdict(cfg),
        "device_name": device_name(device),
        "threads": _threads(),
        "load_before": load_before,
        "load_after": _loadavg(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "rows": rows,
    }


def _time_steps(step: TrainStep, x: Tensor, y: Tensor, n: int, device: torch.device) -> tuple[float, float]:
    """Median milliseconds of `n` steps, and their mean loss (read after the timing)."""
    record: list[Tensor] = []
    times = time_calls(lambda: record.append(step(x, y)), n, device)
    return median(times) * 1e3, float(torch.stack(record).mean())


def _threads() -> int:
    return torch.get_num_threads()


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None
