"""Inception Score (Salimans et al. 2016) as the ADM evaluator computes it.

IS = exp(E_x KL(p(y|x) || p(y))), with p(y|x) the softmax of Inception's 1008 logits and p(y) its
mean over a split. ADM (after improved-gan) cuts the samples into consecutive splits of 5,000 (ten
splits for the paper's 50,000 samples; a shorter last split is kept) and averages the splits'
scores. Computed in float64 from log-probabilities, so zero probabilities cannot give NaN.
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax, logsumexp

from ditkit.errors import UserError

# ADM's `compute_inception_score(split_size=5000)`: 10 splits of 50,000 samples.
IS_SPLIT_SIZE = 5000


def inception_score(logits: np.ndarray, split_size: int = IS_SPLIT_SIZE) -> float:
    """Inception Score of (N, C) logits, averaged over consecutive splits of `split_size` rows.

    Args:
        logits: (N, C) pre-softmax scores (Inception: pool_3 @ W, C = 1008).
        split_size: rows per split; ADM uses 5,000.

    Returns:
        The mean of exp(mean KL(p(y|x) || p(y))) over the splits; 1 for identical predictions,
        C for confident predictions spread evenly over C classes.
    """
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or len(logits) == 0:
        raise UserError(f"logits must be (N >= 1, C), got shape {logits.shape}")
    if not np.isfinite(logits).all():
        raise UserError("logits hold NaN or inf; the images or the network weights are broken")
    scores = []
    for start in range(0, len(logits), split_size):
        log_p = log_softmax(logits[start : start + split_size], axis=1)  # (n, C) log p(y|x)
        log_marginal = logsumexp(log_p, axis=0) - np.log(len(log_p))  # (C,) log p(y)
        kl = (np.exp(log_p) * (log_p - log_marginal)).sum(axis=1).mean()
        scores.append(np.exp(kl))
    return float(np.mean(scores))
