"""`bench_train`: images/s, achieved TFLOP/s, MFU and peak memory of the trainer's training step.

The step timed is the trainer's own (`ditkit.bench.trainer_step.BenchStep` calls `ditkit.training`'s
`TrainStep`) on a synthetic batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ditkit.bench.official_step import OfficialStep
from ditkit.bench.timing import (
    matmul_peak_tflops,
    median,
    peak_memory_gb,
    reset_peak_memory,
    synchronize,
    time_calls,
)
from ditkit.bench.trainer_step import BenchStep
from ditkit.choices import RECIPES
from ditkit.distributed import pick_device
from ditkit.errors import UserError
from ditkit.model.compilation import apply_compile
from ditkit.model.dit import DiT
from ditkit.model.flops import count_gflops
from ditkit.model.presets import get_config
from ditkit.model.recompute import check_policy
from ditkit.training.memory import synthetic_batch

# A training image costs one forward and a backward of about twice the forward (the usual count).
TRAIN_FLOP_MULTIPLIER = 3
# FLOPs per multiply-accumulate (`count_gflops` counts multiply-accumulates, as the paper does).
FLOP_PER_MAC = 2


@dataclass
class ModelBenchConfig:
    """The fields the training and sampling benchmarks share: which preset, how big a batch, how run.

    `compile_dynamic` is torch.compile's `dynamic` for the blocks (False: one graph per batch size),
    `compile_mode` its mode (None, "max-autotune-no-cudagraphs", ...).
    """

    model: str = "DiT-XL/2"
    input_size: int = 32
    num_classes: int = 1000
    batch: int = 64
    precision: str = "bf16"
    compile: str = "none"
    compile_backend: str = "inductor"
    compile_dynamic: bool | None = None
    compile_mode: str | None = None


@dataclass
class TrainBenchConfig(ModelBenchConfig):
    """What to time. Checkpointing is a block count (0 none, -1 all), as `DiTConfig.recompute_blocks`;
    `recompute_policy` ("full" or "selective") says how those blocks are checkpointed; `attention`
    pins the SDPA kernel ("auto": PyTorch's choice); `recipe` is "ditkit" (the trainer's step) or
    "official" (`ditkit.bench.official_step.OfficialStep`, eager)."""

    recompute_blocks: int = 0
    recompute_policy: str = "full"
    steps: int = 10
    warmup: int = 3
    device: str = "auto"
    attention: str = "auto"
    recipe: str = "ditkit"
    seed: int = 0
    measure_peak: bool = True


def build_model(name: str, input_size: int, num_classes: int, device: torch.device, **overrides: Any) -> DiT:
    """A freshly initialised preset, built directly on `device` (fast even for XL on a GPU)."""
    config = get_config(name, input_size=input_size, num_classes=num_classes, **overrides)
    with torch.device(device):
        return DiT(config)


def forward_gflop_per_image(model: DiT) -> float:
    """Forward FLOPs (not MACs) of one image, in GFLOP, counted on a meta copy of the model."""
    with torch.device("meta"):
        meta = DiT(model.config)
    return FLOP_PER_MAC * count_gflops(meta)


def throughput_metrics(
    images_per_s: float, gflop_per_image: float, peak_tflops: float | None
) -> dict[str, float | None]:
    """Achieved model TFLOP/s and MFU (achieved / measured matmul peak) from images/s."""
    tflops = images_per_s * gflop_per_image / 1e3
    mfu = tflops / peak_tflops if peak_tflops else None
    return {"images_per_s": images_per_s, "tflops": tflops, "peak_tflops": peak_tflops, "mfu": mfu}


def _recompute_blocks(count: int, depth: int) -> int:
    if count < -1:
        raise UserError(f"recompute_blocks must be a block count >= 0, or -1 for all; got {count}")
    return depth if count == -1 else count


def _check_policy(policy: str) -> None:
    try:
        check_policy(policy)
    except ValueError as err:
        raise UserError(str(err)) from err


def _step(cfg: TrainBenchConfig, model: DiT) -> Callable[[Tensor, Tensor], Tensor]:
    """The step `cfg.recipe` names, on `model` (compiled first as `cfg.compile` says)."""
    if cfg.recipe not in RECIPES:
        raise UserError(f"unknown recipe {cfg.recipe!r}; choose one of {', '.join(RECIPES)}")
    if cfg.recipe == "official":
        if cfg.compile != "none" or cfg.attention != "auto":
            raise UserError(
                "the official recipe runs eager with PyTorch's attention choice; drop --compile/--attention"
            )
        return OfficialStep(model, cfg.precision, seed=cfg.seed)
    apply_compile(
        model, cfg.compile, mode=cfg.compile_mode, backend=cfg.compile_backend, dynamic=cfg.compile_dynamic
    )
    return BenchStep(model, cfg.precision, seed=cfg.seed, attention=cfg.attention)


def bench_train(cfg: TrainBenchConfig, model: nn.Module | None = None) -> dict[str, Any]:
    """Time `cfg.steps` training steps after `cfg.warmup` untimed ones.

    Returns:
        The config fields plus step_ms (median), step_ms_min, images_per_s (batch / median step),
        tflops (model FLOPs: 3 x forward per image), peak_tflops (measured matmul peak in the
        same precision), mfu, peak_mem_gb, warmup_s (includes compilation), loss (mean of the
        timed steps) and device_name.
    """
    device = pick_device(cfg.device, local_rank=None)
    if cfg.steps < 1 or cfg.warmup < 0 or cfg.batch < 1:
        raise UserError("steps and batch must be at least 1 and warmup at least 0")
    if model is None:
        depth = get_config(cfg.model).depth
        ckpt = _recompute_blocks(cfg.recompute_blocks, depth)
        _check_policy(cfg.recompute_policy)
        model = build_model(
            cfg.model, cfg.input_size, cfg.num_classes, device,
            recompute_blocks=ckpt, recompute_policy=cfg.recompute_policy,
        )  # fmt: skip
    if not isinstance(model, DiT):
        raise UserError(f"bench_train times a DiT, got {type(model).__name__}")
    model.train()
    gflop_per_image = TRAIN_FLOP_MULTIPLIER * forward_gflop_per_image(model)
    step = _step(cfg, model)
    x, y = synthetic_batch(model, cfg.batch, device, cfg.seed)

    start = time.perf_counter()
    for _ in range(cfg.warmup):
        step(x, y)
    synchronize(device)
    warmup_s = time.perf_counter() - start
    reset_peak_memory(device)
    losses: list[torch.Tensor] = []
    times = time_calls(lambda: losses.append(step(x, y)), cfg.steps, device)
    loss = float(torch.stack(losses).mean())  # the one host synchronisation, after timing
    if not torch.isfinite(torch.tensor(loss)):
        raise UserError(
            f"training loss is {loss} in {cfg.precision}; the fast path is not numerically sound here"
        )
    step_s = median(times)
    peak = matmul_peak_tflops(str(device), cfg.precision) if cfg.measure_peak else None
    return {
        **asdict(cfg),
        "device": str(device),
        "device_name": device_name(device),
        "recompute_blocks": model.config.recompute_blocks,
        "recompute_policy": model.config.recompute_policy,
        "step_ms": step_s * 1e3,
        "step_ms_min": min(times) * 1e3,
        **throughput_metrics(cfg.batch / step_s, gflop_per_image, peak),
        "gflop_per_image": gflop_per_image,
        "peak_mem_gb": peak_memory_gb(device),
        "warmup_s": warmup_s,
        "loss": loss,
    }


def device_name(device: torch.device) -> str:
    """Human name of the device: the GPU model, or the CPU model with the threads torch uses."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform
    from pathlib import Path

    name = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    return f"{name} ({torch.get_num_threads()} threads)"
