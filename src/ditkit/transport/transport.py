"""SiT's `Transport`: the flow-matching loss and the model's velocity and score, on any DiT.

    transport = create_transport("Linear", "velocity")
    loss = transport.training_losses(model, x1, model_kwargs=dict(y=y))["loss"].mean()

Conventions (SiT, Ma et al. 2024): x1 is data, x0 ~ N(0, I) noise, t runs from noise at 0 to data
at 1, and the model is called as model(x_t, t, **model_kwargs) with t (B,) in [0, 1]. A model whose
output has 2C channels for C input channels (DiT with learned sigma, as in SiT's released
checkpoints) is read through its first C channels.

Differences from SiT's code: `training_losses` also takes the draws `t` and `noise` (and a
`generator`; without any of them it draws from the global RNG, as SiT does); explicit train_eps and
sample_eps are each honoured on their own (SiT fills sample_eps only when train_eps is None).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ditkit.diffusion.gaussian import split_model_output
from ditkit.diffusion.losses import mean_flat
from ditkit.transport.paths import PATHS, InterpolantPath, expand_t_like_x
from ditkit.transport.settings import LOGIT_NORMAL_MEAN, LOGIT_NORMAL_STD, FlowSettings
from ditkit.transport.time_sampling import TimeDistribution

# An SiT-style model: model(x_t (B, C, H, W), t (B,), **model_kwargs) -> (B, C or 2C, H, W).
FlowModel = Callable[..., Tensor]
# Where SiT's SDE starts when its SBDM diffusion would be infinite at t = 0 (velocity models on the
# Linear and GVP paths have sample_eps 0, and alpha'/alpha = inf there): SiT's own eps for the
# predictions that need one.
SBDM_MIN_START = 1e-3


def cosine_velocity_loss(pred: Tensor, target: Tensor) -> Tensor:
    """LightningDiT's cosine term (hustvl/LightningDiT, transport/transport.py, `use_cosine_loss`): one
    minus the cosine similarity of predicted and true velocity over the channels at each position,
    averaged over the positions; their train.py adds it to the MSE with weight 1.

    Args:
        pred, target: (B, C, H, W) velocities.

    Returns:
        (B,) float32.
    """
    cos = torch.nn.functional.cosine_similarity(pred.float(), target.float(), dim=1)  # (B, H, W)
    return mean_flat(1 - cos)


class Transport:
    """The flow-matching objective of one path and parametrisation (build with `create_transport`).

    Attributes:
        settings: the FlowSettings (what a checkpoint stores).
        path_sampler: the InterpolantPath (SiT's name; also `path`).
        prediction: "velocity", "score" or "noise".
        loss_weight: None, "velocity" or "likelihood".
        train_eps, sample_eps: the time cut-offs in use.
    """

    def __init__(self, settings: FlowSettings) -> None:
        self.settings = settings
        self.path: InterpolantPath = PATHS[settings.path_type]()
        self.path_sampler = self.path
        self.prediction = settings.prediction
        self.loss_weight = settings.loss_weight
        self.train_eps, self.sample_eps = settings.eps

    def __repr__(self) -> str:
        return (
            f"Transport(path_type={self.settings.path_type!r}, prediction={self.prediction!r}, "
            f"loss_weight={self.loss_weight!r}, train_eps={self.train_eps}, sample_eps={self.sample_eps})"
        )

    def check_interval(
        self,
        train_eps: float | None = None,
        sample_eps: float | None = None,
        *,
        diffusion_form: str = "SBDM",
        sde: bool = False,
        reverse: bool = False,
        eval: bool = False,
        last_step_size: float = 0.0,
    ) -> tuple[float, float]:
        """The time interval (t0, t1) that training (eval False) or sampling (eval True) covers.

        As SiT's `check_interval`: the VP path stops eps short of t = 1; score and noise
        predictions on the Linear and GVP paths stay eps away from both ends; an SDE with a final
        step of `last_step_size` stops that far from 1; `reverse` swaps the ends (data to noise).
        """
        train_eps = self.train_eps if train_eps is None else train_eps
        sample_eps = self.sample_eps if sample_eps is None else sample_eps
        eps = sample_eps if eval else train_eps
        t0, t1 = 0.0, 1.0
        end = 1 - eps if (not sde or last_step_size == 0) else 1 - last_step_size
        if self.settings.path_type == "VP":
            t1 = end
        elif self.prediction != "velocity" or sde:
            sbdm = diffusion_form == "SBDM" and sde
            t0 = eps if sbdm or self.prediction != "velocity" else 0.0
            if sbdm and t0 == 0.0:
                t0 = SBDM_MIN_START
            t1 = end
        if reverse:
            t0, t1 = 1 - t0, 1 - t1
        return t0, t1

    def sample_time(
        self, batch: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None
    ) -> Tensor:
        """(B,) float32 times uniform on the training interval (SiT's draw)."""
        return self.time_distribution().draw((batch,), generator).to(device)

    def time_distribution(
        self, kind: str = "uniform", mean: float = LOGIT_NORMAL_MEAN, std: float = LOGIT_NORMAL_STD
    ) -> TimeDistribution:
        """The training times' distribution on this transport's training interval."""
        t0, t1 = self.check_interval()
        return TimeDistribution(kind, t0, t1, mean, std)

    def model_output(self, output: Tensor, channels: int) -> Tensor:
        """The prediction (B, C, ...) in a model output of C or 2C channels (learned sigma is ignored)."""
        return split_model_output(output, channels)[0]

    def training_losses(
        self,
        model: FlowModel,
        x1: Tensor,
        model_kwargs: dict[str, Any] | None = None,
        t: Tensor | None = None,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
        cosine_loss: bool = False,
    ) -> dict[str, Tensor]:
        """The per-sample flow-matching loss.

        Args:
            model: called as model(x_t, t, **model_kwargs) -> (B, C or 2C, H, W).
            x1: (B, C, H, W) data.
            model_kwargs: extra model arguments, e.g. dict(y=labels).
            t: (B,) times in [0, 1]; default uniform on the training interval.
            noise: x0, like x1; default standard normal.
            generator: a CPU generator for the default draws (default: the global RNG, as SiT).
            cosine_loss: add LightningDiT's cosine term to a velocity loss (`cosine_velocity_loss`).

        Returns:
            {"loss": (B,) float32, "pred": (B, C, H, W) the model's prediction}; with `cosine_loss`
            also "mse" and "cos", each (B,), whose sum is "loss".
        """
        kwargs = model_kwargs or {}
        if noise is None:
            noise = torch.randn(x1.shape, generator=generator, dtype=torch.float32).to(x1)
        if t is None:
            t = self.sample_time(x1.shape[0], x1.device, generator)
        t = t.to(device=x1.device, dtype=torch.float32)
        x0 = noise.to(x1)
        _, xt, ut = self.path.plan(t, x0, x1)
        pred = self.model_output(model(xt, t, **kwargs), x1.shape[1]).float()
        if self.prediction == "velocity":
            mse = mean_flat((pred - ut.float()) ** 2)
            if not cosine_loss:
                return {"loss": mse, "pred": pred}
            cos = cosine_velocity_loss(pred, ut.float())
            return {"loss": mse + cos, "mse": mse, "cos": cos, "pred": pred}
        if cosine_loss:
            raise ValueError("the cosine loss compares velocities: it needs prediction='velocity'")
        _, g = self.path.compute_drift(xt, t)
        sigma, _ = self.path.compute_sigma_t(expand_t_like_x(t, xt))
        weight: Tensor | float = 1.0
        if self.loss_weight == "velocity":
            weight = (g / sigma) ** 2
        elif self.loss_weight == "likelihood":
            weight = g / sigma**2
        if self.prediction == "noise":
            return {"loss": mean_flat(weight * (pred - x0.float()) ** 2), "pred": pred}
        # score = -x0 / sigma_t, so sigma_t * score + x0 is the score error in units of the noise
        return {"loss": mean_flat(weight * (pred * sigma + x0.float()) ** 2), "pred": pred}

    # ---- what samplers integrate ----------------------------------------------------------------
    def _predict(self, x: Tensor, t: Tensor, model: FlowModel, model_kwargs: dict[str, Any]) -> Tensor:
        return self.model_output(model(x, t, **model_kwargs), x.shape[1]).to(x.dtype)

    def _velocity_from(self, pred: Tensor, x: Tensor, t: Tensor) -> Tensor:
        if self.prediction == "velocity":
            return pred
        return self.path.get_velocity_from_score(self._score_from(pred, x, t), x, t)

    def _score_from(self, pred: Tensor, x: Tensor, t: Tensor) -> Tensor:
        if self.prediction == "velocity":
            return self.path.get_score_from_velocity(pred, x, t)
        if self.prediction == "noise":
            return self.path.get_score_from_noise(pred, x, t)
        return pred

    def velocity(self, x: Tensor, t: Tensor, model: FlowModel, **model_kwargs: Any) -> Tensor:
        """The probability-flow velocity (B, C, ...) at x_t (B, C, ...), t (B,), from one model call."""
        return self._velocity_from(self._predict(x, t, model, model_kwargs), x, t)

    def score(self, x: Tensor, t: Tensor, model: FlowModel, **model_kwargs: Any) -> Tensor:
        """grad log p_t(x) (B, C, ...) from one model call."""
        return self._score_from(self._predict(x, t, model, model_kwargs), x, t)

    def velocity_and_score(
        self, x: Tensor, t: Tensor, model: FlowModel, **model_kwargs: Any
    ) -> tuple[Tensor, Tensor]:
        """Both, from a single model call (the SDE's drift needs both)."""
        pred = self._predict(x, t, model, model_kwargs)
        return self._velocity_from(pred, x, t), self._score_from(pred, x, t)

    def get_drift(self) -> Callable[..., Tensor]:
        """SiT's name for `velocity`: a function (x, t, model, **model_kwargs) -> velocity."""
        return self.velocity

    def get_score(self) -> Callable[..., Tensor]:
        """SiT's name for `score`: a function (x, t, model, **model_kwargs) -> score."""
        return self.score

    def prior_logp(self, z: Tensor) -> Tensor:
        """log N(z; 0, I) per sample, (B,)."""
        n = z[0].numel()
        return -0.5 * n * torch.log(torch.tensor(2 * torch.pi, dtype=z.dtype)) - 0.5 * z.flatten(1).pow(
            2
        ).sum(1)


def create_transport(
    path_type: str = "Linear",
    prediction: str = "velocity",
    loss_weight: str | None = None,
    train_eps: float | None = None,
    sample_eps: float | None = None,
) -> Transport:
    """SiT's `create_transport`: the objective of a path ("Linear", "GVP", "VP") and prediction.

    Args:
        path_type: the interpolant (`ditkit.transport.paths`).
        prediction: "velocity" (SiT's default), "score" or "noise".
        loss_weight: None, "velocity" or "likelihood" (weights the score and noise losses).
        train_eps, sample_eps: time cut-offs; None takes SiT's defaults (VP: 1e-5 and 1e-3; score
            or noise on Linear/GVP: 1e-3 each). Velocity on Linear/GVP is stable on all of [0, 1]:
            both are 0 there, whatever is passed, as in SiT.

    Raises:
        UserError: an unknown path, prediction or loss weight.
    """
    return Transport(FlowSettings(path_type, prediction, loss_weight, train_eps, sample_eps))
