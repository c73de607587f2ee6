"""Frechet distance between Gaussians, and the float64 feature statistics it is computed from.

FID (Heusel et al. 2017) fits a Gaussian to each set of features and reports

    d^2 = |mu_1 - mu_2|^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2)).

The matrix square root is scipy's `sqrtm`, as in the ADM evaluator (and TTUR / pytorch-fid): an
identical method gives identical numbers from identical statistics.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy import linalg

from ditkit.errors import UserError

# Added to both diagonals when S_1 S_2 is too singular for sqrtm (the ADM evaluator's default).
SINGULAR_EPS = 1e-6
# Largest imaginary part tolerated on sqrtm's diagonal before the result is declared broken (ADM's).
IMAG_ATOL = 1e-3


def frechet_distance(
    mu1: np.ndarray,
    sigma1: np.ndarray,
    mu2: np.ndarray,
    sigma2: np.ndarray,
    eps: float = SINGULAR_EPS,
    method: str = "sqrtm",
) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    Args:
        mu1, mu2: means, (D,).
        sigma1, sigma2: covariances, (D, D).
        eps: offset added to both diagonals if the product is singular ("sqrtm" only).
        method: "sqrtm" (scipy's matrix square root of S1 S2, as ADM; the default) or "eigh"
            (Tr (S1^1/2 S2 S1^1/2)^1/2 from two symmetric eigendecompositions: the same quantity,
            several times faster at D = 2048, equal to ADM's up to rounding).

    Returns:
        The squared Frechet distance (what FID reports), a Python float.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (len(mu1), len(mu1)):
        raise UserError(
            f"statistics do not match: means {mu1.shape} and {mu2.shape}, covariances {sigma1.shape} and "
            f"{sigma2.shape}; were they computed with the same network and layer?"
        )
    for name, arr in (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2)):
        if not np.isfinite(arr).all():
            raise UserError(f"{name} holds NaN or inf; the features it was computed from are broken")
    if method == "sqrtm":
        tr_covmean = _trace_sqrtm(sigma1, sigma2, eps)
    elif method == "eigh":
        w, v = np.linalg.eigh(sigma1)
        root1 = (v * np.sqrt(w.clip(min=0))) @ v.T  # S1^1/2, symmetric
        tr_covmean = float(np.sqrt(np.linalg.eigvalsh(root1 @ sigma2 @ root1).clip(min=0)).sum())
    else:
        raise ValueError(f"unknown method {method!r}; use 'sqrtm' or 'eigh'")
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def _trace_sqrtm(sigma1: np.ndarray, sigma2: np.ndarray, eps: float) -> float:
    """Tr (S1 S2)^1/2 with scipy's sqrtm, retrying with eps on the diagonals as ADM does."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)  # singularity is handled below
        covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        warnings.warn(f"S1 S2 is singular; adding {eps} to the covariance diagonals", stacklevel=3)
        offset = np.eye(len(sigma1)) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        # Rounding can leave a tiny imaginary part; a large one means the statistics are not covariances.
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=IMAG_ATOL):
            raise UserError(
                f"sqrtm of S1 S2 has an imaginary part of {np.abs(covmean.imag).max():.3g}; "
                "the covariances are not positive semi-definite"
            )
        covmean = covmean.real
    return float(np.trace(covmean))


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of (N, D) features, in float64."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise UserError(f"need (N >= 2, D) features for a covariance, got shape {x.shape}")
    return x.mean(axis=0), np.cov(x, rowvar=False)


class FeatureStats:
    """Mean and covariance of features that arrive in batches, accumulated in float64.

    Sums are taken about a shift (the first batch's mean) so that the covariance keeps its precision
    when the mean is large next to the spread. Matches `np.mean` / `np.cov(ddof=1)` of all the rows.
    """

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.count = 0
        self._shift: torch.Tensor | None = None
        self._sum = torch.zeros(dim, dtype=torch.float64)
        self._outer = torch.zeros(dim, dim, dtype=torch.float64)

    def update(self, features: torch.Tensor | np.ndarray) -> None:
        """Add a batch of (B, D) features (any float dtype, any device)."""
        x = torch.as_tensor(features).to(dtype=torch.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected (B, {self.dim}) features, got {tuple(x.shape)}")
        if len(x) == 0:
            return
        if self._shift is None:
            self._shift = x.mean(dim=0).cpu()
            self._sum, self._outer = self._sum.to(x.device), self._outer.to(x.device)
        x = x - self._shift.to(x.device)
        self._sum += x.sum(dim=0)
        self._outer += x.T @ x
        self.count += len(x)

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean (D,) and unbiased covariance (D, D) as float64 numpy arrays."""
        if self.count < 2 or self._shift is None:
            raise UserError(f"need at least 2 images for a covariance, got {self.count}")
        mean_shifted = (self._sum / self.count).cpu()
        cov = (self._outer.cpu() - self.count * torch.outer(mean_shifted, mean_shifted)) / (self.count - 1)
        return (mean_shifted + self._shift).numpy(), cov.numpy()
