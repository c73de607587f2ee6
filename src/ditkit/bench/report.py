"""Text and markdown renderings of benchmark results (plain dicts, as the bench functions return them)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ditkit.bench.timing import matmul_peak_tflops
from ditkit.bench.train import device_name
from ditkit.distributed import pick_device


def peak_table(device: str, precision: str | None = None, size: int | None = None) -> dict[str, Any]:
    """Matmul peaks of `device`: {"device", "device_name", "size", "peaks": {precision: TFLOP/s}}."""
    dev = pick_device(device, local_rank=None)
    if precision is not None:
        precisions = [precision]
    else:
        precisions = ["fp32", "tf32", "bf16"] if dev.type == "cuda" else ["fp32", "bf16"]
    peaks = {p: matmul_peak_tflops(str(dev), p, size) for p in precisions}
    return {"device": str(dev), "device_name": device_name(dev), "size": size, "peaks": peaks}


def _num(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """A markdown table of `rows` with (key, header) `columns`; floats with 1 decimal, fractions as %."""
    lines = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [_pct(row.get(k)) if k.startswith("mfu") else _num(row.get(k)) for k, _ in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ckpt(result: dict[str, Any]) -> str:
    n = result["recompute_blocks"]
    if n == 0:
        return "none"
    return f"{'all' if n < 0 else n} blocks, {result.get('recompute_policy', 'full')}"


def _throughput_lines(r: dict[str, Any], unit: str) -> list[str]:
    peak = r.get("peak_tflops")
    mfu = (
        f"; MFU {_pct(r['mfu'])} of a measured {peak:.3g} TFLOP/s {r['precision']} matmul peak"
        if peak
        else ""
    )
    memory = "" if r["device"].startswith("cuda") else " (process RSS)"
    compiled = " (compilation included)" if r["compile"] != "none" else ""
    return [
        f"  throughput   {r['images_per_s']:.3g} images/s",
        f"  compute      {r['tflops']:.3g} TFLOP/s of model FLOPs ({unit}){mfu}",
        f"  peak memory  {r['peak_mem_gb']:.2f} GB{memory}",
        f"  warm-up      {r['warmup_s']:.1f} s{compiled}",
    ]


def format_result(what: str, r: dict[str, Any]) -> str:
    """Human-readable report of a `train`, `sample`, `cpu-compare` or `peak` result."""
    if what == "peak":
        lines = [f"dense matmul peak on {r['device_name']} ({r['device']})"]
        lines += [f"  {p:<5} {v:10.3g} TFLOP/s" for p, v in r["peaks"].items()]
        return "\n".join(lines)
    if what == "cpu-compare":
        return format_compare(r)
    if what == "check":
        lines = [f"{r['model']} on {r['device']}: relative L2 error against float32 eager"]
        for c in r["checks"]:
            verdict = "ok" if c["passed"] else "FAIL"
            lines.append(f"  {c['name']:<58}{c['value']:>10.2e}  (tolerance {c['tolerance']:.0e})  {verdict}")
        return "\n".join(lines)
    head = (
        f"{r['model']} {'training' if what == 'train' else 'sampling'} on {r['device_name']} "
        f"({r['device']}): "
        f"batch {r['batch']}, {r['precision']}, compile {r['compile']}"
    )
    if what == "train":
        lines = [
            head + f", checkpointing {_ckpt(r)}",
            f"  step         {r['step_ms']:.1f} ms (median of {r['steps']}; fastest {r['step_ms_min']:.1f})",
            *_throughput_lines(r, f"{r['gflop_per_image']:.1f} GFLOP per image: 3 x forward"),
            f"  loss         {r['loss']:.4f} (mean of the timed steps)",
        ]
    else:
        how = (
            f"per step x {r['steps']}, timed {r['timed_steps']}" if r["extrapolated"] else "whole chain timed"
        )
        guidance = (
            f"guidance {r['guidance_scale']:g} ([cond; null] batch)"
            if r["guidance_scale"] != 1
            else "no guidance"
        )
        lines = [
            head + f", CUDA graph {'on' if r['cuda_graph'] else 'off'}, {guidance}",
            f"  step         {r['step_ms']:.1f} ms for the batch",
            f"  chain        {r['sample_s']:.2f} s for {r['steps']} DDPM steps ({how})",
            *_throughput_lines(r, "forward passes only"),
        ]
    return "\n".join(lines)


def format_compare(r: dict[str, Any]) -> str:
    """The cpu-compare table, with the machine load it ran under, and the trainer's ratio first."""
    c = r["config"]
    depth = f" (depth {c['depth']})" if c.get("depth") else ""
    lines = [
        f"{c['model']}{depth} training step, {c['input_size']}x{c['input_size']}x{c['in_channels']}, "
        f"batch {c['batch']}, on {r['device_name']}; {c['repeats']} interleaved repeats of {c['steps']} "
        f"steps; load average {r['load_before']} before, {r['load_after']} after",
    ]
    if r.get("cpu_bf16") is not None:
        lines.append(f"bf16 matmul instructions on this CPU: {', '.join(r['cpu_bf16']) or 'none'}")
    trainer = next((row for row in r["rows"] if row["variant"] == "ditkit"), None)
    if trainer is not None:
        lines.append(
            f"the trainer's default step ({trainer['precision']}, compile {trainer['compile']}) runs at "
            f"{trainer['speedup']:.2f}x the official step's speed"
        )
    lines.append(
        f"{'variant':<22}{'precision':<10}{'compile':<8}{'step ms':>9}{'images/s':>10}"
        f"{'x official':>12}{'x official bf16':>17}"
    )
    for row in r["rows"]:
        bf16 = "-" if row["speedup_bf16"] is None else f"{row['speedup_bf16']:.2f}x"
        lines.append(
            f"{row['variant']:<22}{row['precision']:<10}{row['compile']:<8}{row['step_ms']:>9.1f}"
            f"{row['images_per_s']:>10.2f}{row['speedup']:>11.2f}x{bf16:>17}"
        )
    lines.append(
        "x official = official step time / this step time (median over repeats of each repeat's median)"
    )
    return "\n".join(lines)


def environment() -> dict[str, Any]:
    """torch version, CUDA version and devices, for the header of a results file."""
    info: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(
            gpu=props.name,
            gpu_memory_gb=round(props.total_memory / 1e9, 1),
            capability=f"{props.major}.{props.minor}",
            gpu_count=torch.cuda.device_count(),
        )
    return info
