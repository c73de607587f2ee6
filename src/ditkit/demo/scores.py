"""The demo's measurements: the shipped classifier's scores of the samples, and of real images (the floors).

The floors are what real data scores with the same code and the same number of images: real training
images (not the Frechet reference) for both metrics, and real test images for agreement (they are part
of the reference, so their distance would flatter them). They cost two classifier passes over
`per_class * 10` images, so they are measured in every run rather than cached.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ditkit.evaluation.fmnist_classifier import FashionMNISTClassifier

# The real images behind the floors are drawn by this seed, the same in every run (not the training seed).
FLOOR_SEED = 0
# Where each floor's images come from, and whether they are inside the Frechet reference (the test set).
FLOOR_SPLITS = {"train": False, "test": True}


@dataclass
class DemoScores:
    """What `score_demo` measured.

    Attributes:
        samples: `score_fmnist_samples` of the generated images (vs the test set).
        floors: split -> the same for `per_class` real images per class of that split, plus
            "in_reference" (True where the images are part of the Frechet reference).
        real_images, real_labels: the real test images drawn (class-major), for pictures.
        floor_seconds: time spent on the floors.
    """

    samples: dict[str, Any]
    floors: dict[str, dict[str, Any]]
    real_images: np.ndarray
    real_labels: np.ndarray
    floor_seconds: float


def score_demo(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    classifier: FashionMNISTClassifier,
    data_dir: str | os.PathLike[str] | None,
    per_class: int,
) -> DemoScores:
    """Score the samples against the 10,000 test images, and real images the same way.

    Args:
        images: uint8 (N, 28, 28) samples; labels: int (N,) their classes.
        classifier: the loaded Fashion-MNIST classifier.
        data_dir: the Fashion-MNIST folder (None: Debian's location).
        per_class: real images per class behind each floor (the demo's samples per class).
    """
    from ditkit.data.fashion_mnist import load_fashion_mnist
    from ditkit.evaluation.fmnist_classifier import balanced_subset, feature_stats, score_fmnist_samples

    test_images, test_labels = load_fashion_mnist(data_dir, split="test")
    reference = feature_stats(classifier, test_images)
    samples = score_fmnist_samples(images, labels, classifier=classifier, ref_stats=reference)
    t0 = time.time()
    floors, real = {}, {}
    for split, in_reference in FLOOR_SPLITS.items():
        x, y = (test_images, test_labels) if split == "test" else load_fashion_mnist(data_dir, split=split)
        chosen = balanced_subset(y, per_class, FLOOR_SEED)
        real[split] = x[chosen], y[chosen]
        scores = score_fmnist_samples(*real[split], classifier=classifier, ref_stats=reference)
        floors[split] = {**scores, "in_reference": in_reference, "seed": FLOOR_SEED}
    return DemoScores(samples, floors, *real["test"], time.time() - t0)
