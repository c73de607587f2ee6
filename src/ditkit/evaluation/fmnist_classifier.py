"""An offline quality metric for Fashion-MNIST: a small CNN classifier shipped with the package.

Inception-based metrics need a 95 MB download; this classifier (trained by
`scripts/train_fmnist_classifier.py` on the 60,000 training images, weights under 1 MB) is used
the same way without any download:

- **agreement**: the fraction of class-conditional samples that the classifier labels as the class
  they were conditioned on (the training issue asks for at least 80%);
- **Frechet distance** between Gaussians fitted to the classifier's 128-d penultimate features of the
  samples and of the real test set (10,000 images), as FID does with Inception's pool features.

Inputs are 28x28 Fashion-MNIST images or 32x32 ones made by zero-padding 2 pixels on each side (as a
demo that trains at 32x32 does); 32x32 inputs are centre-cropped back to 28x28 before classification.
"""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from ditkit.errors import UserError

# Fashion-MNIST images are 28x28 (Xiao et al. 2017).
FMNIST_SIZE = 28
# A 32x32 input is taken to be a 28x28 image zero-padded by 2 pixels per side, as the demo trains.
PADDED_SIZE = 32
# Dimension of the penultimate features used for the Frechet distance.
FEATURE_DIM = 128
NUM_CLASSES = 10
# The weights file shipped inside the package (package data `weights/*.safetensors`).
WEIGHTS_NAME = "fmnist_classifier.safetensors"
# Written into the weights' metadata; a file with another value is refused.
ARCHITECTURE = "ditkit-fmnist-cnn-v1"


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class FashionMNISTClassifier(nn.Module):
    """Three conv blocks and two linear layers, about 131k parameters.

    Input: float (N, 1, 28, 28) in [0, 1]. `features(x)` gives the (N, 128) penultimate activations,
    `forward(x)` the (N, 10) logits.
    """

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_conv_bn_relu(1, 32),
            nn.MaxPool2d(2),  # (N, 32, 14, 14)
            *_conv_bn_relu(32, 64),
            nn.MaxPool2d(2),  # (N, 64, 7, 7)
            *_conv_bn_relu(64, 64),
            nn.MaxPool2d(2),  # (N, 64, 3, 3)
            nn.Flatten(),  # (N, 576)
            nn.Linear(64 * 3 * 3, FEATURE_DIM),
            nn.ReLU(),
        )
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(FEATURE_DIM, NUM_CLASSES)
        self.metadata: dict[str, str] = {}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 28, 28) in [0, 1] -> (N, 128) penultimate features."""
        return self.body((x - 0.5) / 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 28, 28) in [0, 1] -> (N, 10) logits."""
        return self.head(self.dropout(self.features(x)))


def default_weights_path() -> Path:
    """The path of the weights shipped with the package."""
    return Path(str(importlib.resources.files("ditkit") / "weights" / WEIGHTS_NAME))


