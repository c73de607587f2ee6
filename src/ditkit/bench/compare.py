"""`compare_steps`: the trainer's step side by side with the official recipe's, in one process.

Every variant trains its own copy of one initial model on one synthetic batch: "official" rows run
`ditkit.bench.official_step.OfficialStep` (the official training step as its code runs), "ditkit" rows
run the trainer's own `TrainStep` through `ditkit.bench.trainer_step.BenchStep`. The variants take turns
(repeat 1 of every variant, then repeat 2, ...) so that drifts in machine load hit all of them
alike; each repeat's median step time is kept, and the median over repeats is reported, with each
row's speedup over the official float32 step and over the official step under bf16 autocast.

The defaults are the demo's model and batch (DiT-XS/4 with 4 blocks on 28x28 one-channel images,
10 classes, batch 32).
"""

from __future__ import annotations

import copy
import datetime
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from ditkit.bench.official_step import OfficialStep
from ditkit.bench.timing import median, time_calls
from ditkit.bench.train import build_model, device_name, synthetic_batch
from ditkit.bench.trainer_step import BenchStep
from ditkit.choices import COMPARE_VARIANTS, DEFAULT_COMPARE_VARIANTS
from ditkit.distributed import pick_device
from ditkit.errors import UserError
from ditkit.model.compilation import apply_compile, default_compile
from ditkit.model.precision import cpu_bf16_instructions, default_precision


@dataclass
class CompareConfig:
    """What to compare; the defaults are the demo's model and batch on the CPU.

    Attributes:
        model, input_size, in_channels, num_classes, depth, learn_sigma: the DiT (preset, overrides).
        batch: samples per step.
        steps, repeats, warmup: timed steps per repeat, rounds over the variants, untimed steps first.
        variants: names in `ditkit.choices.COMPARE_VARIANTS`; the official float32 step always runs (it
            is the reference). None: `default_variants(device)`.
    """

    model: str = "DiT-XS/4"
    input_size: int = 28
    in_channels: int = 1
    num_classes: int = 10
    depth: int | None = 4
    learn_sigma: bool = True
    batch: int = 32
    steps: int = 5
    repeats: int = 5
    warmup: int = 2
    variants: tuple[str, ...] | None = None
    device: str = "cpu"
    seed: int = 0


def resolve_variant(name: str, device: torch.device) -> tuple[str, str, str]:
    """(whose, precision, compile) of variant `name` on `device`, with "float"/"auto" resolved."""
    whose, precision, how = COMPARE_VARIANTS[name]
    if precision == "float":
        precision = "tf32" if device.type == "cuda" else "fp32"
    elif precision == "auto":
        precision = default_precision(device)
    return whose, precision, default_compile(device) if how == "auto" else how


def default_variants(device: torch.device) -> tuple[str, ...]:
    """`DEFAULT_COMPARE_VARIANTS`, without the bf16 ones on a CPU that has no bf16 matmul instructions
    (there a bf16 matmul runs tens of times slower than float32: see bench/RESULTS.md)."""
    if device.type == "cpu" and not cpu_bf16_instructions():
        return tuple(v for v in DEFAULT_COMPARE_VARIANTS if COMPARE_VARIANTS[v][1] != "bf16")
    return DEFAULT_COMPARE_VARIANTS


def compare_steps(cfg: CompareConfig) -> dict[str, Any]:
    """Time the variants' training steps interleaved; see the module docstring.

    Returns:
        {"config", "device_name", "threads", "cpu_bf16" (the CPU's bf16 instructions), "load_before",
        "load_after", "date", "rows"}; each row
        has variant, whose, precision, compile, step_ms (median over repeats of each repeat's
        median), step_ms_repeats, images_per_s, speedup (official step time / this one),
        speedup_bf16 (official-bf16 step time / this one, if that variant ran), loss.
    """
    device = pick_device(cfg.device, local_rank=None)
    names = default_variants(device) if cfg.variants is None else cfg.variants
    unknown = [v for v in names if v not in COMPARE_VARIANTS]
    if unknown:
        raise UserError(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(COMPARE_VARIANTS)}")
    if cfg.steps < 1 or cfg.repeats < 1 or cfg.batch < 1:
        raise UserError("steps, repeats and batch must be at least 1")
    variants = ["official", *(v for v in dict.fromkeys(names) if v != "official")]
    load_before = _loadavg()
    overrides: dict[str, Any] = {"in_channels": cfg.in_channels, "learn_sigma": cfg.learn_sigma}
    if cfg.depth is not None:
        overrides["depth"] = cfg.depth
    base = build_model(cfg.model, cfg.input_size, cfg.num_classes, device, **overrides).train()
    x, y = synthetic_batch(base, cfg.batch, device, cfg.seed)
    steps: dict[str, Callable[[Tensor, Tensor], Tensor]] = {}
    for name in variants:
        whose, precision, how = resolve_variant(name, device)
        model = copy.deepcopy(base)
        if whose == "official":
            steps[name] = OfficialStep(model, precision, seed=cfg.seed)
        else:
            steps[name] = BenchStep(apply_compile(model, how), precision, seed=cfg.seed)
        for _ in range(cfg.warmup):
            steps[name](x, y)
    repeats: dict[str, list[float]] = {name: [] for name in variants}
    losses: dict[str, float] = {}
    for _ in range(cfg.repeats):
        for name in variants:
            step_ms, losses[name] = _time_steps(steps[name], x, y, cfg.steps, device)
            repeats[name].append(step_ms)
    times = {name: median(repeats[name]) for name in variants}
    rows = []
    for name in variants:
        whose, precision, how = resolve_variant(name, device)
        row: dict[str, Any] = {"variant": name, "whose": whose, "precision": precision, "compile": how}
        row.update(
            step_ms=times[name], step_ms_repeats=repeats[name], images_per_s=cfg.batch / times[name] * 1e3
        )
        row.update(
            speedup=times["official"] / times[name],
            speedup_bf16=times["official-bf16"] / times[name] if "official-bf16" in times else None,
            loss=losses[name],
        )
        rows.append(row)
    return {
        "config": asdict(cfg),
        "device_name": device_name(device),
        "threads": torch.get_num_threads(),
        "cpu_bf16": cpu_bf16_instructions() if device.type == "cpu" else None,
        "load_before": load_before,
        "load_after": _loadavg(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "rows": rows,
    }


def _time_steps(
    step: Callable[[Tensor, Tensor], Tensor], x: Tensor, y: Tensor, n: int, device: torch.device
) -> tuple[float, float]:
    """Median milliseconds of `n` steps, and their mean loss (read after the timing)."""
    record: list[Tensor] = []
    times = time_calls(lambda: record.append(step(x, y)), n, device)
    return median(times) * 1e3, float(torch.stack(record).mean())


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None
