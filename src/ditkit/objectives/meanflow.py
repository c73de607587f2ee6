"""MeanFlow (Geng et al. 2025, "Mean Flows for One-step Generative Modeling", arXiv 2505.13447): the DiT
learns the average velocity over a time interval, and samples in one or a few jumps.

Times follow SiT's convention, as ditkit's flow matching does: x_t = t x + (1 - t) noise, data at t = 1,
instantaneous velocity v = x - noise. The model sees the time t and the length h >= 0 of the interval
[t, t + h] ahead of it (`DiTConfig.interval_embedding`; t of shape (B, 2)) and predicts the average
velocity u(z_t, t, h) = (z_{t+h} - z_t) / h (at h = 0: v). With e = t + h held fixed,

    h u = integral of v from t to e   =>   u = v + h du/dt,   du/dt = v . d_z u + d_t u - d_h u

(the paper's identity, Eq. 6, in this time; the total derivative is one Jacobian-vector product with
tangent (v, 1, -1)). The loss regresses u on the stop-gradient target v + h du/dt, weighted adaptively
(Eq. 11 and Sec. 4.3); classifier-free guidance is folded into the target (Eq. 13 with kappa = 0), so
the model samples guided at guidance scale 1. With h = 0 the loss is flow matching's.

Sampling (`"meanflow"`): N equal jumps z_{t+h} = z_t + h u(z_t, t, h) from noise at 0 to data at 1.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from ditkit import distributed as D
from ditkit.choices import MEANFLOW_JVP_MODES, MEANFLOW_SAMPLERS, OBJECTIVE_OPTIONS
from ditkit.errors import UserError
from ditkit.objectives.base import (
    FlowTimes,
    SampleRequest,
    TrainingBatch,
    TrainingModel,
    check_named_sampler,
    settings_record,
)
from ditkit.transport.settings import LOGIT_NORMAL_MEAN, LOGIT_NORMAL_STD
from ditkit.transport.time_sampling import TimeDistribution

# The adaptive weight's constant c in 1 / (||error||^2 + c)^p (Geng et al. 2025, Sec. 4.3).
ADAPTIVE_WEIGHT_EPS = 1e-3
# One jump from noise to data: the paper's headline sampler.
DEFAULT_MEANFLOW_STEPS = 1


@dataclass(frozen=True)
class IntervalTimes:
    """MeanFlow's training times: two draws of `base`, the later the end e and the earlier the start t; with
    probability 1 - `interval_share` the interval is empty (e = t, the instantaneous velocity).

    `draw` returns (..., 2) float32: the start t and the length h = e - t (what the model takes).
    """

    base: TimeDistribution
    interval_share: float

    def draw(self, shape: Sequence[int], generator: torch.Generator | None = None) -> Tensor:
        a, b = self.base.draw(shape, generator), self.base.draw(shape, generator)
        on_interval = torch.rand(tuple(shape), generator=generator, dtype=torch.float64) < self.interval_share
        start = torch.minimum(a, b)
        end = torch.where(on_interval, torch.maximum(a, b), start)
        return torch.stack([start, end - start], dim=-1)


def jvp_func(
    fn: Callable[[Tensor, Tensor], Tensor], z: Tensor, t: Tensor, dz: Tensor, dt: Tensor
) -> tuple[Tensor, Tensor]:
    """(fn(z, t), d/de fn(z + e dz, t + e dt) at e = 0) by forward-mode AD; the first keeps its graph."""
    result = torch.func.jvp(fn, (z, t), (dz, dt))
    return result[0], result[1]


def jvp_backward(
    fn: Callable[[Tensor, Tensor], Tensor], z: Tensor, t: Tensor, dz: Tensor, dt: Tensor
) -> tuple[Tensor, Tensor]:
    """`jvp_func` by two reverse passes (J v = d/dw <J^T w, v>), for modules forward-mode AD cannot run
    through; the first output keeps its graph."""
    z, t = z.detach().requires_grad_(True), t.detach().requires_grad_(True)
    out = fn(z, t)
    w = torch.zeros_like(out, requires_grad=True)
    gz, gt = torch.autograd.grad(out, (z, t), w, create_graph=True)
    (tangent,) = torch.autograd.grad((gz * dz).sum() + (gt * dt).sum(), w, retain_graph=True)
    return out, tangent


JVP_FUNCTIONS = {"func": jvp_func, "backward": jvp_backward}


def jvp_route(mode: str) -> Callable[..., tuple[Tensor, Tensor]]:
    """The JVP function of a mode: "auto" is forward-mode AD in one process and two reverse passes under
    torchrun, whose DDP wrapper forward-mode AD cannot run through."""
    if mode == "auto":
        mode = "backward" if D.is_distributed() else "func"
    elif mode == "func" and D.is_distributed():
        raise UserError("forward-mode AD cannot run through DDP; use --meanflow-jvp backward (or auto)")
    return JVP_FUNCTIONS[mode]


class MeanFlowObjective(FlowTimes):
    """MeanFlow on the Linear flow path.

    Args:
        time_sampling, logit_normal_mean, logit_normal_std: the distribution of each of the two times drawn
            (SiT time; the paper's lognorm(-0.4, 1) is logit-normal with mean +0.4 here).
        interval_share: the share of samples with a non-empty interval (the paper's best: 0.25).
        guidance: classifier-free guidance scale folded into the target (1: none).
        adaptive_power: p of the adaptive weight (0: the plain squared error).
        jvp: "func" (forward-mode AD), "backward" (two reverse passes) or "auto" (see `jvp_route`).
    """

    name: ClassVar[str] = "meanflow"
    kind: ClassVar[str] = "MeanFlow"
    options: ClassVar[tuple[str, ...]] = OBJECTIVE_OPTIONS["meanflow"]
    samplers: ClassVar[tuple[str, ...]] = MEANFLOW_SAMPLERS
    default_sampler: ClassVar[str] = "meanflow"
    preview_sampler: ClassVar[str] = "meanflow"
    walk_sampler: ClassVar[str] = "meanflow"
    deterministic_samplers: ClassVar[tuple[str, ...]] = MEANFLOW_SAMPLERS
    default_guidance_scale: ClassVar[float] = 1.0  # guidance is folded into training
    fid_guidance_scale: ClassVar[float] = 1.0
    model_fields: ClassVar[dict[str, Any]] = {"interval_embedding": True}

    def __init__(
        self,
        *,
        time_sampling: str = "uniform",
        logit_normal_mean: float = LOGIT_NORMAL_MEAN,
        logit_normal_std: float = LOGIT_NORMAL_STD,
        interval_share: float = 0.25,
        guidance: float = 1.0,
        adaptive_power: float = 1.0,
        jvp: str = "auto",
    ) -> None:
        if jvp not in MEANFLOW_JVP_MODES:
            raise UserError(f"unknown jvp mode {jvp!r}; choose one of {', '.join(MEANFLOW_JVP_MODES)}")
        self.times = IntervalTimes(
            TimeDistribution(time_sampling, 0.0, 1.0, logit_normal_mean, logit_normal_std), interval_share
        )
        self.guidance, self.adaptive_power, self.jvp = guidance, adaptive_power, jvp

    def __repr__(self) -> str:
        return f"MeanFlowObjective({self.times}, guidance={self.guidance}, jvp={self.jvp!r})"

    @classmethod
    def from_options(cls, config: Any) -> MeanFlowObjective:
        """The objective a `TrainConfig` describes."""
        return cls(
            time_sampling=config.time_sampling,
            logit_normal_mean=config.logit_normal_mean,
            logit_normal_std=config.logit_normal_std,
            interval_share=config.meanflow_interval_share,
            guidance=config.meanflow_guidance,
            adaptive_power=config.meanflow_adaptive_power,
            jvp=config.meanflow_jvp,
        )

    @classmethod
    def from_record(cls, extra: Mapping[str, Any]) -> MeanFlowObjective:
        """The objective a checkpoint's `extra` records (its sampling needs nothing more)."""
        stored = settings_record(extra, "meanflow") or {}
        return cls(guidance=float(stored.get("guidance", 1.0)))

    def record(self) -> dict[str, Any]:
        return {"objective": self.name, "meanflow": {"path_type": "Linear", "guidance": self.guidance}}

    # ---- training ----

    def training_times(self) -> IntervalTimes:
        return self.times

    def losses(self, batch: TrainingBatch) -> dict[str, Tensor]:
        """The adaptively weighted MeanFlow loss; "mse" is the plain mean squared error to the target.

        The batch's t is (B, 2): start times and interval lengths (`IntervalTimes`).
        """
        model, x, labels, noise = batch.model, batch.x, batch.labels, batch.noise
        start, h = batch.t[:, 0].float(), batch.t[:, 1].float()  # (B,), (B,)
        channels = x.shape[1]
        shape = (-1, *([1] * (x.ndim - 1)))
        z = start.view(shape) * x + (1 - start.view(shape)) * noise  # (B, C, H, W)
        v = x - noise  # the path's velocity at z
        if self.guidance != 1.0 and labels is not None:
            v = self._guided_velocity(model, z, start, labels, v, batch.drop)

        def average_velocity(z_in: Tensor, times: Tensor) -> Tensor:
            return model(z_in, times, labels)[:, :channels].float()

        times = torch.stack([start, h], dim=1)  # (B, 2)
        tangent_times = torch.stack([torch.ones_like(start), -torch.ones_like(start)], dim=1)  # d(t, h)/dt
        # Attention in PyTorch's math kernel: the fused CPU kernels have neither forward-mode AD nor a
        # second derivative.
        with sdpa_kernel(SDPBackend.MATH):
            u, du_dt = jvp_route(self.jvp)(average_velocity, z, times, v, tangent_times)
        target = (v + h.view(shape) * du_dt).detach()
        error = ((u - target) ** 2).flatten(1)  # (B, C*H*W)
        squared = error.sum(dim=1)  # ||u - target||^2, the paper's norm
        weight = (squared.detach() + ADAPTIVE_WEIGHT_EPS) ** -self.adaptive_power
        return {"loss": weight * squared, "mse": error.mean(dim=1)}

    def _guided_velocity(
        self, model: TrainingModel, z: Tensor, start: Tensor, labels: Tensor, v: Tensor, drop: Tensor | None
    ) -> Tensor:
        """The guided target velocity w v + (1 - w) v_uncond (Eq. 13), for the samples that keep their
        label; v_uncond is the model's own unconditional instantaneous velocity (stop-gradient)."""
        with torch.no_grad():
            times = torch.stack([start, torch.zeros_like(start)], dim=1)
            everyone = torch.ones_like(labels, dtype=torch.bool)
            v_uncond = model(z, times, labels, drop=everyone)[:, : v.shape[1]].float()
        guided = self.guidance * v + (1 - self.guidance) * v_uncond
        if drop is None:
            return guided
        return torch.where(drop.view(-1, *([1] * (v.ndim - 1))), v, guided)

    # ---- sampling ----

    def default_steps(self, sampler: str) -> int | None:
        return DEFAULT_MEANFLOW_STEPS

    def model_calls(self, sampler: str, steps: int) -> int | None:
        return steps  # one call per jump

    def check_sampler(self, sampler: str, steps: Any, eta: float) -> None:
        check_named_sampler(self, sampler, eta)
        if steps is not None and (not isinstance(steps, int) or steps < 1):
            raise UserError(f"MeanFlow takes a whole number of jumps of at least 1, got {steps!r}")

    def sample(self, request: SampleRequest) -> Tensor:
        """`steps` equal jumps z_{t+h} = z_t + h u(z_t, t, h) from noise at t = 0 to data at t = 1."""
        r, x = request, request.x
        if r.callback is not None or r.clip_denoised:
            raise UserError("the MeanFlow sampler takes a number of jumps, and no callback or clipping")
        n = DEFAULT_MEANFLOW_STEPS if r.steps is None else int(r.steps)
        edges = torch.linspace(0.0, 1.0, n + 1, dtype=torch.float64)
        for k in range(n):
            t = torch.full((x.shape[0],), float(edges[k]), device=x.device)
            h = torch.full_like(t, float(edges[k + 1] - edges[k]))
            u = r.model(x, torch.stack([t, h], dim=1), r.y)[:, : x.shape[1]].float()
            x = x + h.view(-1, *([1] * (x.ndim - 1))) * u
        return x
