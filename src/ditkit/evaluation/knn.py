"""An independent check of generated Fashion-MNIST-like samples: a k-nearest-neighbour vote on raw pixels
against labelled real images. It shares nothing with the shipped classifier, so an ordering that both
agree on is not one network's taste."""

from __future__ import annotations

import numpy as np
import torch

# Neighbours in the vote.
KNN_K = 5


def knn_predict(
    images: np.ndarray, train_images: np.ndarray, train_labels: np.ndarray, k: int = KNN_K, chunk: int = 500
) -> np.ndarray:
    """Labels (N,) by a `k`-nearest-neighbour vote in pixel space (Euclidean, pixels scaled to [0, 1]).

    Args:
        images: uint8 (N, H, W) queries.
        train_images: uint8 (M, H, W) labelled references.
        train_labels: int (M,) their labels.
        k: neighbours in the vote (ties: the smallest label).
        chunk: queries per distance matrix (memory: chunk x M floats).
    """
    refs = torch.from_numpy(train_images.reshape(len(train_images), -1).astype(np.float32) / 255)
    ref_sq = (refs**2).sum(1)  # (M,)
    labels = np.asarray(train_labels)
    classes = int(labels.max()) + 1
    out = []
    for start in range(0, len(images), chunk):
        q = torch.from_numpy(
            images[start : start + chunk].reshape(-1, refs.shape[1]).astype(np.float32) / 255
        )
        dist = (q**2).sum(1, keepdim=True) - 2 * q @ refs.T + ref_sq  # (n, M) squared distances
        votes = labels[dist.topk(k, largest=False).indices.numpy()]  # (n, k)
        out.append(np.array([np.bincount(v, minlength=classes).argmax() for v in votes]))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def knn_agreement(
    images: np.ndarray, labels: np.ndarray, train_images: np.ndarray, train_labels: np.ndarray, k: int = KNN_K
) -> float:
    """The share of samples whose `k`-NN vote is the class they were drawn for."""
    return float((knn_predict(images, train_images, train_labels, k) == np.asarray(labels)).mean())
