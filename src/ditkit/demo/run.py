"""`ditkit demo`: train the demo recipe on Fashion-MNIST, sample every class, and measure the result.

Everything lands in one folder (default runs/demo): samples.npz, grid.png, real_vs_generated.png,
loss_curve.png, report.md / report.json, metrics.jsonl and the checkpoint. Nothing is downloaded.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np

from ditkit.atomic import atomic_folder
from ditkit.demo.pictures import GRID_FILE, REAL_VS_GENERATED_FILE, write_grid, write_real_vs_generated
from ditkit.demo.recipe import DEMO_RECIPE, DEMO_SAMPLES_PER_CLASS, DemoRecipe
from ditkit.demo.report import describe_machine, summary_lines, write_report
from ditkit.errors import UserError
from ditkit.evaluation.npz_io import write_npz

SAMPLES_FILE = "samples.npz"
# Images per sampling batch: all 1,000 demo samples in two passes, a few hundred MB on a CPU.
SAMPLE_BATCH = 500
# A stable name for the final checkpoint (a relative symlink into checkpoints/), for `ditkit sample`.
CHECKPOINT_LINK = "checkpoint"
# Files a previous demo leaves in its folder; they are replaced by a new run.
_DEMO_OUTPUTS = (
    CHECKPOINT_LINK,
    "checkpoints",
    "samples",
    "metrics.jsonl",
    "train_summary.json",
    "report.json",
    "report.md",
    GRID_FILE,
    REAL_VS_GENERATED_FILE,
)


def _clear_previous(out: Path) -> None:
    """Remove an earlier demo's outputs so that the new one trains from scratch and is timed honestly."""
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError(f"--out {out} is a file; pass a folder")
    if any(out.iterdir()) and not (out / "train_config.json").exists():
        raise UserError(f"--out {out} holds files that are not a ditkit demo's; pass an empty or new folder")
    for name in _DEMO_OUTPUTS:
        path = out / name
        if path.is_symlink():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _link_checkpoint(out: Path, checkpoint: Path) -> Path:
    """Point out/checkpoint at the final checkpoint folder; where links are not possible, copy it."""
    link = out / CHECKPOINT_LINK
    try:
        link.symlink_to(checkpoint.relative_to(out), target_is_directory=True)
    except (OSError, ValueError, NotImplementedError):
        with atomic_folder(link) as tmp:  # never a half-copied folder under the final name
            shutil.copytree(checkpoint, tmp, dirs_exist_ok=True)
    return link


def run_demo(
    data_dir: str | os.PathLike[str] | None,
    out: str | os.PathLike[str] = "runs/demo",
    *,
    recipe: DemoRecipe = DEMO_RECIPE,
    steps: int | None = None,
    per_class: int = DEMO_SAMPLES_PER_CLASS,
    device: str = "auto",
    progress: bool = True,
    started_at: float | None = None,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train, sample and evaluate the demo; return the report (also written to `out`).

    Args:
        data_dir: folder of the Fashion-MNIST IDX files (None: Debian's location).
        out: the output folder (an earlier demo there is replaced).
        recipe: training and sampling settings.
        steps: override the recipe's number of steps (e.g. a quick smoke run).
        per_class: samples per class to draw and evaluate.
        device: "auto" (GPU when present), "cpu" or "cuda".
        progress: show progress bars.
        started_at: a `time.time()` value to count the wall time from (e.g. when `make demo` began).
        echo: where progress messages go.
    """
    from ditkit.checkpoints.native import record_extra
    from ditkit.data.fashion_mnist import FASHION_MNIST_CLASSES
    from ditkit.demo.scores import score_demo
    from ditkit.distributed import pick_device
    from ditkit.evaluation.fmnist_classifier import load_fmnist_classifier
    from ditkit.generation.pipeline import DiTPipeline
    from ditkit.training import train
    from ditkit.training.metrics import LOSS_CURVE_FILE

    t_start = time.time() if started_at is None else started_at
    out = Path(out)
    classifier = load_fmnist_classifier()  # fail early, before training, if the weights are missing
    _clear_previous(out)
    config = recipe.train_config(None if data_dir is None else str(data_dir), str(out), device, steps)
    echo(f"training {recipe.model} {recipe.overrides} on Fashion-MNIST for {config.steps} steps -> {out}")
    t0 = time.time()
    setup_seconds = t0 - t_start
    result = train(config, progress=progress, echo=echo)
    train_seconds = time.time() - t0
    if result.checkpoint is None:
        raise UserError("the demo's training wrote no checkpoint")
    _link_checkpoint(out, result.checkpoint)

    t1 = time.time()
    pipe = DiTPipeline.from_pretrained(result.checkpoint, device=pick_device(device), which="ema")
    model = pipe.model
    labels = np.repeat(np.arange(len(FASHION_MNIST_CLASSES)), per_class)
    echo(f"sampling {len(labels)} images ({recipe.sampling_text()})")
    images = cast(
        np.ndarray,  # uint8 (N, 28, 28, 1), the default output type
        pipe(
            labels.tolist(),
            seeds=recipe.sampling.seeds(len(labels)),
            settings=recipe.sampling,
            batch_size=SAMPLE_BATCH,
            progress=progress,
        ),
    )[..., 0]  # (N, 28, 28)
    write_npz(out / SAMPLES_FILE, images, labels)  # ADM's layout: arr_0 and labels
    # The checkpoint says how it was evaluated: `ditkit sample/walk/serve` default to these settings.
    record_extra(result.checkpoint, "sampling", recipe.sampling.to_dict())
    sample_seconds = time.time() - t1

    t2 = time.time()
    measured = score_demo(images, labels, classifier=classifier, data_dir=data_dir, per_class=per_class)
    eval_seconds = time.time() - t2

    t3 = time.time()
    write_grid(out, images, labels, FASHION_MNIST_CLASSES, per_class)
    write_real_vs_generated(
        out, measured.real_images, measured.real_labels, images, labels, FASHION_MNIST_CLASSES
    )
    picture_seconds = time.time() - t3
    report = {
        "recipe": recipe.to_dict(),
        "params": sum(p.numel() for p in model.parameters()),
        "samples_per_class": per_class,
        "seed": config.seed,
        "training": {
            "steps": result.step,
            "planned_steps": config.steps,
            "time_budget_minutes": config.time_budget_minutes,
            "stopped": result.stopped,
            "steps_per_second": result.steps_per_second,
            "final_loss": result.loss,
            "checkpoint": str(result.checkpoint),
            "checkpoint_link": CHECKPOINT_LINK,
        },
        "scores": measured.samples,
        "floors": measured.floors,
        "timing": {
            "setup_seconds": setup_seconds,
            "train_seconds": train_seconds,
            "sample_seconds": sample_seconds,
            "eval_seconds": eval_seconds,
            "floor_seconds": measured.floor_seconds,
            "picture_seconds": picture_seconds,
            "total_seconds": time.time() - t_start,
            "counted_from": "the given start time"
            if started_at is not None
            else "the start of `ditkit demo`",
        },
        "machine": describe_machine(pipe.device),
        "files": {
            "samples": SAMPLES_FILE,
            "grid": GRID_FILE,
            "real_vs_generated": REAL_VS_GENERATED_FILE,
            "loss_curve": LOSS_CURVE_FILE,
        },
    }
    write_report(out, report)
    for line in summary_lines(report):
        echo(line)
    echo(f"report: {out / 'report.md'}")
    return report
