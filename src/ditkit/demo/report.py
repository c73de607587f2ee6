"""The demo's report: the numbers as JSON, a short Markdown page, and the lines printed at the end."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import torch

from ditkit.atomic import atomic_write_text
from ditkit.demo.recipe import AGREEMENT_BAR, TIME_BAR_MINUTES


def describe_machine(device: torch.device) -> dict[str, Any]:
    """CPU model, core count, torch threads and (when used) the GPU."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def verdict(report: dict[str, Any]) -> dict[str, bool]:
    """Whether the measured agreement and time meet the issue's bars."""
    minutes = report["timing"]["total_seconds"] / 60
    return {
        "agreement": report["scores"]["agreement"] >= AGREEMENT_BAR,
        "time": minutes <= TIME_BAR_MINUTES,
    }


def write_report(folder: Path, report: dict[str, Any]) -> tuple[Path, Path]:
    """Write report.json and report.md into `folder`."""
    json_path, md_path = folder / "report.json", folder / "report.md"
    atomic_write_text(json_path, json.dumps(report, indent=2) + "\n")
    atomic_write_text(md_path, markdown(report))
    return json_path, md_path


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min ({seconds:.0f} s)"


def markdown(report: dict[str, Any]) -> str:
    r, s, t, m = report["recipe"], report["scores"], report["timing"], report["machine"]
    ok = verdict(report)
    per_class = "\n".join(f"| {name} | {value:.1%} |" for name, value in s["per_class_agreement"].items())
    train = report["training"]
    cut = "" if train["stopped"] == "finished" else f" (stopped early: {train['stopped']})"
    lines = [
        "# ditkit demo: class-conditional DiT on Fashion-MNIST",
        "",
        f"Model {r['model']} {r['overrides']} ({report['params'] / 1e6:.2f}M parameters) on 28x28 pixels, "
        f"{train['steps']} steps{cut} at global batch {r['global_batch']}, lr {r['lr']} with {r['warmup_steps']} "
        f"warmup steps, EMA {r['ema_decay']} (with warmup), learn_sigma={r['learn_sigma']}.",
        f"Samples: {s['num_samples']} ({report['samples_per_class']} per class), {r['sampler']} with "
        f"{r['sample_steps']} steps and guidance scale {r['cfg_scale']}.",
        "",
        "## Results",
        "",
        "| measure | value | bar |",
        "|---|---|---|",
        f"| classifier agreement | {s['agreement']:.1%} | >= {AGREEMENT_BAR:.0%}: "
        f"{'met' if ok['agreement'] else 'NOT met'} |",
        f"| Frechet distance (classifier features, vs the 10,000 test images) | {s['frechet_distance']:.2f} | |",
        f"| total wall time | {_minutes(t['total_seconds'])} | <= {TIME_BAR_MINUTES:.0f} min: "
        f"{'met' if ok['time'] else 'NOT met'} |",
        f"| training | {_minutes(t['train_seconds'])}, {train['steps_per_second']:.2f} steps/s | |",
        f"| sampling | {_minutes(t['sample_seconds'])} | |",
        f"| evaluation | {_minutes(t['eval_seconds'])} | |",
        "",
        f"Machine: {m['cpu']}, {m['cpu_count']} cores, {m['torch_threads']} torch threads, device {m['device']}"
        + (f" ({m['gpu']})" if "gpu" in m else "")
        + f", torch {m['torch']}.",
        "",
        "## Agreement per class",
        "",
        "| class | agreement |",
        "|---|---|",
        per_class,
        "",
        "Files: `samples.npz` (images uint8 N x 28 x 28, labels), `grid.png` (one row per class), "
        "`loss_curve.png`, `metrics.jsonl`, `checkpoint` (the final checkpoint: "
        "`ditkit sample <out>/checkpoint --class Sneaker`).",
        "",
    ]
    return "\n".join(lines)


def summary_lines(report: dict[str, Any]) -> list[str]:
    """What the demo prints at the end."""
    s, t = report["scores"], report["timing"]
    ok = verdict(report)
    return [
        f"classifier agreement: {s['agreement']:.1%} (bar {AGREEMENT_BAR:.0%}: {'met' if ok['agreement'] else 'NOT met'})",
        f"Frechet distance in the classifier's feature space vs the test set: {s['frechet_distance']:.2f}",
        f"wall time: {_minutes(t['total_seconds'])} (bar {TIME_BAR_MINUTES:.0f} min: {'met' if ok['time'] else 'NOT met'}); "
        f"training {t['train_seconds']:.0f} s, sampling {t['sample_seconds']:.0f} s, evaluation {t['eval_seconds']:.0f} s",
    ]
