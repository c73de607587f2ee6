"""The independent 5-NN check: a vote of the nearest real images in pixel space."""

from __future__ import annotations

import numpy as np

from ditkit.evaluation.knn import knn_agreement, knn_predict


def test_the_vote_follows_the_nearest_images_and_ties_go_to_the_smallest_label():
    rng = np.random.default_rng(0)
    centres = rng.integers(0, 256, (3, 6, 6)).astype(np.uint8)
    refs = np.concatenate([np.clip(c.astype(int) + rng.integers(-3, 4, (5, 6, 6)), 0, 255) for c in centres])
    labels = np.repeat([2, 0, 1], 5)
    queries = np.clip(centres.astype(int) + 2, 0, 255).astype(np.uint8)
    assert knn_predict(queries, refs.astype(np.uint8), labels, chunk=2).tolist() == [2, 0, 1]
    assert knn_agreement(queries, np.array([2, 0, 0]), refs.astype(np.uint8), labels) == 2 / 3
    tie = knn_predict(centres[:1], refs[[0, 1, 5, 6]].astype(np.uint8), np.array([3, 3, 1, 1]), k=4)
    assert tie.tolist() == [1]
