"""The demo's ablation runs (README, "The demo"): train a variant of the demo recipe for a fixed number
of steps, then score its samples at several guidance scales.

Two classifiers score every sample set: the shipped Fashion-MNIST classifier (agreement, per class, and
the Frechet distance of its features against the test set) and, as an independent check, a 5-nearest-
neighbour vote on raw pixels against the 60,000 training images (86.2% on 1,000 real test images).
Training CPU time per step is reported too: on a loaded machine it stays close to the quiet value where
wall time does not.

    OMP_NUM_THREADS=1 python scripts/demo_experiment.py --name flow --steps 2500 --seed 1 \\
        --guidance 2,3,4 --per-class 100
    python scripts/demo_experiment.py --name diff --steps 3000 --set objective='"diffusion"' \\
        --set time_sampling='"uniform"' --set min_snr_gamma=5 --sampler dpm++2m --sample-steps 20

`--set FIELD=JSON` changes a TrainConfig field of the demo recipe, `--model-set FIELD=JSON` a model field.
With `--set classes='"5,6,7,8,9"'` the run trains on those classes only and is scored on them: its samples
under their Fashion-MNIST labels, the Frechet distance against the test images of those classes.
Results go to runs/experiments/NAME/ (checkpoint, samples_g*.npz) and runs/experiments/NAME.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from ditkit.choices import WEIGHT_SETS
from ditkit.cpu_memory import configure_cpu_malloc
from ditkit.data.fashion_mnist import load_fashion_mnist
from ditkit.data.fashion_mnist_dataset import parse_class_list
from ditkit.demo.recipe import DEMO_RECIPE
from ditkit.evaluation.fmnist_classifier import feature_stats, load_fmnist_classifier, score_fmnist_samples
from ditkit.evaluation.knn import knn_predict
from ditkit.evaluation.npz_io import write_npz
from ditkit.generation.pipeline import DiTPipeline
from ditkit.run_folder import latest_checkpoint
from ditkit.samplers.settings import SamplingSettings
from ditkit.training import train


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], help="TrainConfig FIELD=JSON")
    p.add_argument("--model-set", action="append", default=[], help="model FIELD=JSON")
    p.add_argument("--guidance", default="4", help="comma-separated guidance scales")
    p.add_argument("--per-class", type=int, default=100)
    p.add_argument("--sampler", default=DEMO_RECIPE.sampling.sampler)
    p.add_argument("--sample-steps", type=int, default=DEMO_RECIPE.sampling.steps)
    p.add_argument("--only-sample", action="store_true", help="reuse the run's checkpoint")
    p.add_argument("--checkpoint", help="sample this checkpoint of the demo recipe instead of training")
    p.add_argument("--interval", help="guide only for flow times LO,HI (data at 1)")
    p.add_argument("--weights", choices=WEIGHT_SETS, default="ema", help="the EMA or the raw weights")
    p.add_argument("--out", default="runs/experiments")
    a = p.parse_args()
    configure_cpu_malloc()  # as `ditkit demo` does

    out = Path(a.out) / a.name
    config = DEMO_RECIPE.train_config(None, str(out), "cpu", a.steps)
    fields = {k: json.loads(v) for k, v in (s.split("=", 1) for s in a.set)}
    model_fields = {k: json.loads(v) for k, v in (s.split("=", 1) for s in a.model_set)}
    config = dataclasses.replace(
        config,
        seed=a.seed,
        time_budget_minutes=None,
        model_overrides={**config.model_overrides, **model_fields},
        **fields,
    )
    result: dict = {"name": a.name, "steps": a.steps, "seed": a.seed, "set": fields, "model": model_fields}
    if a.checkpoint:
        checkpoint = Path(a.checkpoint)
        out.mkdir(parents=True, exist_ok=True)
    elif not a.only_sample:
        cpu0, wall0 = time.process_time(), time.time()
        checkpoint = train(config, progress=False, echo=lambda _: None).checkpoint
        result.update(train_cpu_s=time.process_time() - cpu0, train_wall_s=time.time() - wall0)
        result["cpu_s_per_step"] = result["train_cpu_s"] / a.steps
    else:
        checkpoint = latest_checkpoint(out)
    pipe = DiTPipeline.from_pretrained(checkpoint, which=a.weights, device="cpu")
    interval = tuple(float(x) for x in a.interval.split(",")) if a.interval else None
    result.update(sampler=a.sampler, sample_steps=a.sample_steps, interval=interval, weights=a.weights)
    # The model's labels 0..n-1 stand for Fashion-MNIST's `classes`; scored under Fashion-MNIST's labels
    classes = np.asarray(parse_class_list(config.classes) if config.classes else range(10))
    labels = np.repeat(np.arange(len(classes)), a.per_class)
    true_labels = classes[labels]
    classifier = load_fmnist_classifier()
    train_images, train_labels = load_fashion_mnist(None, split="train")
    test_images, test_labels = load_fashion_mnist(None, split="test")
    ref_stats = feature_stats(classifier, test_images[np.isin(test_labels, classes)])
    for g in (float(x) for x in a.guidance.split(",")):
        cpu0 = time.process_time()
        settings = SamplingSettings(a.sampler, a.sample_steps, g, guidance_interval=interval)
        images = pipe(
            labels.tolist(),
            settings=settings,
            seeds=settings.seeds(len(labels)),
            batch_size=500,
            progress=False,
        )[..., 0]
        sample_cpu = time.process_time() - cpu0
        scores = score_fmnist_samples(images, true_labels, classifier=classifier, ref_stats=ref_stats)
        knn = knn_predict(images, train_images, np.asarray(train_labels))
        result[f"g{g}"] = {
            "agreement": scores["agreement"],
            "frechet_distance": scores["frechet_distance"],
            "per_class": scores["per_class_agreement"],
            "knn_agreement": float((knn == true_labels).mean()),
            "knn_per_class": [float((knn[true_labels == c] == c).mean()) for c in classes],
            "sample_cpu_s": sample_cpu,
        }
        write_npz(out / f"samples_g{g}.npz", images, true_labels)
        print(a.name, f"guidance {g}:", {k: v for k, v in result[f"g{g}"].items() if "per_class" not in k})
    (Path(a.out) / f"{a.name}.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
