"""Closed-form pieces of the variational bound: Gaussian KL and the discretised Gaussian decoder."""

from __future__ import annotations

import math

import torch
from torch import Tensor

# Data in [-1, 1] quantised to 256 levels: each bin is 2/255 wide (Ho et al. 2020, eq. 13).
BIN_HALF_WIDTH = 1.0 / 255.0
# Values beyond +-0.999 sit in the first/last bin, which extends to -inf/+inf (Ho et al. 2020, eq. 13).
EDGE = 0.999
# Floor on probabilities before the log, as in guided-diffusion, so an empty bin gives a finite loss.
MIN_PROB = 1e-12


def mean_flat(x: Tensor) -> Tensor:
    """Mean over every dimension but the first: (B, ...) -> (B,)."""
    return x.mean(dim=tuple(range(1, x.ndim)))


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) elementwise, in nats (broadcasting)."""
    return 0.5 * (
        -1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2)
    )


def discretized_gaussian_log_likelihood(x: Tensor, means: Tensor, log_scales: Tensor) -> Tensor:
    """log P(x) for data quantised to 256 bins in [-1, 1] under N(means, exp(log_scales)^2), in nats.

    Uses the exact normal CDF (guided-diffusion uses a tanh approximation of it), and evaluates
    the bin mass in whichever tail keeps the difference of CDFs accurate.

    Args:
        x: (B, C, H, W) data in [-1, 1].
        means, log_scales: tensors broadcastable to x.

    Returns:
        (B, C, H, W) log-probabilities.
    """
    inv_std = torch.exp(-log_scales)
    upper = inv_std * (x - means + BIN_HALF_WIDTH)
    lower = inv_std * (x - means - BIN_HALF_WIDTH)
    log_floor = math.log(MIN_PROB)
    log_cdf_upper = torch.special.log_ndtr(upper).clamp(min=log_floor)  # first bin: P(X <= x + 1/255)
    log_sf_lower = torch.special.log_ndtr(-lower).clamp(min=log_floor)  # last bin: P(X > x - 1/255)
    # Phi(b) - Phi(a) == Phi(-a) - Phi(-b); take the form whose terms are far from 1.
    upper_tail = (lower + upper) > 0
    mass = torch.where(
        upper_tail,
        _std_normal_cdf(-lower) - _std_normal_cdf(-upper),
        _std_normal_cdf(upper) - _std_normal_cdf(lower),
    )
    log_mass = torch.log(mass.clamp(min=MIN_PROB))
    return torch.where(x < -EDGE, log_cdf_upper, torch.where(x > EDGE, log_sf_lower, log_mass))


def _std_normal_cdf(x: Tensor) -> Tensor:
    """Phi(x) via erfc, accurate in the lower tail (torch.special.ndtr loses it below about -5 on CPU)."""
    return 0.5 * torch.special.erfc(-x / math.sqrt(2.0))


def nats_to_bits(x: Tensor) -> Tensor:
    """Convert nats to bits."""
    return x / math.log(2.0)
