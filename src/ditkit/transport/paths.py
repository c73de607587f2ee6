"""SiT's interpolant paths: x_t = alpha_t x1 + sigma_t x0, noise x0 at t = 0, data x1 at t = 1.

Each path gives alpha_t and sigma_t with their time derivatives, and from them (SiT, Ma et al. 2024,
Sec. 2 and App. A; Albergo et al. 2023, stochastic interpolants):
- the conditional velocity u_t = alpha_t' x1 + sigma_t' x0 that flow matching regresses on;
- the probability-flow velocity in terms of the score, v = -f(x, t) + g(t) score with
  f = -(alpha'/alpha) x and g = (alpha'/alpha) sigma^2 - sigma sigma' (SiT's `compute_drift`);
- conversions between velocity, score grad log p_t(x) = -E[x0 | x_t] / sigma_t, and noise E[x0 | x_t];
- the diffusion coefficient w_t of the SDE dx = (v + w_t score) dt + sqrt(2 w_t) dW, which has the
  same marginals p_t as the ODE for any w_t >= 0.

Method names follow SiT's `path.py` (compute_alpha_t, compute_drift, ...), so code that reaches
into `transport.path_sampler` keeps working. Times t are (B,) tensors, or already broadcastable.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# The VP path's beta range, as in the VP SDE of Song et al. 2021 (Sec. 3.4): beta(s) from 0.1 to 20.
VP_BETA_MIN = 0.1
VP_BETA_MAX = 20.0
# SiT's diffusion coefficients w_t for the SDE sampler (its `compute_diffusion`); "SBDM" is the
# score-based diffusion model's choice w_t = g(t), "sigma" is w_t = sigma_t.
DIFFUSION_FORMS = ("constant", "SBDM", "sigma", "linear", "decreasing", "increasing-decreasing")


def expand_t_like_x(t: Tensor, x: Tensor) -> Tensor:
    """(B,) times -> (B, 1, ..., 1), broadcastable against x (B, ...); other shapes are returned as is."""
    if t.ndim == 1 and x.ndim > 1:
        return t.view(t.shape[0], *([1] * (x.ndim - 1)))
    return t


class InterpolantPath:
    """A path x_t = alpha_t x1 + sigma_t x0; subclasses give alpha, sigma and alpha'/alpha."""

    name = ""

    def compute_alpha_t(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(alpha_t, d alpha_t / dt), each shaped like t."""
        raise NotImplementedError

    def compute_sigma_t(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(sigma_t, d sigma_t / dt), each shaped like t."""
        raise NotImplementedError

    def compute_d_alpha_alpha_ratio_t(self, t: Tensor) -> Tensor:
        """alpha_t' / alpha_t (infinite at t = 0 where alpha_0 = 0)."""
        raise NotImplementedError

    # ---- the path -------------------------------------------------------------------------------
    def compute_mu_t(self, t: Tensor, x0: Tensor, x1: Tensor) -> Tensor:
        """x_t (B, ...) for times t (B,), noise x0 and data x1 (B, ...)."""
        t = expand_t_like_x(t, x1)
        alpha, _ = self.compute_alpha_t(t)
        sigma, _ = self.compute_sigma_t(t)
        return alpha * x1 + sigma * x0

    compute_xt = compute_mu_t

    def compute_ut(self, t: Tensor, x0: Tensor, x1: Tensor, xt: Tensor | None = None) -> Tensor:
        """The conditional velocity d x_t / dt = alpha_t' x1 + sigma_t' x0, (B, ...)."""
        t = expand_t_like_x(t, x1)
        _, d_alpha = self.compute_alpha_t(t)
        _, d_sigma = self.compute_sigma_t(t)
        return d_alpha * x1 + d_sigma * x0

    def plan(self, t: Tensor, x0: Tensor, x1: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(t, x_t, u_t): what a flow-matching step trains on."""
        return t, self.compute_mu_t(t, x0, x1), self.compute_ut(t, x0, x1)

    # ---- the ODE and SDE ------------------------------------------------------------------------
    def compute_drift(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """(f, g) with velocity = -f + g * score: f = -(alpha'/alpha) x (B, ...), g (B, 1, ...)."""
        t = expand_t_like_x(t, x)
        ratio = self.compute_d_alpha_alpha_ratio_t(t)
        sigma, d_sigma = self.compute_sigma_t(t)
        return -ratio * x, ratio * sigma**2 - sigma * d_sigma

    def compute_diffusion(self, x: Tensor, t: Tensor, form: str = "SBDM", norm: float = 1.0) -> Tensor:
        """The SDE's diffusion coefficient w_t (B, 1, ...) of the given form, scaled by `norm`."""
        t = expand_t_like_x(t, x)
        if form == "constant":
            return torch.full_like(t, float(norm))
        if form == "SBDM":
            return norm * self.compute_drift(x, t)[1]
        if form == "sigma":
            return norm * self.compute_sigma_t(t)[0]
        if form == "linear":
            return norm * (1 - t)
        if form == "decreasing":
            return 0.25 * (norm * torch.cos(math.pi * t) + 1) ** 2
        if form == "increasing-decreasing":
            return norm * torch.sin(math.pi * t) ** 2
        raise ValueError(f"unknown diffusion form {form!r}; choose one of {', '.join(DIFFUSION_FORMS)}")

    # ---- conversions ----------------------------------------------------------------------------
    def get_velocity_from_score(self, score: Tensor, x: Tensor, t: Tensor) -> Tensor:
        """v = -f + g score."""
        f, g = self.compute_drift(x, t)
        return -f + g * score

    def get_score_from_velocity(self, velocity: Tensor, x: Tensor, t: Tensor) -> Tensor:
        """score = (r v - x) / (sigma^2 - r sigma' sigma) with r = alpha / alpha', finite at t = 0."""
        t = expand_t_like_x(t, x)
        alpha, d_alpha = self.compute_alpha_t(t)
        sigma, d_sigma = self.compute_sigma_t(t)
        r = alpha / d_alpha
        return (r * velocity - x) / (sigma**2 - r * d_sigma * sigma)

    def get_noise_from_velocity(self, velocity: Tensor, x: Tensor, t: Tensor) -> Tensor:
        """E[x0 | x_t] = (r v - x) / (r sigma' - sigma) with r = alpha / alpha'."""
        t = expand_t_like_x(t, x)
        alpha, d_alpha = self.compute_alpha_t(t)
        sigma, d_sigma = self.compute_sigma_t(t)
        r = alpha / d_alpha
        return (r * velocity - x) / (r * d_sigma - sigma)

    def get_score_from_noise(self, noise: Tensor, x: Tensor, t: Tensor) -> Tensor:
        """score = -E[x0 | x_t] / sigma_t."""
        sigma, _ = self.compute_sigma_t(expand_t_like_x(t, x))
        return -noise / sigma


class LinearPath(InterpolantPath):
    """alpha_t = t, sigma_t = 1 - t: the straight line of rectified flow (SiT's "Linear", ICPlan)."""

    name = "Linear"

    def compute_alpha_t(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return t, torch.ones_like(t)

    def compute_sigma_t(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return 1 - t, -torch.ones_like(t)

    def compute_d_alpha_alpha_ratio_t(self, t: Tensor) -> Tensor:
        return 1 / t


class GVPPath(InterpolantPath):
    """alpha_t = sin(pi t / 2), sigma_t = cos(pi t / 2): variance preserving, alpha^2 + sigma^2 = 1 ("GVP")."""

    name = "GVP"

    def compute_alpha_t(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return torch.sin(t * math.pi / 2), math.pi / 2 * torch.cos(t * math.pi / 2)

    def compute_sigma_t(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return torch.cos(t * math.pi / 2), -math.pi / 2 * torch.sin(t * math.pi / 2)

    def compute_d_alpha_alpha_ratio_t(self, t: Tensor) -> Tensor:
        return math.pi / (2 * torch.tan(t * math.pi / 2))


class VPPath(InterpolantPath):
    """The VP SDE's marginals in SiT's time: with s = 1 - t, log alpha_t = -(s^2/4)(b1 - b0) - (s/2) b0.

    alpha_t' / alpha_t = beta(s) / 2 with beta(s) = b0 + s (b1 - b0), and sigma_t = sqrt(1 - alpha_t^2)
    (SiT's "VP", VPCPlan; b0, b1 = `VP_BETA_MIN`, `VP_BETA_MAX`). alpha_0 = exp(-(b1 + b0)/4) is small
    but not 0, so sampling starts from N(0, I) only approximately.
    """

    name = "VP"

    def __init__(self, beta_min: float = VP_BETA_MIN, beta_max: float = VP_BETA_MAX) -> None:
        self.beta_min, self.beta_max = beta_min, beta_max

    def _beta(self, t: Tensor) -> Tensor:
        return self.beta_min + (1 - t) * (self.beta_max - self.beta_min)

    def _log_alpha(self, t: Tensor) -> Tensor:
        s = 1 - t
        return -0.25 * s**2 * (self.beta_max - self.beta_min) - 0.5 * s * self.beta_min

    def compute_alpha_t(self, t: Tensor) -> tuple[Tensor, Tensor]:
        alpha = torch.exp(self._log_alpha(t))
        return alpha, alpha * self.compute_d_alpha_alpha_ratio_t(t)

    def compute_sigma_t(self, t: Tensor) -> tuple[Tensor, Tensor]:
        alpha_sq = torch.exp(2 * self._log_alpha(t))
        sigma = torch.sqrt(1 - alpha_sq)
        return sigma, -alpha_sq * self.compute_d_alpha_alpha_ratio_t(t) / sigma

    def compute_d_alpha_alpha_ratio_t(self, t: Tensor) -> Tensor:
        return 0.5 * self._beta(t)

    def compute_drift(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        # alpha^2 + sigma^2 = 1 makes g = beta / 2 exactly; computed so, it stays finite as sigma -> 0.
        t = expand_t_like_x(t, x)
        half_beta = 0.5 * self._beta(t)
        return -half_beta * x, half_beta


PATHS: dict[str, type[InterpolantPath]] = {"Linear": LinearPath, "GVP": GVPPath, "VP": VPPath}