def load_fmnist_classifier(path: str | os.PathLike[str] | None = None) -> FashionMNISTClassifier:
    """Load the Fashion-MNIST classifier (the shipped weights unless `path` is given), in eval mode.

    The safetensors metadata (architecture, measured test accuracy, training settings) is kept in
    `model.metadata`.
    """
    from safetensors import SafetensorError
    from safetensors.torch import safe_open

    path = Path(path) if path is not None else default_weights_path()
    if not path.is_file():
        raise UserError(
            f"no classifier weights at {path}; run `python scripts/train_fmnist_classifier.py` to make them"
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise UserError(f"{path} is not a readable safetensors file ({err}); retrain or reinstall") from err
    if metadata.get("architecture") != ARCHITECTURE:
        raise UserError(f"{path} holds {metadata.get('architecture')!r}, not the {ARCHITECTURE} classifier")
    model = FashionMNISTClassifier()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[1:2] or [str(err)]
        raise UserError(f"{path} does not match the classifier's layout: {first[0].strip()}") from err
    model.metadata = metadata
    # channels_last: about 1.5x faster convolutions on CPU here.
    return model.to(memory_format=torch.channels_last).eval().requires_grad_(False)  # type: ignore[call-overload]


def to_classifier_input(images: np.ndarray) -> np.ndarray:
    """Bring uint8 images to (N, 28, 28).

    Accepts (N, H, W), (N, H, W, 1) or (N, H, W, 3) (RGB is averaged to grey) with H = W = 28, or
    32 (centre-cropped to 28, i.e. the 2-pixel padding of each side removed).
    """
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise UserError(f"images must be uint8 in 0..255, got {images.dtype}")
    if images.ndim == 4 and images.shape[-1] in (1, 3):
        images = images[..., 0] if images.shape[-1] == 1 else images.mean(axis=-1).round().astype(np.uint8)
    if (
        images.ndim != 3
        or images.shape[1] != images.shape[2]
        or images.shape[1] not in (FMNIST_SIZE, PADDED_SIZE)
    ):
        raise UserError(
            f"Fashion-MNIST samples must be (N, 28|32, 28|32[, 1|3]) uint8 images, got shape {images.shape}"
        )
    if images.shape[1] == PADDED_SIZE:
        margin = (PADDED_SIZE - FMNIST_SIZE) // 2
        images = images[:, margin:-margin, margin:-margin]
    return images


@torch.inference_mode()
def classify(
    model: FashionMNISTClassifier, images: np.ndarray, batch_size: int = 1000, device: str = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """Run the classifier over uint8 images (any layout `to_classifier_input` accepts).

    Returns:
        features: float32 (N, 128); logits: float32 (N, 10).
    """
    images = to_classifier_input(images)
    model = model.to(device)
    feats, logits = [], []
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(np.array(images[start : start + batch_size])).to(device)
        x = x.float().div(255).unsqueeze(1).contiguous(memory_format=torch.channels_last)  # (B, 1, 28, 28)
        f = model.features(x)
        feats.append(f.float().cpu().numpy())
        logits.append(model.head(f).float().cpu().numpy())
    if not feats:
        raise UserError("no images to classify")
    return np.concatenate(feats), np.concatenate(logits)


class FeatureStats(NamedTuple):
    """A Gaussian fitted to the classifier features of `num_images` images: mean (128,), covariance (128, 128)."""

    mu: np.ndarray
    sigma: np.ndarray
    num_images: int


def feature_stats(model: FashionMNISTClassifier, images: np.ndarray, device: str = "cpu") -> FeatureStats:
    """The classifier's feature statistics of real images (e.g. the test set, the Frechet reference)."""
    from ditkit.evaluation.frechet import gaussian_stats

    feats, _ = classify(model, images, device=device)
    return FeatureStats(*gaussian_stats(feats), len(feats))


def balanced_subset(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Indices of `per_class` images of each class (fewer where a class has fewer), drawn without
    replacement by `seed` alone, class-major (class 0's first), like the demo's samples."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    picks = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in range(NUM_CLASSES)]
    return np.concatenate(picks)


def score_fmnist_samples(
    images: np.ndarray,
    labels: np.ndarray | None = None,
    ref_images: np.ndarray | None = None,
    *,
    classifier: FashionMNISTClassifier | None = None,
    data_root: str | os.PathLike[str] | None = None,
    device: str = "cpu",
    ref_stats: FeatureStats | None = None,
) -> dict[str, object]:
    """Score generated Fashion-MNIST samples with the shipped classifier.

    Args:
        images: uint8 (N, H, W), (N, H, W, 1) or (N, H, W, 3), H = W = 28 or 32 (centre-cropped to 28).
        labels: int (N,) classes the samples were conditioned on; without them no agreement is reported.
        ref_images: uint8 real images to compare against; defaults to the Fashion-MNIST test set
            (10,000 images) read from `data_root`.
        classifier: a loaded classifier; defaults to the shipped one.
        data_root: folder with the Fashion-MNIST IDX files (default: Debian's location).
        device: where to run the classifier.
        ref_stats: the reference's `feature_stats`, computed once when several sets are scored
            against it (then `ref_images` and `data_root` are not used).

    Returns:
        {"frechet_distance", "num_samples", "num_reference"} and, with labels, "agreement" (fraction of
        samples classified as their label) and "per_class_agreement" (class name -> fraction).
    """
    from ditkit.data.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist
    from ditkit.evaluation.frechet import frechet_distance, gaussian_stats

    model = classifier if classifier is not None else load_fmnist_classifier()
    if ref_stats is None:
        if ref_images is None:
            ref_images, _ = load_fashion_mnist(data_root, split="test")
        ref_stats = feature_stats(model, ref_images, device)
    feats, logits = classify(model, images, device=device)
    result: dict[str, object] = {
        "frechet_distance": frechet_distance(*gaussian_stats(feats), ref_stats.mu, ref_stats.sigma),
        "num_samples": len(feats),
        "num_reference": ref_stats.num_images,
    }
    if labels is not None:
        labels = np.asarray(labels).reshape(-1).astype(np.int64)
        if len(labels) != len(feats):
            raise UserError(f"{len(labels)} labels for {len(feats)} images; they must match one to one")
        if labels.min() < 0 or labels.max() >= NUM_CLASSES:
            raise UserError(f"labels must be Fashion-MNIST classes 0..9, got {labels.min()}..{labels.max()}")
        hit = logits.argmax(axis=1) == labels
        result["agreement"] = float(hit.mean())
        result["per_class_agreement"] = {
            name: float(hit[labels == c].mean())
            for c, name in enumerate(FASHION_MNIST_CLASSES)
            if (labels == c).any()
        }
    return result


def evaluate_fmnist_npz(
    samples: str | os.PathLike[str],
    data_root: str | os.PathLike[str] | None = None,
    classifier: str | os.PathLike[str] | None = None,
    device: str = "cpu",
) -> dict[str, object]:
    """`score_fmnist_samples` on a sample `.npz` (`arr_0` images, labels in `labels` or `arr_1`).

    Without labels only the Frechet distance is reported.
    """
    from ditkit.evaluation.npz_io import NpzImages, read_labels

    images = NpzImages(samples)
    grey = np.concatenate([to_classifier_input(b) for b in images.batches(4096)])  # (N, 28, 28)
    return score_fmnist_samples(
        grey,
        read_labels(samples),
        classifier=load_fmnist_classifier(classifier),
        data_root=data_root,
        device=device,
    )
