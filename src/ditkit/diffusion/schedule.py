"""Noise schedules and respacing: the diffusion process as data (float64 tables).

A `Schedule` holds the betas of the chain it describes and, for each of its steps, the
timestep of the original (training) chain that the step stands for. Respacing keeps a
subset of the original timesteps and recomputes the betas from alpha_bar, so that the
kept steps have exactly the original marginals q(x_t | x_0) (Nichol & Dhariwal 2021, sec. 4).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ditkit.choices import DEFAULT_DIFFUSION_STEPS, NOISE_SCHEDULES
from ditkit.errors import UserError

# Linear schedule end points for T = 1000 (Ho et al. 2020, sec. 4); scaled by 1000 / T for other T
# (Nichol & Dhariwal 2021, guided-diffusion `get_named_beta_schedule`).
LINEAR_BETA_START = 1e-4
LINEAR_BETA_END = 0.02
# Cosine schedule offset s and beta ceiling (Nichol & Dhariwal 2021, eq. 17 and the text after it).
COSINE_OFFSET = 0.008
COSINE_MAX_BETA = 0.999

Spacing = str | Sequence[int]


def linear_betas(num_steps: int) -> np.ndarray:
    """Betas rising linearly from 1e-4 to 0.02 (for T = 1000), as float64, shape (T,)."""
    scale = DEFAULT_DIFFUSION_STEPS / num_steps
    return np.linspace(scale * LINEAR_BETA_START, scale * LINEAR_BETA_END, num_steps, dtype=np.float64)


def cosine_betas(num_steps: int) -> np.ndarray:
    """Betas of the cosine schedule alpha_bar(t) = cos^2((t/T + s) / (1 + s) * pi/2), float64, shape (T,)."""

    def alpha_bar(frac: float) -> float:
        return math.cos((frac + COSINE_OFFSET) / (1 + COSINE_OFFSET) * math.pi / 2) ** 2

    betas = [
        min(1 - alpha_bar((i + 1) / num_steps) / alpha_bar(i / num_steps), COSINE_MAX_BETA)
        for i in range(num_steps)
    ]
    return np.array(betas, dtype=np.float64)


def named_betas(noise_schedule: str, num_steps: int) -> np.ndarray:
    """Betas of a named schedule ("linear" or "cosine") with `num_steps` steps."""
    if num_steps < 1:
        raise UserError(f"diffusion_steps must be at least 1, got {num_steps}")
    if noise_schedule == "linear":
        return linear_betas(num_steps)
    if noise_schedule == "cosine":
        return cosine_betas(num_steps)
    raise UserError(f"unknown noise schedule {noise_schedule!r}; choose one of {', '.join(NOISE_SCHEDULES)}")


def space_timesteps(num_steps: int, spacing: Spacing, alphas_cumprod: np.ndarray | None = None) -> list[int]:
    """Which of `num_steps` timesteps to keep, ascending.

    Args:
        num_steps: length of the chain being respaced.
        spacing: one of
            "250": 250 evenly spaced steps, both ends included (guided-diffusion);
            "10,15,20": the chain cut into equal sections with that many evenly spaced steps each;
            "ddim50": every k-th step from 0, with k chosen to give exactly 50 (guided-diffusion);
            "uniform20": 20 time-uniform steps ending above t = 0, round(linspace(0, T-1, 21))[1:]
                (DPM-Solver's "time_uniform", diffusers' "linspace");
            "logsnr20": 20 steps uniform in log-SNR from t = T-1 to t = 0, each rounded to the
                nearest timestep (DPM-Solver's "logSNR"; needs `alphas_cumprod`);
            "quad20": 20 steps at round((T-1) (k/19)^2), dense near t = 0 (DPM-Solver's "time_quadratic");
            or an explicit sequence of timesteps.
        alphas_cumprod: (num_steps,) alpha_bar of the chain, for "logsnr".
    """
    if not isinstance(spacing, str):
        kept = sorted({int(i) for i in spacing})
        if len(kept) != len(spacing) or not kept or kept[0] < 0 or kept[-1] >= num_steps:
            raise UserError(
                f"explicit timesteps must be distinct integers in [0, {num_steps}), got {spacing}"
            )
        return kept
    text = spacing.strip()
    for prefix, rule in (("ddim", _ddim_stride), ("uniform", _time_uniform), ("quad", _time_quadratic)):
        if text.startswith(prefix):
            return rule(num_steps, _count(text, prefix))
    if text.startswith("logsnr"):
        if alphas_cumprod is None:
            raise ValueError("logsnr spacing needs alphas_cumprod")
        return _logsnr_uniform(alphas_cumprod, _count(text, "logsnr"))
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        raise UserError(
            f"bad timestep respacing {spacing!r}; use e.g. '250', '10,20,30', 'ddim50', 'uniform20', "
            "'quad20' or 'logsnr20'"
        ) from None
    return _evenly_spaced_sections(num_steps, counts)


def _count(text: str, prefix: str) -> int:
    count = text[len(prefix) :]
    if not count.isdigit() or int(count) < 1:
        raise UserError(f"bad timestep respacing {text!r}; use e.g. '{prefix}50'")
    return int(count)


def _time_uniform(num_steps: int, count: int) -> list[int]:
    """round(linspace(0, T-1, count+1))[1:]: `count` time-uniform steps, t = 0 left to the final denoise."""
    if count >= num_steps:
        raise UserError(f"cannot take {count} time-uniform steps above t = 0 from {num_steps} steps")
    return np.linspace(0, num_steps - 1, count + 1).round().astype(np.int64)[1:].tolist()


def _time_quadratic(num_steps: int, count: int) -> list[int]:
    """round((T-1) (k / (count-1))^2) for k = 0..count-1: steps quadratically denser towards t = 0."""
    if count < 2:
        raise UserError("quad spacing needs at least 2 steps")
    kept = sorted({round((num_steps - 1) * (k / (count - 1)) ** 2) for k in range(count)})
    if len(kept) != count:
        raise UserError(
            f"{count} time-quadratic steps repeat timesteps of a {num_steps}-step chain; use fewer"
        )
    return kept


def _logsnr_uniform(alphas_cumprod: np.ndarray, count: int) -> list[int]:
    """The timesteps nearest to `count` points uniform in lambda = 0.5 log(alpha_bar / (1 - alpha_bar))."""
    lam = 0.5 * (np.log(alphas_cumprod) - np.log1p(-alphas_cumprod))  # decreasing in t
    targets = np.linspace(lam[-1], lam[0], count)
    kept = sorted({int(np.abs(lam - target).argmin()) for target in targets})
    if len(kept) != count:
        raise UserError(
            f"{count} log-SNR-uniform steps repeat timesteps of a {len(lam)}-step chain; use fewer"
        )
    return kept


def _ddim_stride(num_steps: int, desired: int) -> list[int]:
    """DDIM striding: range(0, T, k) for the stride k that yields the requested number of steps."""
    for stride in range(1, num_steps + 1):
        if len(range(0, num_steps, stride)) == desired:
            return list(range(0, num_steps, stride))
    raise UserError(f"no integer stride gives exactly {desired} of {num_steps} steps; try another count")


def _evenly_spaced_sections(num_steps: int, counts: list[int]) -> list[int]:
    """Cut the chain into len(counts) equal sections and keep counts[i] evenly spaced steps in section i."""
    size_per, extra = divmod(num_steps, len(counts))
    kept: list[int] = []
    start = 0
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if not 1 <= count <= size:
            raise UserError(f"cannot take {count} steps from a section of {size} steps")
        stride = 1.0 if count <= 1 else (size - 1) / (count - 1)
        # As guided-diffusion: positions accumulated by repeated addition and rounded half to even;
        # both decide near-ties (e.g. 21 of 1000 steps keeps 499 where k * stride would give 500).
        position = 0.0
        for _ in range(count):
            kept.append(start + round(position))
            position += stride
        start += size
    return sorted(set(kept))


@dataclass(frozen=True, eq=False)
class Schedule:
    """A discrete Gaussian diffusion chain: betas plus the original timestep each step stands for.

    Attributes:
        betas: (N,) float64 betas of this chain (recomputed from alpha_bar when respaced).
        timesteps: (N,) int64, ascending: the original timestep of each step; this is what the
            model is given.
        num_train_timesteps: length of the original chain (1000 for DiT).
    """

    betas: np.ndarray
    timesteps: np.ndarray
    num_train_timesteps: int

    def __post_init__(self) -> None:
        if self.betas.ndim != 1 or self.betas.shape != self.timesteps.shape or len(self.betas) == 0:
            raise ValueError("betas and timesteps must be non-empty 1-D arrays of the same length")
        if not ((self.betas > 0).all() and (self.betas <= 1).all()):
            raise ValueError("betas must lie in (0, 1]")

    def __len__(self) -> int:
        return len(self.betas)

    @cached_property
    def alphas_cumprod(self) -> np.ndarray:
        """alpha_bar_t = prod_{s<=t} (1 - beta_s), shape (N,)."""
        return np.cumprod(1.0 - self.betas)

    @cached_property
    def alphas_cumprod_prev(self) -> np.ndarray:
        """alpha_bar_{t-1}, with alpha_bar_{-1} = 1, shape (N,)."""
        return np.append(1.0, self.alphas_cumprod[:-1])

    @cached_property
    def log_betas(self) -> np.ndarray:
        """log beta_t: the upper end of the learned log-variance range (improved DDPM eq. 15)."""
        return np.log(self.betas)

    @cached_property
    def posterior_variance(self) -> np.ndarray:
        """beta~_t = beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t), the variance of q(x_{t-1} | x_t, x_0)."""
        return self.betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)

    @cached_property
    def posterior_log_variance_clipped(self) -> np.ndarray:
        """log beta~_t with beta~_0 (= 0) replaced by beta~_1: the lower end of the learned range."""
        if len(self) == 1:  # nothing to clip to: fall back to beta_0
            return self.log_betas.copy()
        return np.log(np.append(self.posterior_variance[1], self.posterior_variance[1:]))

    @cached_property
    def fixed_large_variance(self) -> np.ndarray:
        """beta_t with beta_0 replaced by beta~_1 (the "fixed large" choice of Ho et al. 2020)."""
        if len(self) == 1:
            return self.betas.copy()
        return np.append(self.posterior_variance[1], self.betas[1:])

    @cached_property
    def posterior_mean_coef1(self) -> np.ndarray:
        """Coefficient of x_0 in the posterior mean (Ho et al. 2020, eq. 7)."""
        return self.betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)

    @cached_property
    def posterior_mean_coef2(self) -> np.ndarray:
        """Coefficient of x_t in the posterior mean (Ho et al. 2020, eq. 7)."""
        return (1.0 - self.alphas_cumprod_prev) * np.sqrt(1.0 - self.betas) / (1.0 - self.alphas_cumprod)

    def respace(self, spacing: Spacing) -> Schedule:
        """Keep a subset of this chain's steps; betas are recomputed so the kept marginals are unchanged.

        Args:
            spacing: see `space_timesteps`; indices refer to this chain's steps (for a schedule
                that is not yet respaced these are the original timesteps).
        """
        kept = np.array(space_timesteps(len(self), spacing, self.alphas_cumprod), dtype=np.int64)
        kept_alpha_bar = self.alphas_cumprod[kept]
        betas = 1.0 - kept_alpha_bar / np.append(1.0, kept_alpha_bar[:-1])
        return Schedule(
            betas=betas, timesteps=self.timesteps[kept], num_train_timesteps=self.num_train_timesteps
        )


def make_schedule(
    noise_schedule: str = "linear",
    diffusion_steps: int = DEFAULT_DIFFUSION_STEPS,
    respacing: Spacing | None = None,
) -> Schedule:
    """The schedule of a named process, optionally respaced.

    Args:
        noise_schedule: "linear" (DiT's) or "cosine".
        diffusion_steps: length T of the training chain.
        respacing: None or "" for all T steps; else a spacing such as "250", "ddim50", "uniform20",
            "quad20", "logsnr20", "10,20,30" or a list of timesteps (see `space_timesteps`).

    Example:
        >>> make_schedule(respacing="250").timesteps[:3]
        array([0, 4, 8])
    """
    betas = named_betas(noise_schedule, diffusion_steps)
    full = Schedule(
        betas=betas, timesteps=np.arange(diffusion_steps, dtype=np.int64), num_train_timesteps=diffusion_steps
    )
    if respacing is None or (isinstance(respacing, str) and not respacing.strip()):
        return full
    return full.respace(respacing)
