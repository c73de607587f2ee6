"""The demo's report: the numbers as JSON, a short Markdown page, and the lines printed at the end."""

from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path
from typing import Any

import torch

from ditkit.atomic import atomic_write_text
from ditkit.cpu_memory import cpu_malloc_mode
from ditkit.demo.recipe import AGREEMENT_BAR, CLASS_AGREEMENT_BAR, FRECHET_BAR, TIME_BAR_MINUTES, DemoRecipe


def _optimizer_text(recipe: dict[str, Any]) -> str:
    """The recipe's optimizer in words (a report from before the option was AdamW's)."""
    adamw = f"AdamW (betas {tuple(recipe['betas'])})"
    if recipe.get("optimizer", "adamw") == "muon":
        return f"Muon on the blocks' weight matrices and {adamw} on the other parameters"
    return adamw


def describe_machine(device: torch.device) -> dict[str, Any]:
    """CPU model, logical CPUs (of the machine, and those this process may run on), torch threads, how
    freed CPU memory is treated (`ditkit.cpu_memory`), GPU."""
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
        "cpus_available": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_malloc": cpu_malloc_mode(),
        "torch": torch.__version__,
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def verdict(report: dict[str, Any]) -> dict[str, bool]:
    """Whether the measured agreement (overall and per class), distance and time meet the demo's bars."""
    minutes = report["timing"]["total_seconds"] / 60
    scores = report["scores"]
    return {
        "agreement": scores["agreement"] >= AGREEMENT_BAR,
        "every_class": min(scores["per_class_agreement"].values()) >= CLASS_AGREEMENT_BAR,
        "frechet": scores["frechet_distance"] <= FRECHET_BAR,
        "time": minutes <= TIME_BAR_MINUTES,
    }


def write_report(folder: Path, report: dict[str, Any]) -> tuple[Path, Path]:
    """Write report.json and report.md into `folder` (the Markdown shows the pictures found there)."""
    json_path, md_path = folder / "report.json", folder / "report.md"
    atomic_write_text(json_path, json.dumps(report, indent=2) + "\n")
    pictures = [
        name for name in report["files"].values() if name.endswith(".png") and (folder / name).exists()
    ]
    atomic_write_text(md_path, markdown(report, pictures))
    return json_path, md_path


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min ({seconds:.0f} s)"


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def lowest_class(report: dict[str, Any]) -> tuple[str, str]:
    """The weakest class's agreement, and its name with the binomial standard error of a class's share at
    the bar, e.g. ("77.0%", "Shirt; ±4.3 points, the standard error of 100 samples at the bar"): a class
    is scored on few samples, so a bar met by less than about two standard errors can be missed by a rerun.
    """
    per_class = report["scores"]["per_class_agreement"]
    name = min(per_class, key=per_class.__getitem__)
    n = report["samples_per_class"]
    error = 100 * math.sqrt(CLASS_AGREEMENT_BAR * (1 - CLASS_AGREEMENT_BAR) / n)
    return (
        f"{per_class[name]:.1%}",
        f"{name}; ±{error:.1f} points, the standard error of {n} samples at the bar",
    )


def training_outcome(train: dict[str, Any]) -> str:
    """How training ended, e.g. "stopped by the 10-minute time budget at step 2750 of 4000"."""
    steps, planned, budget = train["steps"], train["planned_steps"], train.get("time_budget_minutes")
    if train["stopped"] == "finished":
        return f"all {planned} steps done" + (f", within the {budget:g}-minute time budget" if budget else "")
    if train["stopped"] == "time budget":
        return f"stopped by the {budget:g}-minute time budget at step {steps} of {planned}"
    return f"interrupted ({train['stopped']}) at step {steps} of {planned}"


def _floor_note(report: dict[str, Any]) -> str:
    floors = report["floors"]
    train = floors["train"]
    return (
        f"Real-data floors: the same code on {train['num_samples']:,} real images ({report['samples_per_class']} "
        f"per class, drawn with seed {train['seed']}) from the training set (not the Frechet reference) and "
        f"from the test set (part of the reference, so no distance is given); measured in this run "
        f"({report['timing']['floor_seconds']:.1f} s). The sample count matters: the Frechet distance of "
        f"{train['num_samples']:,} images is biased upwards, so compare it with the floor, not with 0."
    )


def _results(report: dict[str, Any]) -> list[str]:
    s, floors, ok = report["scores"], report["floors"], verdict(report)
    train, test = floors["train"], floors["test"]
    weakest, note = lowest_class(report)
    n = s["num_samples"]
    lines = [
        f"| measure | samples ({n:,}) | real training images ({train['num_samples']:,}) | "
        f"real test images ({test['num_samples']:,}) | bar |",
        "|---|---|---|---|---|",
        f"| classifier agreement | **{s['agreement']:.1%}** | {train['agreement']:.1%} | {test['agreement']:.1%} | "
        f">= {AGREEMENT_BAR:.0%}: {_met(ok['agreement'])} |",
        f"| Frechet distance (classifier features, vs the {s['num_reference']:,} test images) | "
        f"**{s['frechet_distance']:.2f}** | {train['frechet_distance']:.3f} | n/a (in the reference) | "
        f"<= {FRECHET_BAR:g}: {_met(ok['frechet'])} |",
        f"| lowest class agreement | **{weakest}** ({note}) | | | "
        f">= {CLASS_AGREEMENT_BAR:.0%}: {_met(ok['every_class'])} |",
    ]
    return lines


