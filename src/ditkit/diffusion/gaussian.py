"""Gaussian diffusion as in ADM / improved DDPM (Nichol & Dhariwal 2021), the process DiT trains with.

The model predicts eps, and with learned sigma also a value v per element that interpolates the
log variance between log beta_t and the clipped log posterior variance ("learned range",
improved DDPM eq. 15). Whether a model learns sigma is read from its output: 2C channels for C
input channels means eps then v; C channels means eps with a fixed variance.

Timestep indices `t` given to these methods index this diffusion's (possibly respaced) chain,
0..N-1; the model is always called with the original timestep `schedule.timesteps[t]`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from ditkit.diffusion.losses import discretized_gaussian_log_likelihood, mean_flat, nats_to_bits, normal_kl
from ditkit.diffusion.schedule import Schedule
from ditkit.errors import UserError

# A denoiser: model(x_t (B, C, H, W), original timesteps (B,), labels (B,) or None) -> (B, C or 2C, H, W).
ModelFn = Callable[[Tensor, Tensor, Tensor | None], Tensor]
FixedVariance = Literal["large", "small"]
FIXED_VARIANCES = ("large", "small")


def split_model_output(output: Tensor, channels: int) -> tuple[Tensor, Tensor | None]:
    """Split a model output into eps (B, C, H, W) and, with learned sigma, v (B, C, H, W).

    Raises:
        UserError: if the output has neither C nor 2C channels.
    """
    if output.shape[1] == 2 * channels:
        return output[:, :channels], output[:, channels:]
    if output.shape[1] == channels:
        return output, None
    raise UserError(
        f"model returned {output.shape[1]} channels for {channels}-channel inputs; "
        f"expected {channels} (eps) or {2 * channels} (eps and variance)"
    )


@dataclass
class PosteriorPrediction:
    """The model's p(x_{t-1} | x_t); every field is (B, C, H, W)."""

    mean: Tensor
    variance: Tensor
    log_variance: Tensor
    pred_xstart: Tensor
    eps: Tensor


