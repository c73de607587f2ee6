"""Evaluate one checkpoint of a study run: the same labels, seeds and sampler for every run.

Each evaluation leaves two files in the run folder, each written atomically:
`samples_<step>[<tag>].npz` (ADM layout: `arr_0` uint8 (N, H, W) or (N, H, W, 3), `labels`) and
`eval_<step>[<tag>].json` (the metrics). A finished evaluation is never redone; samples whose
metrics are missing (a kill in between) are scored again without resampling.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ditkit.atomic import atomic_write_text
from ditkit.evaluation.npz_io import read_npz, write_npz
from ditkit.samplers.settings import SamplingSettings
from ditkit.study.eval_settings import GUIDANCE_KEY, EvalSettings

# The row keys of the metrics (results.json), in the order tables show them.
METRIC_KEYS = (
    "fid",
    "sfid",
    "inception_score",
    "precision",
    "recall",
    "fmnist_frechet",
    "fmnist_agreement",
    "knn_agreement",
)
# Readable names for tables and plot axes.
METRIC_LABELS = {
    "fid": "FID",
    "sfid": "sFID",
    "inception_score": "Inception Score",
    "precision": "precision",
    "recall": "recall",
    "fmnist_frechet": "Frechet distance (F-MNIST classifier)",
    "fmnist_agreement": "class agreement (F-MNIST classifier)",
    "knn_agreement": "class agreement (5-NN on pixels)",
}
# Metrics where lower is better (plotted on a log scale, as the paper plots FID).
LOWER_IS_BETTER = ("fid", "sfid", "fmnist_frechet")


# The fields told apart by the file names of an evaluation's variants: sample steps and guidance.
VARIANT_FIELDS = ("steps", "guidance_scale", "guided_channels", "guidance_interval")


def variant_tag(variant: SamplingSettings, varying: set[str]) -> str:
    """A file-name suffix for the settings that differ between variants ("" when only one)."""
    parts = []
    if "steps" in varying:
        parts.append(f"s{variant.steps}")
    if "guidance_scale" in varying:
        parts.append(f"cfg{variant.guidance_scale:g}")
    if "guided_channels" in varying:
        parts.append(str(variant.guided_channels))
    if "guidance_interval" in varying:
        interval = variant.guidance_interval
        parts.append("t-all" if interval is None else f"t{interval[0]:g}-{interval[1]:g}")
    return "".join(f"_{p}" for p in parts)


def variant_record(variant: SamplingSettings, objective: str) -> dict[str, Any]:
    """The sampler and guidance settings as evaluation records and results rows hold them, with the model
    calls one sample cost (`Objective.model_calls`) for a model trained with `objective`."""
    from ditkit.objectives.registry import as_objective

    interval = variant.guidance_interval
    sampler, steps = str(variant.sampler), int(variant.steps or 0)
    return {
        "sampler": sampler,
        "sample_steps": steps,
        "model_calls": as_objective(objective).model_calls(sampler, steps),
        GUIDANCE_KEY: variant.guidance_scale,
        "guided_channels": variant.guided_channels,
        "guidance_interval": None if interval is None else list(interval),
    }


def samples_path(run_dir: Path, step: int, tag: str) -> Path:
    return run_dir / f"samples_{step}{tag}.npz"


def eval_path(run_dir: Path, step: int, tag: str) -> Path:
    return run_dir / f"eval_{step}{tag}.json"


@dataclass
class Evaluator:
    """Draws and scores a checkpoint's samples.

    Args:
        settings: the study's evaluation settings.
        fashion_mnist: score with the shipped Fashion-MNIST classifier (agreement, Frechet distance)
            and, independently of it, by the 5-NN vote on pixels against the training images.
        data_root: folder of the Fashion-MNIST IDX files (its test set is the reference).
        reference: an ADM reference batch: FID, sFID, IS, precision and recall are computed against it.
        inception: the Inception weights file (None: the cached or downloaded ones).
        device: where to sample and score.
        progress: show progress bars.
    """

    settings: EvalSettings
    fashion_mnist: bool = False
    data_root: str | None = None
    reference: str | None = None
    inception: str | None = None
    device: str = "cpu"
    progress: bool = False
    _loaded: dict[str, Any] = field(default_factory=dict, repr=False)

    def expected_metrics(self) -> set[str]:
        keys = {"fmnist_frechet", "knn_agreement"} if self.fashion_mnist else set()
        if self.reference is not None:
            keys |= {"fid", "sfid", "inception_score", "precision", "recall"}
        return keys

    def done(self, run_dir: Path, step: int, tag: str) -> dict[str, Any] | None:
        """The saved record of this evaluation, if it exists and holds every metric asked for."""
        path = eval_path(run_dir, step, tag)
        if not path.is_file():
            return None
        record = json.loads(path.read_text(encoding="utf-8"))
        return record if self.expected_metrics() <= set(record.get("metrics", {})) else None

    def evaluate(self, checkpoint: Path, run_dir: Path, step: int, objective: str) -> list[dict[str, Any]]:
        """Every variant (sample steps x guidance) of one checkpoint of a model trained with `objective`;
        returns their records (read back when done)."""
        variants = self.settings.variants(objective)
        varying = {k for k in VARIANT_FIELDS if len({getattr(v, k) for v in variants}) > 1}
        pipe = None
        records = []
        for variant in variants:
            tag = variant_tag(variant, varying)
            saved = self.done(run_dir, step, tag)
            if saved is not None:  # finished before (a metric added since is scored from the samples)
                records.append({**variant_record(variant, objective), **saved})  # older ones lack the steps
                continue
            t0 = time.time()
            path = samples_path(run_dir, step, tag)
            if not path.is_file():
                if pipe is None:
                    pipe = self._pipeline(checkpoint)
                self._draw(pipe, variant, path)
            t1 = time.time()
            record = {
                "step": step,
                "tag": tag,
                **variant_record(variant, objective),
                "samples": path.name,
                "metrics": self._score(path),
                "sample_seconds": t1 - t0,
                "eval_seconds": time.time() - t1,
            }
            atomic_write_text(eval_path(run_dir, step, tag), json.dumps(record, indent=2) + "\n")
            records.append(record)
        return records

    def _pipeline(self, checkpoint: Path) -> Any:
        from ditkit.generation.pipeline import DiTPipeline

        return DiTPipeline.from_pretrained(checkpoint, device=self.device, precision=self.settings.precision)

    def _draw(self, pipe: Any, variant: SamplingSettings, path: Path) -> None:
        s = self.settings
        n = s.num_samples
        labels = [i % pipe.num_classes for i in range(n)] if pipe.num_classes > 0 else None
        images = pipe(
            labels,
            seeds=variant.seeds(n),
            settings=variant,
            batch_size=s.batch_size,
            progress=self.progress,
        )
        assert isinstance(images, np.ndarray)  # uint8 (N, H, W, C)
        if images.shape[-1] == 1:
            images = images[..., 0]  # ADM's greyscale layout (N, H, W)
        write_npz(path, images, None if labels is None else np.asarray(labels, dtype=np.int64))

    def _score(self, path: Path) -> dict[str, float]:
        metrics: dict[str, float] = {}
        if self.fashion_mnist:
            from ditkit.evaluation.fmnist_classifier import score_fmnist_samples

            images, labels = read_npz(path)
            fm: dict[str, Any] = score_fmnist_samples(
                images,
                labels,
                classifier=self._classifier(),
                device=self.device,
                ref_stats=self._fmnist_ref(),
            )
            metrics["fmnist_frechet"] = float(fm["frechet_distance"])
            if "agreement" in fm:
                metrics["fmnist_agreement"] = float(fm["agreement"])
            if labels is not None:
                from ditkit.evaluation.knn import knn_agreement

                train_images, train_labels = self._fmnist_train()
                metrics["knn_agreement"] = knn_agreement(images, labels, train_images, train_labels)
        if self.reference is not None:
            from ditkit.evaluation.adm_metrics import evaluate_npz

            adm = evaluate_npz(
                path, self.reference, self._inception(), device=self.device, progress=self.progress
            )
            metrics.update({k: float(adm[k]) for k in METRIC_KEYS if k in adm})
        return metrics

    def _classifier(self) -> Any:
        if "classifier" not in self._loaded:
            from ditkit.evaluation import fmnist_classifier

            self._loaded["classifier"] = fmnist_classifier.load_fmnist_classifier()
        return self._loaded["classifier"]

    def _fmnist_ref(self) -> Any:
        """The test set's classifier feature statistics, computed once per evaluator."""
        if "fmnist_ref" not in self._loaded:
            from ditkit.data.fashion_mnist import load_fashion_mnist
            from ditkit.evaluation.fmnist_classifier import feature_stats

            test_images, _ = load_fashion_mnist(self.data_root, split="test")
            self._loaded["fmnist_ref"] = feature_stats(self._classifier(), test_images, self.device)
        return self._loaded["fmnist_ref"]

    def _fmnist_train(self) -> tuple[np.ndarray, np.ndarray]:
        """The labelled training images the 5-NN vote looks among, read once per evaluator."""
        if "fmnist_train" not in self._loaded:
            from ditkit.data.fashion_mnist import load_fashion_mnist

            self._loaded["fmnist_train"] = load_fashion_mnist(self.data_root, split="train")
        return self._loaded["fmnist_train"]

    def _inception(self) -> torch.nn.Module:
        if "inception" not in self._loaded:
            from ditkit.evaluation.inception_weights import load_inception

            self._loaded["inception"] = load_inception(self.inception, device=self.device)
        return self._loaded["inception"]
