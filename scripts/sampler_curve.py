"""Quality against model calls: sample a Fashion-MNIST checkpoint with several samplers and step counts,
score each set as `ditkit demo` does, and plot the Frechet distance against the number of model calls.

The demo's 1,000 labels (100 per class, image i from seed i), the shipped classifier (agreement and the
Frechet distance against the 10,000 test images), the independent 5-NN vote on pixels against the
training set, and the sampling wall time of the 1,000 images. Run from the repository root:

    python scripts/sampler_curve.py runs/demo-meanflow/checkpoint --sampler meanflow --steps 1 2 4 \\
        --out runs/curves/meanflow.json
    python scripts/sampler_curve.py runs/demo/checkpoint --sampler heun --steps 2 4 8 15 \\
        --out runs/curves/flow.json --plot runs/curves/meanflow.json runs/curves/flow.json:nfe.png
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from ditkit.data.fashion_mnist import load_fashion_mnist
from ditkit.evaluation.fmnist_classifier import feature_stats, load_fmnist_classifier, score_fmnist_samples
from ditkit.evaluation.knn import knn_agreement
from ditkit.generation.pipeline import DiTPipeline

PER_CLASS = 100


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--sampler", help="default: the checkpoint's recorded one")
    p.add_argument("--steps", type=int, nargs="+", required=True)
    p.add_argument("--label", help="the curve's name in the plot (default: the checkpoint's folder)")
    p.add_argument("--out", required=True, help="JSON file of the points")
    p.add_argument("--plot", nargs="+", metavar="FILE", help="JSON files to draw, the last one FILE.png")
    a = p.parse_args()
    torch.set_grad_enabled(False)
    pipe = DiTPipeline.from_pretrained(a.checkpoint, device="cpu")
    classifier = load_fmnist_classifier()
    test_images, _ = load_fashion_mnist(None, split="test")
    reference = feature_stats(classifier, test_images)
    train_images, train_labels = load_fashion_mnist(None, split="train")
    labels = np.repeat(np.arange(10), PER_CLASS)
    points = []
    for steps in a.steps:
        settings = pipe.settings(sampler=a.sampler, steps=steps)
        t0 = time.perf_counter()
        images = pipe(
            labels.tolist(), seeds=range(len(labels)), settings=settings, batch_size=500, progress=False
        )
        seconds = time.perf_counter() - t0
        images = np.asarray(images)[..., 0]
        scores = score_fmnist_samples(images, labels, classifier=classifier, ref_stats=reference)
        point = {
            "sampler": settings.sampler,
            "steps": steps,
            "model_calls": pipe.objective.model_calls(str(settings.sampler), steps),
            "guidance_scale": settings.guidance_scale,
            "agreement": scores["agreement"],
            "frechet_distance": scores["frechet_distance"],
            "weakest_class": min(scores["per_class_agreement"].values()),
            "knn_agreement": knn_agreement(images, labels, train_images, train_labels),
            "sample_seconds": seconds,
        }
        points.append(point)
        print(json.dumps(point))
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    label = a.label or Path(a.checkpoint).resolve().parent.parent.name
    out.write_text(
        json.dumps({"checkpoint": str(a.checkpoint), "label": label, "points": points}, indent=1) + "\n"
    )
    if a.plot:
        plot(a.plot)


def plot(args: list[str]) -> None:
    """Draw the JSON files' curves; the last argument is FILE.json:OUT.png or just OUT.png after files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    *files, last = args
    if ":" in last:
        files.append(last.split(":")[0])
        last = last.split(":")[1]
    fig, ax = plt.subplots(figsize=(6, 4))
    for file in files:
        data = json.loads(Path(file).read_text())
        calls = [pt["model_calls"] for pt in data["points"]]
        ax.plot(calls, [pt["frechet_distance"] for pt in data["points"]], "o-", label=data["label"])
    ax.set_xscale("log")
    ax.set_xlabel("model calls per image")
    ax.set_ylabel("Frechet distance (shipped classifier)")
    ax.axhline(5.0, color="grey", lw=0.5, ls="--")
    ax.legend()
    fig.tight_layout()
    fig.savefig(last, dpi=120)
    print(f"wrote {last}")


if __name__ == "__main__":
    main()
