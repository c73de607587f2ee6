"""`bench_sample`: images/s of DDPM sampling with classifier-free guidance, through `ditkit.samplers.sample`.

Every step costs the same (one guided forward over [cond; null] plus the update), so the
benchmark may time `timed_steps` steps and report per-step time x `steps`; the result says
so (`extrapolated`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from ditkit.bench.timing import (
    matmul_peak_tflops,
    peak_memory_gb,
    reset_peak_memory,
    synchronize,
)
from ditkit.bench.train import (
    ModelBenchConfig,
    build_model,
    device_name,
    forward_gflop_per_image,
    throughput_metrics,
)
from ditkit.distributed import pick_device
from ditkit.errors import UserError
from ditkit.model.compilation import apply_compile
from ditkit.model.cuda_graphs import fast_denoiser
from ditkit.objectives.base import DIT_GUIDANCE_SCALE

# DDPM steps of the DiT paper's samples and FID evaluations (Sec. 5).
DIT_SAMPLING_STEPS = 250
# Chain length of the untimed warm-up calls (they compile and capture graphs).
WARMUP_CHAIN = 2


@dataclass
class SampleBenchConfig(ModelBenchConfig):
    """What to time: `steps`-step DDPM with guidance `guidance_scale` (1 = no guidance) on `batch` images."""

    cuda_graph: bool = True
    steps: int = DIT_SAMPLING_STEPS
    timed_steps: int | None = None
    guidance_scale: float = DIT_GUIDANCE_SCALE
    device: str = "auto"
    warmup: int = 2
    seed: int = 0
    measure_peak: bool = True


def bench_sample(cfg: SampleBenchConfig) -> dict[str, Any]:
    """Time DDPM sampling with the fast denoiser (`ditkit.model.cuda_graphs.fast_denoiser`).

    Returns:
        The config fields plus step_ms (one guided step for the whole batch), sample_s (one
        `steps`-step chain), images_per_s, extrapolated (timed fewer steps than `steps`),
        tflops, peak_tflops, mfu (model FLOPs of the forward passes only), peak_mem_gb,
        warmup_s, device_name.
    """
    from ditkit.objectives.sampling import sample

    device = pick_device(cfg.device, local_rank=None)
    timed = cfg.timed_steps or cfg.steps
    if not 1 <= timed <= cfg.steps or cfg.batch < 1:
        raise UserError(f"timed steps must lie in [1, {cfg.steps}] and the batch be at least 1")
    model = build_model(cfg.model, cfg.input_size, cfg.num_classes, device).eval()
    guided = cfg.guidance_scale != 1.0
    if guided and model.null_class is None:
        raise UserError("guidance needs a class-conditional model (num_classes > 1)")
    gflop_per_image = forward_gflop_per_image(model)
    apply_compile(
        model, cfg.compile, mode=cfg.compile_mode, backend=cfg.compile_backend, dynamic=cfg.compile_dynamic
    )
    denoiser = fast_denoiser(model, cfg.precision, cuda_graph=cfg.cuda_graph)
    h, w = model.config.size_hw
    shape = (cfg.batch, model.in_channels, h, w)
    labels = torch.arange(cfg.batch, device=device) % max(model.num_classes, 1) if model.num_classes else None
    seeds = [cfg.seed + i for i in range(cfg.batch)]

    def run(n: int) -> torch.Tensor:
        return sample(
            denoiser, shape, labels=labels, sampler="ddpm", steps=n, guidance_scale=cfg.guidance_scale,
            null_label=model.null_class, seeds=seeds, progress=False, device=device,
        )  # fmt: skip

    start = time.perf_counter()
    for _ in range(cfg.warmup):
        run(WARMUP_CHAIN)
    synchronize(device)
    warmup_s = time.perf_counter() - start
    reset_peak_memory(device)
    start = time.perf_counter()
    out = run(timed)
    synchronize(device)
    step_s = (time.perf_counter() - start) / timed
    if not bool(torch.isfinite(out).all()):
        raise UserError(f"sampling produced non-finite values in {cfg.precision}")
    forwards_per_image = 2 if guided else 1  # the guided batch holds each image twice: [cond; null]
    sample_s = step_s * cfg.steps
    peak = matmul_peak_tflops(str(device), cfg.precision) if cfg.measure_peak else None
    metrics = throughput_metrics(cfg.batch / sample_s, forwards_per_image * cfg.steps * gflop_per_image, peak)
    return {
        **asdict(cfg),
        "timed_steps": timed,
        "cuda_graph": getattr(denoiser, "use_graph", False),
        "device": str(device),
        "device_name": device_name(device),
        "step_ms": step_s * 1e3,
        "sample_s": sample_s,
        "extrapolated": timed < cfg.steps,
        **metrics,
        "peak_mem_gb": peak_memory_gb(device),
        "warmup_s": warmup_s,
    }
