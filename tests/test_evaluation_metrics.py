"""Frechet distance, streaming statistics, Inception Score and precision/recall against references."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from ditkit.errors import UserError
from ditkit.evaluation.frechet import FeatureStats, frechet_distance, gaussian_stats
from ditkit.evaluation.inception_score import inception_score
from ditkit.evaluation.precision_recall import manifold_radii, precision_recall


def random_cov(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.standard_normal((d, 2 * d))
    return a @ a.T / (2 * d) + 0.1 * np.eye(d)


def frechet_by_eigh(mu1, s1, mu2, s2) -> float:
    """Tr((S1 S2)^1/2) = Tr((S1^1/2 S2 S1^1/2)^1/2), a symmetric problem solved with eigh (no sqrtm)."""
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(w.clip(0))) @ v.T
    inner = np.linalg.eigvalsh(root1 @ s2 @ root1)
    return float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(inner.clip(0)).sum())


@pytest.mark.parametrize("d", [1, 5, 64])
def test_frechet_matches_an_eigh_reference_on_random_gaussians(d):
    rng = np.random.default_rng(d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s1, s2 = random_cov(rng, d), random_cov(rng, d)
    got = frechet_distance(mu1, s1, mu2, s2)
    assert got == pytest.approx(frechet_by_eigh(mu1, s1, mu2, s2), rel=1e-9, abs=1e-9)
    assert frechet_distance(mu1, s1, mu2, s2, method="eigh") == pytest.approx(got, rel=1e-9, abs=1e-9)
    assert got == pytest.approx(frechet_distance(mu2, s2, mu1, s1), rel=1e-9)  # symmetric


def test_frechet_closed_forms():
    # One dimension: (m1 - m2)^2 + (s1 - s2)^2 with s the standard deviations.
    assert frechet_distance(
        np.array([1.0]), np.array([[4.0]]), np.array([-2.0]), np.array([[9.0]])
    ) == pytest.approx(9.0 + 1.0)
    # Diagonal covariances: |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2.
    a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    mu = np.array([0.0, 3.0, 4.0])
    assert frechet_distance(mu, np.diag(a), np.zeros(3), np.diag(b)) == pytest.approx(25.0 + 4.0 + 1.0)
    # Same covariance: only the means count.
    s = random_cov(np.random.default_rng(0), 6)
    assert frechet_distance(np.ones(6), s, np.zeros(6), s) == pytest.approx(6.0, abs=1e-8)


def test_fid_of_a_batch_with_itself_is_zero():
    x = np.random.default_rng(1).standard_normal((500, 32)) ** 2
    mu, sigma = gaussian_stats(x)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-8


def test_singular_covariances_give_a_finite_distance():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((10, 40)), rng.standard_normal((10, 40)) + 1  # N < D: rank-9 covariances
    (mu1, s1), (mu2, s2) = gaussian_stats(x), gaussian_stats(y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sqrtm may call the product singular, depending on scipy
        fd = frechet_distance(mu1, s1, mu2, s2)
    assert fd == pytest.approx(frechet_by_eigh(mu1, s1, mu2, s2), rel=1e-4)
    assert frechet_distance(mu1, s1, mu2, s2, method="eigh") == pytest.approx(fd, rel=1e-4)


def test_frechet_rejects_mismatched_or_broken_statistics():
    with pytest.raises(UserError, match="do not match"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(UserError, match="NaN"):
        frechet_distance(np.zeros(2), np.eye(2), np.array([0.0, np.nan]), np.eye(2))
    with pytest.raises(UserError, match="not positive semi-definite"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), -np.eye(2))


@pytest.mark.parametrize("splits", [[100], [1, 99], [33, 33, 34], [2, 60, 38]])
def test_streaming_stats_equal_numpy_on_all_rows(splits):
    x = np.random.default_rng(3).standard_normal((100, 16)) * 0.01 + 1e3  # large mean, small spread
    stats = FeatureStats(16)
    for part in np.split(x, np.cumsum(splits)[:-1]):
        stats.update(part)
    mu, cov = stats.mean_cov()
    assert np.allclose(mu, x.mean(0), rtol=0, atol=1e-9)
    assert np.allclose(cov, np.cov(x, rowvar=False), rtol=1e-7, atol=1e-14)


def test_streaming_stats_take_torch_batches_and_need_two_rows():
    x = torch.randn(20, 8, generator=torch.Generator().manual_seed(0))
    stats = FeatureStats(8)
    stats.update(x[:5])
    stats.update(x[5:])
    assert np.allclose(stats.mean_cov()[1], np.cov(x.double().numpy(), rowvar=False), atol=1e-12)
    with pytest.raises(UserError, match="at least 2"):
        FeatureStats(4).mean_cov()
    with pytest.raises(ValueError):
        stats.update(torch.zeros(3, 7))


def adm_inception_score(logits: np.ndarray, split_size: int) -> float:
    """ADM's formula, straight from softmax probabilities."""
    e = np.exp(logits - logits.max(1, keepdims=True))
    preds = e / e.sum(1, keepdims=True)
    scores = []
    for i in range(0, len(preds), split_size):
        part = preds[i : i + split_size]
        kl = part * (np.log(part) - np.log(part.mean(0, keepdims=True)))
        scores.append(np.exp(kl.sum(1).mean()))
    return float(np.mean(scores))