def _per_class(report: dict[str, Any]) -> list[str]:
    s, floors = report["scores"], report["floors"]
    rows = [
        f"| {name} | {value:.1%} | {floors['train']['per_class_agreement'].get(name, float('nan')):.1%} | "
        f"{floors['test']['per_class_agreement'].get(name, float('nan')):.1%} |"
        for name, value in s["per_class_agreement"].items()
    ]
    return ["| class | samples | real training images | real test images |", "|---|---|---|---|", *rows]


def _timing(report: dict[str, Any]) -> list[str]:
    t, train, ok = report["timing"], report["training"], verdict(report)
    return [
        "| part | wall time | |",
        "|---|---|---|",
        f"| setup (before training) | {_minutes(t['setup_seconds'])} | |",
        f"| training | {_minutes(t['train_seconds'])} | {train['steps_per_second']:.2f} steps/s |",
        f"| sampling | {_minutes(t['sample_seconds'])} | |",
        f"| evaluation | {_minutes(t['eval_seconds'])} | of which real-data floors {t['floor_seconds']:.1f} s |",
        f"| pictures | {_minutes(t['picture_seconds'])} | |",
        f"| **total** | **{_minutes(t['total_seconds'])}** | counted from {t['counted_from']}; "
        f"bar <= {TIME_BAR_MINUTES:.0f} min: {_met(ok['time'])} |",
    ]


def _machine(m: dict[str, Any]) -> str:
    gpu = f" ({m['gpu']})" if "gpu" in m else ""
    malloc = f", freed CPU memory: {m['cpu_malloc']}" if "cpu_malloc" in m else ""
    return (
        f"Machine: {m['cpu']}; {m['cpu_count']} logical CPUs, {m.get('cpus_available', m['cpu_count'])} "
        f"available to the run, torch threads: {m['torch_threads']}{malloc}; device {m['device']}{gpu}; "
        f"torch {m['torch']}."
    )


_CAPTIONS = {
    "grid": "Samples, one row per class",
    "real_vs_generated": "Real test images (left) beside samples (right), one row per class",
    "loss_curve": "Training loss",
}


def markdown(report: dict[str, Any], pictures: list[str] | None = None) -> str:
    """report.md: settings, results with their real-data floors, per-class agreement, time, machine, pictures.

    Args:
        report: the demo's report (as in report.json).
        pictures: the PNG files (names in `report["files"]`) to show; None: all of them.
    """
    r, s, train = report["recipe"], report["scores"], report["training"]
    shown = [
        (key, name)
        for key, name in report["files"].items()
        if name.endswith(".png") and (pictures is None or name in pictures)
    ]
    figures = [f"![{_CAPTIONS.get(key, key)}]({name})" for key, name in shown]
    lines = [
        "# ditkit demo: class-conditional DiT on Fashion-MNIST",
        "",
        f"Model {r['model']} {r['overrides']} ({report['params'] / 1e6:.2f}M parameters) on 28x28 pixels, "
        f"batch {r['global_batch']}, {_optimizer_text(r)} at lr {r['lr']} with {r['warmup_steps']} "
        f"warmup steps, EMA {r['ema_decay']} (with warmup), horizontal flips: {r['flip']}, "
        f"learn_sigma={r['learn_sigma']}, seed {report['seed']}.",
        f"Training: {train['steps']} steps reached; {training_outcome(train)}.",
        f"Samples: {s['num_samples']} ({report['samples_per_class']} per class), "
        f"{DemoRecipe.from_dict(r).sampling_text()}.",
        "",
        *figures[:1],
        "",
        "## Results",
        "",
        *_results(report),
        "",
        _floor_note(report),
        "",
        "## Agreement per class",
        "",
        *_per_class(report),
        "",
        "## Wall time",
        "",
        *_timing(report),
        "",
        _machine(report["machine"]),
        "",
        "## Pictures",
        "",
        *(line for figure in figures[1:] for line in (figure, "")),
        "Files: `samples.npz` (images uint8 N x 28 x 28, labels), "
        + ", ".join(f"`{name}`" for _, name in shown)
        + ", `metrics.jsonl`, `checkpoint` (the final checkpoint: `ditkit sample <out>/checkpoint --class Sneaker`).",
        "",
    ]
    return "\n".join(lines)


def summary_lines(report: dict[str, Any]) -> list[str]:
    """What the demo prints at the end."""
    s, t, floors = report["scores"], report["timing"], report["floors"]
    ok, (weakest, note) = verdict(report), lowest_class(report)
    return [
        f"training: {report['training']['steps']} steps, {training_outcome(report['training'])}",
        f"classifier agreement: {s['agreement']:.1%} (real test images {floors['test']['agreement']:.1%}; "
        f"bar {AGREEMENT_BAR:.0%}: {_met(ok['agreement'])})",
        f"lowest class agreement: {weakest} ({note}; "
        f"bar {CLASS_AGREEMENT_BAR:.0%}: {_met(ok['every_class'])})",
        f"Frechet distance in the classifier's feature space vs the test set: {s['frechet_distance']:.2f} "
        f"(real training images {floors['train']['frechet_distance']:.3f}; bar {FRECHET_BAR:g}: {_met(ok['frechet'])})",
        f"wall time: {_minutes(t['total_seconds'])} (bar {TIME_BAR_MINUTES:.0f} min: {_met(ok['time'])}); "
        f"training {t['train_seconds']:.0f} s, sampling {t['sample_seconds']:.0f} s, evaluation {t['eval_seconds']:.0f} s",
    ]
