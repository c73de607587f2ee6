"""Improved precision and recall (Kynkaanniemi et al. 2019), as the ADM evaluator computes them.

Each set of features spans a "manifold": the union of balls around its points whose radius is the
distance to the point's k-th nearest neighbour (k = 3, the point itself not counted). Precision is
the fraction of samples inside the reference manifold, recall the fraction of reference points
inside the sample manifold. Distances are squared Euclidean, computed block by block so memory
stays bounded (`chunk` x `chunk` floats at a time) for 50,000 x 10,000 feature sets.

ADM computes the distance blocks in float16 (falling back to float32 on overflow); here they are
float32, so borderline points can land differently and the rates may differ in the 3rd-4th decimal.
"""

from __future__ import annotations

import numpy as np
import torch

from ditkit.errors import UserError

# Neighbourhood size of the ADM evaluator's ManifoldEstimator (nhood_sizes=(3,)).
PR_NEIGHBOURS = 3
# Reference images used for precision/recall: ADM's reference batches hold 10,000 images.
PR_REFERENCE_SIZE = 10_000
# Rows/columns per distance block.
DEFAULT_CHUNK = 5000


def _as_tensor(x: np.ndarray | torch.Tensor, device: str | torch.device) -> torch.Tensor:
    t = torch.as_tensor(x).to(device=device, dtype=torch.float32)
    if t.ndim != 2:
        raise UserError(f"features must be (N, D), got {tuple(t.shape)}")
    return t


def pairwise_sq_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances (A, B) between rows of a (A, D) and b (B, D), clamped at 0."""
    d = a.pow(2).sum(1, keepdim=True) - 2 * a @ b.T + b.pow(2).sum(1)[None, :]
    return d.clamp_min_(0)


def manifold_radii(
    features: np.ndarray | torch.Tensor,
    k: int = PR_NEIGHBOURS,
    chunk: int = DEFAULT_CHUNK,
    device: str = "cpu",
) -> torch.Tensor:
    """Squared distance from each point to its k-th nearest neighbour, itself excluded: (N,).

    As in ADM: the (k+1)-th smallest entry of the point's distance row, which includes its zero
    distance to itself.
    """
    x = _as_tensor(features, device)
    if len(x) <= k:
        raise UserError(f"need more than {k} feature vectors for {k}-NN radii, got {len(x)}")
    radii = torch.empty(len(x), dtype=torch.float32, device=device)
    for r0 in range(0, len(x), chunk):
        rows = x[r0 : r0 + chunk]
        best = torch.empty(len(rows), 0, device=device)  # running k+1 smallest distances per row
        for c0 in range(0, len(x), chunk):
            d = pairwise_sq_distances(rows, x[c0 : c0 + chunk])
            best = torch.cat([best, d], dim=1).topk(k + 1, dim=1, largest=False).values
        radii[r0 : r0 + len(rows)] = best[:, k]
    return radii


def precision_recall(
    ref_features: np.ndarray | torch.Tensor,
    sample_features: np.ndarray | torch.Tensor,
    k: int = PR_NEIGHBOURS,
    chunk: int = DEFAULT_CHUNK,
    device: str = "cpu",
) -> tuple[float, float]:
    """Improved precision and recall of samples against a reference.

    Args:
        ref_features: (N_ref, D) reference features (ADM: Inception pool_3 of 10,000 real images).
        sample_features: (N_sample, D) features of the generated samples (ADM: all of them).
        k: neighbourhood size of the manifold radii.
        chunk: rows and columns per distance block.
        device: where the distance blocks are computed.

    Returns:
        (precision, recall) in [0, 1].
    """
    ref, sam = _as_tensor(ref_features, device), _as_tensor(sample_features, device)
    if ref.shape[1] != sam.shape[1]:
        raise UserError(f"feature widths differ: reference {ref.shape[1]}, samples {sam.shape[1]}")
    ref_radii = manifold_radii(ref, k, chunk, device)
    sam_radii = manifold_radii(sam, k, chunk, device)
    sample_in = torch.zeros(len(sam), dtype=torch.bool, device=device)  # inside the reference manifold
    ref_in = torch.zeros(len(ref), dtype=torch.bool, device=device)  # inside the sample manifold
    for r0 in range(0, len(ref), chunk):
        r1 = min(r0 + chunk, len(ref))
        for c0 in range(0, len(sam), chunk):
            c1 = min(c0 + chunk, len(sam))
            d = pairwise_sq_distances(ref[r0:r1], sam[c0:c1])  # (rows of ref, cols of samples)
            sample_in[c0:c1] |= (d <= ref_radii[r0:r1, None]).any(dim=0)
            ref_in[r0:r1] |= (d <= sam_radii[None, c0:c1]).any(dim=1)
    return float(sample_in.float().mean()), float(ref_in.float().mean())
