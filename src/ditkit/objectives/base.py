"""The `Objective` protocol: what a training objective of the DiT backbone owns.

The trainer, the pipeline, the previews, the demo, the studies and the CLI hold one `Objective` and ask
it; none of them compares its name. An objective owns:

- its training loss with its time draws and weighting (`training_times`, `losses`);
- its samplers, their defaults, their cost and how guidance times are read (`samplers`, `default_steps`,
  `model_calls`, `sample`);
- how it is recorded in a checkpoint and read back (`record`, and `from_record` in the registry).

A new objective is a class with these members, registered in `ditkit.objectives.registry.OBJECTIVE_TYPES`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

from torch import Tensor

from ditkit.diffusion.gaussian import ModelFn
from ditkit.diffusion.noise import NoiseSource
from ditkit.samplers.base import Callback

# Guidance scale of the DiT paper's sample figures (its sample.py's default --cfg-scale).
DIT_GUIDANCE_SCALE = 4.0
# Guidance scale of the DiT paper's best FID (Table 4: DiT-XL/2-G, cfg = 1.50, FID 2.27).
DIT_FID_GUIDANCE_SCALE = 1.5


class TrainingModel(Protocol):
    """The model a training loss calls: labels dropped as drawn, or as `drop` (B,) bool says."""

    def __call__(self, x: Tensor, t: Tensor, y: Tensor | None, /, drop: Tensor | None = None) -> Tensor: ...


@dataclass(frozen=True)
class TrainingBatch:
    """What an objective's loss gets (`Objective.losses`): the one signature of every objective.

    Attributes:
        model: called as model(x_t (B, C, H, W), t (B,) or (B, k), y (B,) or None), with the labels
            dropped as drawn; model(..., drop=mask) drops those of `mask` (B,) bool instead.
        x: (B, C, H, W) clean model inputs.
        labels: (B,) int64 labels, or None for an unconditional model.
        t: (B,) or (B, k) the drawn times (from `training_times`).
        noise: (B, C, H, W) standard normal noise.
        drop: (B,) bool, the labels drawn to be dropped (None: none).
    """

    model: TrainingModel
    x: Tensor
    labels: Tensor | None
    t: Tensor
    noise: Tensor
    drop: Tensor | None = None


@dataclass(frozen=True)
class SampleRequest:
    """What an objective's sampler gets (`Objective.sample`): the one signature of every objective.

    Attributes:
        model: called as model(x, t, y) (guided by the caller if asked).
        x: (B, C, H, W) starting noise.
        y: (B,) labels or None.
        sampler, steps: a sampler of the objective and its steps (None: the sampler's default).
        noise: per-sample streams of the steps' noise.
        eta: DDIM stochasticity (ddim only).
        clip_denoised: clamp predicted x_0 to [-1, 1] (diffusion samplers only).
        progress: show a progress bar.
        callback: called after every step (diffusion samplers only).
        timestep_shift: the flow ODE's time-grid shift (`SamplingSettings.timestep_shift`; 1: none).
    """

    model: ModelFn
    x: Tensor
    y: Tensor | None
    sampler: str
    steps: Any
    noise: NoiseSource
    eta: float = 0.0
    clip_denoised: bool = False
    progress: bool = False
    callback: Callback | None = None
    timestep_shift: float = 1.0


@runtime_checkable
class Objective(Protocol):
    """A training objective and its samplers (DiT's Gaussian diffusion, flow matching, ...).

    Attributes:
        name: the objective's name on the command line and in checkpoints ("diffusion", "flow").
        kind: how messages name its models ("diffusion", "flow-matching").
        options: the `TrainConfig` fields only this objective reads (others' are refused).
        samplers: the sampler names it takes, in the order menus show them.
        default_sampler: the sampler used when none is named.
        preview_sampler: the fixed-step deterministic sampler of training previews.
        walk_sampler: the deterministic sampler of latent walks (the same noise gives the same image).
        deterministic_samplers: the samplers whose image is a function of the starting noise alone.
        default_guidance_scale: the sampling guidance scale when none is given (DiT's 4; 1 for an
            objective that folds guidance into training).
        fid_guidance_scale: the same for FID-scale sampling (DiT's 1.5; 1 when guidance is folded in).
        model_fields: `DiTConfig` fields the objective needs the model to have (e.g. MeanFlow's
            `interval_embedding`).
        guidance_times: (low, high): the range of the model times a guidance interval is given in.
        guidance_times_help: how those times read, for messages ("timesteps 0..999, noise at 999").
    """

    name: ClassVar[str]
    kind: ClassVar[str]
    options: ClassVar[tuple[str, ...]]
    samplers: ClassVar[tuple[str, ...]]
    default_sampler: ClassVar[str]
    preview_sampler: ClassVar[str]
    walk_sampler: ClassVar[str]
    deterministic_samplers: ClassVar[tuple[str, ...]]
    default_guidance_scale: ClassVar[float]
    fid_guidance_scale: ClassVar[float]
    model_fields: ClassVar[dict[str, Any]]

    @property
    def guidance_times(self) -> tuple[float, float]: ...

    @property
    def guidance_times_help(self) -> str: ...

    def default_steps(self, sampler: str) -> int | None:
        """The steps `sampler` takes when none are given (None: it picks its own)."""
        ...

    def model_calls(self, sampler: str, steps: int) -> int | None:
        """Model calls (forward passes) one sample costs with `sampler` in `steps` steps (None: adaptive);
        guidance batches both branches into one call, as the samplers call the model."""
        ...

    def training_times(self) -> Any:
        """What the per-sample draws take times from (`ditkit.training.randomness.draw_step`): a chain
        length, or an object whose `draw(shape, generator)` gives times (a `TimeDistribution`)."""
        ...

    def losses(self, batch: TrainingBatch) -> dict[str, Tensor]:
        """Per-sample loss terms {"loss", ...}, each (B,), of the batch's model for its drawn times and noise."""
        ...

    def check_sampler(self, sampler: str, steps: Any, eta: float) -> None:
        """Raise UserError for a sampler, step count or eta this objective cannot sample with."""
        ...

    def sample(self, request: SampleRequest) -> Tensor:
        """Samples (B, C, H, W) float32 from the request's starting noise with a named sampler (guidance is
        applied by the caller, in `request.model`)."""
        ...

    def record(self) -> dict[str, Any]:
        """How a checkpoint records this objective: {"objective": name, name: settings}."""
        ...


class FlowTimes:
    """Guidance intervals of objectives whose model times are flow times (data at 1)."""

    guidance_times: ClassVar[tuple[float, float]] = (0.0, 1.0)
    guidance_times_help: ClassVar[str] = "flow times [0, 1] (data at 1)"


def check_named_sampler(objective: Objective, sampler: str, eta: float) -> None:
    """What every objective checks first: the sampler is one of its own, and eta goes with ddim only."""
    from ditkit.choices import SAMPLERS
    from ditkit.errors import UserError

    if sampler not in objective.samplers:
        why = f"{sampler!r} is not a sampler of {objective.kind} models" if sampler in SAMPLERS else None
        raise UserError(
            f"{why or f'unknown sampler {sampler!r}'}; choose one of {', '.join(objective.samplers)}"
        )
    if eta != 0.0 and sampler != "ddim":
        raise UserError(f"eta applies to the ddim sampler only, not {sampler!r}")


def check_guidance_interval(objective: Objective, interval: tuple[float, float] | None) -> None:
    """Raise UserError for a guidance interval outside the objective's model times."""
    from ditkit.errors import UserError

    if interval is None:
        return
    low, high = objective.guidance_times
    if not (low <= interval[0] <= interval[1] <= high):
        raise UserError(
            f"the guidance interval {tuple(interval)} is not within this {objective.name} model's times: "
            f"give T_MIN <= T_MAX in {objective.guidance_times_help}"
        )


def settings_record(record: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    """The settings a checkpoint's `extra` holds under `key`, if a mapping."""
    value = record.get(key)
    return value if isinstance(value, Mapping) else None