def test_inception_score_closed_forms():
    assert inception_score(np.zeros((50, 1008))) == pytest.approx(1.0)  # uniform predictions
    one_hot = np.full((40, 10), -1e4)
    one_hot[np.arange(40), np.arange(40) % 10] = 1e4  # confident, evenly spread over 10 classes
    assert inception_score(one_hot) == pytest.approx(10.0)
    one_hot_same = np.full((40, 10), -1e4)
    one_hot_same[:, 3] = 1e4  # confident, all the same class
    assert inception_score(one_hot_same) == pytest.approx(1.0)
    # Splits of 20: each split covers classes 0..9 twice -> 10; of 10 rows with 5 classes each -> 5.
    spread5 = np.full((40, 10), -1e4)
    spread5[np.arange(40), np.r_[np.arange(20) % 5, 5 + np.arange(20) % 5]] = 1e4
    assert inception_score(spread5, split_size=20) == pytest.approx(5.0)
    assert inception_score(spread5, split_size=40) == pytest.approx(10.0)


def test_inception_score_matches_adm_formula_with_a_short_last_split():
    logits = np.random.default_rng(4).standard_normal((1234, 1008)) * 3
    assert inception_score(logits, split_size=500) == pytest.approx(
        adm_inception_score(logits, 500), rel=1e-10
    )


def brute_force_pr(ref: np.ndarray, sam: np.ndarray, k: int = 3) -> tuple[float, float]:
    def radii(x):
        d = ((x[:, None] - x[None]) ** 2).sum(-1)
        return np.sort(d, axis=1)[:, k]  # index 0 is the point itself

    d = ((ref[:, None] - sam[None]) ** 2).sum(-1)  # (R, S)
    precision = (d <= radii(ref)[:, None]).any(0).mean()
    recall = (d <= radii(sam)[None, :]).any(1).mean()
    return float(precision), float(recall)


def test_precision_recall_match_brute_force_with_small_chunks():
    rng = np.random.default_rng(5)
    ref = rng.standard_normal((57, 6))
    sam = rng.standard_normal((43, 6)) * 1.3 + 0.4
    expected = brute_force_pr(ref, sam)
    assert precision_recall(ref, sam, chunk=8) == pytest.approx(expected)
    assert precision_recall(ref, sam, chunk=1000) == pytest.approx(expected)
    x = rng.standard_normal((30, 4))
    d = ((x[:, None] - x[None]) ** 2).sum(-1)
    assert np.allclose(manifold_radii(x, k=3, chunk=7).numpy(), np.sort(d, 1)[:, 3], atol=1e-5)


def test_precision_recall_on_manifolds_with_known_overlap():
    rng = np.random.default_rng(6)
    ref = rng.uniform(0, 1, (2000, 2))
    same = rng.uniform(0, 1, (2000, 2))
    p, r = precision_recall(ref, same)
    assert p > 0.95 and r > 0.95
    far = same + 10
    assert precision_recall(ref, far) == (0.0, 0.0)
    # Mode dropping: samples only cover the left half -> full precision, about half the recall.
    left = rng.uniform(0, 1, (2000, 2)) * np.array([0.5, 1.0])
    p, r = precision_recall(ref, left)
    assert p > 0.95 and 0.45 < r < 0.6
    # Half the samples are off the manifold -> precision about one half, recall kept.
    mixed = np.concatenate([same[:1000], far[:1000]])
    p, r = precision_recall(ref, mixed)
    assert 0.45 < p < 0.55 and r > 0.9


def test_precision_recall_input_errors():
    with pytest.raises(UserError, match="more than 3"):
        precision_recall(np.zeros((3, 2)), np.zeros((10, 2)))
    with pytest.raises(UserError, match="widths differ"):
        precision_recall(np.zeros((10, 2)), np.zeros((10, 3)))