class GaussianDiffusion:
    """The forward process q, the model's reverse process p, and the training loss.

    Args:
        schedule: the chain (possibly respaced).
        fixed_variance: variance used for models that do not learn sigma: "large" (beta_t, the
            default of guided-diffusion and DiT's create_diffusion) or "small" (the posterior variance).
        min_snr_gamma: training only: weight each sample's noise-prediction loss by
            min(SNR_t, gamma) / SNR_t with SNR_t = alpha_bar_t / (1 - alpha_bar_t) (min-SNR-gamma,
            Hang et al. 2023, eq. 8 for eps-prediction); None = uniform weights, as DiT.
    """

    def __init__(
        self,
        schedule: Schedule,
        fixed_variance: FixedVariance = "large",
        min_snr_gamma: float | None = None,
    ) -> None:
        if fixed_variance not in FIXED_VARIANCES:
            raise UserError(
                f"fixed_variance must be one of {', '.join(FIXED_VARIANCES)}, got {fixed_variance!r}"
            )
        self.schedule = schedule
        self.fixed_variance = fixed_variance
        if min_snr_gamma is not None and not min_snr_gamma > 0:
            raise UserError(f"min_snr_gamma must be positive, got {min_snr_gamma}")
        self.min_snr_gamma = min_snr_gamma
        self._cache: dict[tuple[str, torch.device, torch.dtype], Tensor] = {}

    @property
    def num_timesteps(self) -> int:
        """Number of steps N of this (possibly respaced) chain."""
        return len(self.schedule)

    def _table(self, name: str, device: torch.device, dtype: torch.dtype) -> Tensor:
        """schedule.<name> as a tensor, cast once per device and dtype (index-then-cast == cast-then-index)."""
        key = (name, device, dtype)
        table = self._cache.get(key)
        if table is None:
            table = torch.from_numpy(np.asarray(getattr(self.schedule, name))).to(device, dtype)
            self._cache[key] = table
        return table

    def _gather(self, name: str, t: Tensor, like: Tensor) -> Tensor:
        """schedule.<name>[t] in like's dtype, shaped (B, 1, ..., 1) to broadcast against like."""
        table = self._table(name, like.device, like.dtype)
        return table[t.to(like.device).long()].view(-1, *([1] * (like.ndim - 1)))

    def model_timesteps(self, t: Tensor) -> Tensor:
        """Original timesteps (B,) int64 for chain indices t (B,): what the model is given."""
        return self._table("timesteps", t.device, torch.long)[t.long()]

    def q_mean_variance(self, x_start: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Mean, variance and log variance of q(x_t | x_0), each broadcastable to (B, C, H, W)."""
        mean = self._gather("alphas_cumprod", t, x_start).sqrt() * x_start
        variance = 1.0 - self._gather("alphas_cumprod", t, x_start)
        return mean, variance.expand_as(x_start), torch.log(variance).expand_as(x_start)

    def q_sample(self, x_start: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """Draw x_t ~ q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I) with the given noise."""
        alpha_bar = self._gather("alphas_cumprod", t, x_start)
        return alpha_bar.sqrt() * x_start + (1.0 - alpha_bar).sqrt() * noise

    def q_posterior(self, x_start: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Mean, variance and clipped log variance of q(x_{t-1} | x_t, x_0) (Ho et al. 2020, eq. 6-7)."""
        mean = (
            self._gather("posterior_mean_coef1", t, x_t) * x_start
            + self._gather("posterior_mean_coef2", t, x_t) * x_t
        )
        variance = self._gather("posterior_variance", t, x_t).expand_as(x_t)
        log_variance = self._gather("posterior_log_variance_clipped", t, x_t).expand_as(x_t)
        return mean, variance, log_variance

    def predict_xstart(self, x_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)."""
        alpha_bar = self._gather("alphas_cumprod", t, x_t)
        return (x_t - (1.0 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt()

    def predict_eps(self, x_t: Tensor, t: Tensor, x_start: Tensor) -> Tensor:
        """eps = (x_t - sqrt(alpha_bar_t) x_0) / sqrt(1 - alpha_bar_t)."""
        alpha_bar = self._gather("alphas_cumprod", t, x_t)
        return (x_t - alpha_bar.sqrt() * x_start) / (1.0 - alpha_bar).sqrt()

    def p_mean_variance(
        self, model_output: Tensor, x_t: Tensor, t: Tensor, clip_denoised: bool = False
    ) -> PosteriorPrediction:
        """The model's reverse step p(x_{t-1} | x_t) from its raw output.

        Args:
            model_output: (B, C, H, W) eps, or (B, 2C, H, W) eps then v in [-1, 1].
            x_t: (B, C, H, W) current sample.
            t: (B,) chain indices.
            clip_denoised: clamp the predicted x_0 to [-1, 1] before forming the mean.
        """
        eps, v = split_model_output(model_output, x_t.shape[1])
        if v is not None:
            # Learned range (improved DDPM eq. 15): log var = frac log beta_t + (1 - frac) log beta~_t.
            frac = (v + 1.0) / 2.0
            max_log = self._gather("log_betas", t, x_t)
            min_log = self._gather("posterior_log_variance_clipped", t, x_t)
            log_variance = frac * max_log + (1.0 - frac) * min_log
            variance = torch.exp(log_variance)
        else:
            name = "fixed_large_variance" if self.fixed_variance == "large" else "posterior_variance"
            variance = self._gather(name, t, x_t).expand_as(x_t)
            if self.fixed_variance == "large":
                log_variance = torch.log(variance)
            else:
                log_variance = self._gather("posterior_log_variance_clipped", t, x_t).expand_as(x_t)
        pred_xstart = self.predict_xstart(x_t, t, eps)
        if clip_denoised:
            pred_xstart = pred_xstart.clamp(-1.0, 1.0)
        mean, _, _ = self.q_posterior(pred_xstart, x_t, t)
        return PosteriorPrediction(mean, variance, log_variance, pred_xstart, eps)

    def vb_terms_bpd(
        self, model_output: Tensor, x_start: Tensor, x_t: Tensor, t: Tensor, clip_denoised: bool = False
    ) -> Tensor:
        """One term of the variational bound in bits per dimension, shape (B,).

        For t > 0: KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)); for t = 0: the discretised
        Gaussian decoder NLL -log p(x_0 | x_1) (Ho et al. 2020, eq. 5 and 13).
        """
        true_mean, _, true_log_variance = self.q_posterior(x_start, x_t, t)
        pred = self.p_mean_variance(model_output, x_t, t, clip_denoised)
        kl = nats_to_bits(mean_flat(normal_kl(true_mean, true_log_variance, pred.mean, pred.log_variance)))
        decoder_ll = discretized_gaussian_log_likelihood(x_start, pred.mean, 0.5 * pred.log_variance)
        decoder_nll = -nats_to_bits(mean_flat(decoder_ll))
        return torch.where(t.to(kl.device) == 0, decoder_nll, kl)

    def prior_bpd(self, x_start: Tensor) -> Tensor:
        """KL(q(x_T | x_0) || N(0, I)) in bits per dimension, shape (B,); not trainable."""
        t = torch.full((x_start.shape[0],), self.num_timesteps - 1, dtype=torch.long, device=x_start.device)
        mean, _, log_variance = self.q_mean_variance(x_start, t)
        zero = torch.zeros_like(mean)
        return nats_to_bits(mean_flat(normal_kl(mean, log_variance, zero, zero)))

    def training_losses(
        self, model: ModelFn, x_start: Tensor, t: Tensor, noise: Tensor, y: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Per-sample training loss (B,) for given timesteps and noise.

        With learned sigma this is L_hybrid = L_simple + L_vlb (improved DDPM sec. 3.1, with
        lambda = 1/1000 folded into sampling one of the 1000 terms): the vlb term sees eps
        through a stop-gradient, so it trains only the variance. With fixed variance: L_simple.
        With `min_snr_gamma`, L_simple is weighted per sample by min(SNR_t, gamma) / SNR_t ("mse"
        stays the unweighted value, for logging).

        Args:
            model: the denoiser, called as model(x_t, original timesteps, y).
            x_start: (B, C, H, W) clean data.
            t: (B,) int64 chain indices in [0, N).
            noise: (B, C, H, W) standard normal noise.
            y: optional (B,) labels passed through to the model.

        Returns:
            {"loss", "mse"} and, with learned sigma, "vb": each (B,).
        """
        x_t = self.q_sample(x_start, t, noise)
        output = model(x_t, self.model_timesteps(t), y).to(x_t.dtype)
        eps, v = split_model_output(output, x_start.shape[1])
        terms = {"mse": mean_flat((noise - eps) ** 2)}
        simple = terms["mse"] * self.snr_weights(t).to(terms["mse"]) if self.min_snr_gamma else terms["mse"]
        if v is None:
            terms["loss"] = simple
            return terms
        frozen = torch.cat([eps.detach(), v], dim=1)  # (B, 2C, H, W): the vlb trains sigma only
        terms["vb"] = self.vb_terms_bpd(frozen, x_start, x_t, t)
        terms["loss"] = simple + terms["vb"]
        return terms

    def snr_weights(self, t: Tensor) -> Tensor:
        """Min-SNR-gamma weights min(SNR_t, gamma) / SNR_t, (B,) float32, for chain indices t (B,)."""
        assert self.min_snr_gamma is not None
        alpha_bar = self._table("alphas_cumprod", t.device, torch.float64)[t.long()]
        snr = alpha_bar / (1.0 - alpha_bar)
        return (snr.clamp(max=self.min_snr_gamma) / snr).float()
