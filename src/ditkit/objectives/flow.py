"""Flow matching on the DiT backbone as in SiT (Ma et al. 2024, arXiv 2401.08740): an interpolant path, a
velocity (or score, noise) prediction, continuous times in [0, 1] with data at 1, and ODE / SDE samplers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from torch import Tensor

from ditkit.choices import DETERMINISTIC_FLOW_SAMPLERS, FLOW_SAMPLERS, OBJECTIVE_OPTIONS
from ditkit.errors import UserError
from ditkit.objectives.base import (
    DIT_FID_GUIDANCE_SCALE,
    DIT_GUIDANCE_SCALE,
    FlowTimes,
    SampleRequest,
    TrainingBatch,
    check_named_sampler,
    settings_record,
)
from ditkit.transport.settings import DEFAULT_FLOW_STEPS, LOGIT_NORMAL_MEAN, LOGIT_NORMAL_STD, FlowSettings
from ditkit.transport.solvers import check_flow_sampler, flow_model_calls, sample_flow
from ditkit.transport.time_sampling import TimeDistribution
from ditkit.transport.transport import Transport

# SiT's training arguments (train_utils.py) that say how a flow model was trained, and ours.
SIT_ARGS = {
    "path_type": "path_type",
    "prediction": "prediction",
    "loss_weight": "loss_weight",
    "train_eps": "train_eps",
    "sample_eps": "sample_eps",
}


class FlowObjective(FlowTimes):
    """Flow matching: the path, the prediction and the training times' distribution.

    Args:
        settings: the path and parametrisation (what a checkpoint records).
        time_sampling: how training draws t: "uniform" (SiT) or "logit-normal" (SD3).
        logit_normal_mean, logit_normal_std: of the logit-normal's normal variable.
        cosine_loss: add LightningDiT's cosine term to the velocity loss (training only; see
            `ditkit.transport.transport.cosine_velocity_loss`).
    """

    name: ClassVar[str] = "flow"
    kind: ClassVar[str] = "flow-matching"
    options: ClassVar[tuple[str, ...]] = OBJECTIVE_OPTIONS["flow"]
    samplers: ClassVar[tuple[str, ...]] = FLOW_SAMPLERS
    default_sampler: ClassVar[str] = "dopri5"
    preview_sampler: ClassVar[str] = "euler"
    walk_sampler: ClassVar[str] = "dopri5"
    deterministic_samplers: ClassVar[tuple[str, ...]] = DETERMINISTIC_FLOW_SAMPLERS
    default_guidance_scale: ClassVar[float] = DIT_GUIDANCE_SCALE
    fid_guidance_scale: ClassVar[float] = DIT_FID_GUIDANCE_SCALE
    model_fields: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        settings: FlowSettings | None = None,
        *,
        time_sampling: str = "uniform",
        logit_normal_mean: float = LOGIT_NORMAL_MEAN,
        logit_normal_std: float = LOGIT_NORMAL_STD,
        cosine_loss: bool = False,
    ) -> None:
        self.settings = settings or FlowSettings()
        if cosine_loss and self.settings.prediction != "velocity":
            raise UserError("--cosine-loss compares velocities: it needs --prediction velocity")
        self.cosine_loss = cosine_loss
        self.transport = Transport(self.settings)
        self.time_sampling = time_sampling
        self.logit_normal_mean, self.logit_normal_std = logit_normal_mean, logit_normal_std

    def __repr__(self) -> str:
        return f"FlowObjective({self.settings}, time_sampling={self.time_sampling!r})"

    @classmethod
    def from_options(cls, config: Any) -> FlowObjective:
        """The objective a `TrainConfig` describes."""
        return cls(
            config.flow_settings(),
            time_sampling=config.time_sampling,
            logit_normal_mean=config.logit_normal_mean,
            logit_normal_std=config.logit_normal_std,
            cosine_loss=config.cosine_loss,
        )

    @classmethod
    def from_record(cls, extra: Mapping[str, Any]) -> FlowObjective:
        """The objective a checkpoint's `extra` records: ours ("flow"), SiT's training args, or SiT's
        defaults (see `described_in`)."""
        stored = settings_record(extra, "flow")
        if stored is not None:
            return cls(FlowSettings.from_dict(stored))
        return cls(FlowSettings.from_dict(sit_args(extra)))

    @staticmethod
    def described_in(extra: Mapping[str, Any]) -> bool:
        """Whether the checkpoint says how its flow was trained (ours, or SiT's training args)."""
        return settings_record(extra, "flow") is not None or bool(sit_args(extra))

    def record(self) -> dict[str, Any]:
        return {"objective": self.name, "flow": self.settings.to_dict()}

    # ---- training ----

    def training_times(self) -> TimeDistribution:
        return self.transport.time_distribution(
            self.time_sampling, self.logit_normal_mean, self.logit_normal_std
        )

    def losses(self, batch: TrainingBatch) -> dict[str, Tensor]:
        model = batch.model

        def called(x_t: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
            return model(x_t, t, y)

        return self.transport.training_losses(
            called, batch.x, {"y": batch.labels}, t=batch.t, noise=batch.noise, cosine_loss=self.cosine_loss
        )

    # ---- sampling ----

    def default_steps(self, sampler: str) -> int | None:
        return DEFAULT_FLOW_STEPS.get(sampler)

    def model_calls(self, sampler: str, steps: int) -> int | None:
        return flow_model_calls(sampler, steps)

    def check_sampler(self, sampler: str, steps: Any, eta: float) -> None:
        check_named_sampler(self, sampler, eta)
        if not isinstance(steps, int | None):
            raise UserError("flow samplers take an integer number of steps, and no callback or clipping")
        check_flow_sampler(sampler, steps)

    def sample(self, request: SampleRequest) -> Tensor:
        r = request
        if r.callback is not None or r.clip_denoised:
            raise UserError("flow samplers take an integer number of steps, and no callback or clipping")
        options = dict(
            y=r.y,
            sampler=r.sampler,
            steps=r.steps,
            noise=r.noise,
            progress=r.progress,
            timestep_shift=r.timestep_shift,
        )
        return sample_flow(r.model, r.x, self.settings, **options)


def sit_args(extra: Mapping[str, Any]) -> dict[str, Any]:
    """The flow settings in SiT's training arguments (a SiT training checkpoint's "args")."""
    args = extra.get("official_args") or {}
    return {ours: args[theirs] for theirs, ours in SIT_ARGS.items() if theirs in args}
