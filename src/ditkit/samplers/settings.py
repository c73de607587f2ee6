"""`SamplingSettings`: how to sample a model, one object from the command line to the sampler.

Plain data (no torch), so that the CLI builds its flags from the fields (`ditkit.cli.config_flags`) as it
does for `TrainConfig`, and a checkpoint records the settings a run was evaluated with (`to_dict`), which
`ditkit sample`, `walk` and `serve` then take as their defaults for that checkpoint.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ditkit.choices import GUIDED_CHANNELS
from ditkit.errors import UserError
from ditkit.options import check_choices, option

# `--help` section of the sampling flags.
SAMPLING = "sampling"
# The key of `steps` in the sample records (samples.json, FID manifests; `to_record`).
RECORDED_STEPS = "num_steps"


@dataclass(frozen=True)
class SamplingSettings:
    """How samples are drawn: the sampler, its steps, classifier-free guidance and the seeds.

    Each field is a flag of `ditkit sample`, `walk`, `evaluate --samples` and `serve` (`guidance_scale` ->
    `--guidance-scale`); None means "the objective's own" (`ditkit.objectives`).

    Attributes:
        sampler: diffusion: ddpm, ddim, dpm++2m; flow: dopri5, euler, heun (ODE), sde-euler, sde-heun
            (default: the checkpoint's recorded one, else the objective's: ddpm for diffusion, dopri5 for
            flow)
        steps: sampling steps (default: the recorded ones for the recorded sampler, else the sampler's:
            250 ddpm, 50 ddim, 20 dpm++2m; 50 euler, 25 heun, 250 sde-*; dopri5 is adaptive and takes none)
        guidance_scale: classifier-free guidance scale; 1 disables it (default: the checkpoint's recorded
            scale, else 4.0 as DiT's figures, or 1.5, the paper's best FID, for `ditkit sample --num-samples`)
        guided_channels: the channels guidance applies to: "all" or "first3" (the official DiT and SiT
            samplers' behaviour)
        guidance_interval: guide only at model times in [T_MIN, T_MAX]: diffusion timesteps 0..T-1 (noise
            at T-1), flow times in [0, 1] (data at 1); elsewhere the conditional model alone
        eta: DDIM stochasticity in [0, 1] (ddim only; 0: deterministic)
        timestep_shift: bend the flow ODE's time grid (euler, heun) by t -> s t / (1 + (s - 1) t), s = SHIFT
            (LightningDiT's sampling; its models use 0.3: smaller steps near the noise); 1: even steps
        seed: seed of the first image; image i uses SEED + i
    """

    sampler: str | None = option(None, metavar="SAMPLER", group=SAMPLING)  # each objective checks its own
    steps: int | None = option(None, group=SAMPLING)
    guidance_scale: float | None = option(None, flags=("--guidance-scale", "--cfg-scale"), group=SAMPLING)
    guided_channels: str = option("all", choices=GUIDED_CHANNELS, group=SAMPLING)
    guidance_interval: tuple[float, float] | None = option(None, metavar=("T_MIN", "T_MAX"), group=SAMPLING)
    eta: float = option(0.0, group=SAMPLING)
    timestep_shift: float = option(1.0, metavar="SHIFT", group=SAMPLING)
    seed: int = option(0, group=SAMPLING)

    def __post_init__(self) -> None:
        check_choices(self)
        if self.steps is not None and (isinstance(self.steps, bool) or int(self.steps) != self.steps):
            raise UserError(f"steps must be a whole number, got {self.steps!r}")
        if self.steps is not None and self.steps < 1:
            raise UserError(f"steps must be a whole number of at least 1, got {self.steps}")
        if self.guidance_scale is not None and not self.guidance_scale >= 0:
            raise UserError(
                f"the guidance scale must be 0 or more (1: no guidance), got {self.guidance_scale}"
            )
        if not 0.0 <= self.eta <= 1.0:
            raise UserError(f"eta must lie in [0, 1], got {self.eta}")
        if not self.timestep_shift > 0:
            raise UserError(f"the timestep shift must be positive (1: none), got {self.timestep_shift}")
        if self.guidance_interval is not None:
            low, high = (float(v) for v in self.guidance_interval)
            if not low <= high:
                raise UserError(
                    f"the guidance interval must be (low, high) with low <= high, got {(low, high)}"
                )
            object.__setattr__(self, "guidance_interval", (low, high))

    def seeds(self, count: int, start: int = 0) -> list[int]:
        """The seeds of images start .. start + count - 1: image i uses seed + i."""
        return [self.seed + start + i for i in range(count)]

    def replace(self, **changes: Any) -> SamplingSettings:
        """A copy with `changes` (None values are kept as given: they mean "the objective's own")."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        if self.guidance_interval is not None:
            out["guidance_interval"] = list(self.guidance_interval)
        return out

    def to_record(self) -> dict[str, Any]:
        """`to_dict` under the keys of the sample records (samples.json, FID manifests): the steps as
        "num_steps", as those files have always named them."""
        out = self.to_dict()
        out[RECORDED_STEPS] = out.pop("steps")
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> SamplingSettings:
        """Read a record (a checkpoint's `extra["sampling"]`); keys it does not know are an error, and
        fields it lacks (a record older than the field, e.g. `timestep_shift`) take their defaults."""
        data = dict(data or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise UserError(
                f"unknown sampling settings {', '.join(unknown)}; known: {', '.join(sorted(names))}"
            )
        interval = data.get("guidance_interval")
        if isinstance(interval, Sequence) and not isinstance(interval, str):
            data["guidance_interval"] = tuple(interval)
        return cls(**data)
