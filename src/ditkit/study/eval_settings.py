"""How every run of a study is evaluated: a spec file's [eval] table (`EvalSettings`)."""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import Any

from ditkit.choices import GUIDED_CHANNELS, OBJECTIVES
from ditkit.errors import UserError
from ditkit.samplers.settings import SamplingSettings

# The guidance scale's key in spec files' [eval] tables and in the evaluation records and results rows
# (written since the first studies; `guidance_scale` is its name in the code).
GUIDANCE_KEY = "cfg_scale"


@dataclass(frozen=True)
class EvalSettings:
    """How every run is evaluated: the same sampler, seeds and sample count for all of them.

    Attributes:
        fractions: evaluate at these fractions of the training steps (each in (0, 1]).
        num_samples: images per evaluation; image i has label i % num_classes and seed `seed + i`.
        sampler, sample_steps: the sampler of `ditkit.samplers` and its steps; or a table keyed by the
            training objective ({"diffusion": "dpm++2m", "flow": "heun"}), for studies that mix them.
        guidance_scale: guidance scales; several are swept (each evaluation draws every one). The spec
            file's key is `cfg_scale` (`guidance_scale` is read too).
        guided_channels: "all" or "first3"; several are swept.
        guidance_interval: None or [t_lo, t_hi] in model timesteps; several are swept.
        seed: seed of image 0.
        batch_size: images per sampling batch.
        precision: sampling precision ("auto": bf16 on CUDA, exact fp32 on the CPU).
    """

    fractions: tuple[float, ...] = (0.25, 0.5, 1.0)
    num_samples: int = 500
    sampler: str | dict[str, str] = "dpm++2m"
    sample_steps: int | dict[str, int] = 20
    guidance_scale: tuple[float, ...] = (1.0,)
    guided_channels: tuple[str, ...] = ("all",)
    guidance_interval: tuple[tuple[float, float] | None, ...] = (None,)
    seed: int = 0
    batch_size: int = 250
    precision: str = "auto"

    def check(self) -> None:
        if not self.fractions or any(not 0 < f <= 1 for f in self.fractions):
            raise UserError(f"eval fractions must lie in (0, 1], got {list(self.fractions)}")
        steps = self.sample_steps.values() if isinstance(self.sample_steps, dict) else [self.sample_steps]
        if self.num_samples < 2 or min(steps, default=0) < 1 or self.batch_size < 1:
            raise UserError("eval num_samples must be >= 2, sample_steps and batch_size >= 1")
        known = known_samplers()
        for name in self.sampler.values() if isinstance(self.sampler, dict) else [self.sampler]:
            if name not in known:
                raise UserError(f"unknown eval sampler {name!r}; choose one of {', '.join(known)}")
        for table in (self.sampler, self.sample_steps):
            if isinstance(table, dict) and not set(table) <= set(OBJECTIVES):
                raise UserError(
                    f"eval sampler tables are keyed by objective ({', '.join(OBJECTIVES)}), got {list(table)}"
                )
        if not self.guidance_scale or any(not s >= 1.0 for s in self.guidance_scale):
            raise UserError(f"eval {GUIDANCE_KEY} values must be >= 1, got {list(self.guidance_scale)}")
        bad = [c for c in self.guided_channels if c not in GUIDED_CHANNELS]
        if bad or not self.guided_channels:
            raise UserError(f"eval guided_channels must be among {', '.join(GUIDED_CHANNELS)}, got {bad}")
        for interval in self.guidance_interval:
            if interval is not None and not (len(interval) == 2 and 0 <= interval[0] < interval[1]):
                raise UserError(
                    f"eval guidance_interval must be [t_lo, t_hi] with t_lo < t_hi, got {interval}"
                )

    def sampler_for(self, objective: str) -> tuple[str, int]:
        """The sampler and its steps for a model trained with `objective`."""
        sampler = self.sampler if isinstance(self.sampler, str) else self.sampler.get(objective)
        steps = self.sample_steps if isinstance(self.sample_steps, int) else self.sample_steps.get(objective)
        if sampler is None or steps is None:
            raise UserError(f"the eval sampler table names no sampler or steps for {objective} models")
        return sampler, steps

    def variants(self) -> list[SamplingSettings]:
        """Every guidance setting drawn at each evaluation step (scale x channels x interval), with the
        evaluation's seed; the sampler and steps are the model's (`sampler_for`), set when drawing."""
        return [
            SamplingSettings(guidance_scale=s, guided_channels=c, guidance_interval=i, seed=self.seed)
            for s, c, i in itertools.product(
                self.guidance_scale, self.guided_channels, self.guidance_interval
            )
        ]

    def to_dict(self) -> dict[str, Any]:
        """The settings as a spec file's [eval] table writes them (`from_dict` reads them back)."""
        d = dataclasses.asdict(self)
        d[GUIDANCE_KEY] = d.pop("guidance_scale")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str) -> EvalSettings:
        d = dict(d)
        if GUIDANCE_KEY in d:
            if "guidance_scale" in d:
                raise UserError(
                    f"{source}: give the eval guidance scales once ({GUIDANCE_KEY} or guidance_scale)"
                )
            d["guidance_scale"] = d.pop(GUIDANCE_KEY)
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise UserError(f"{source}: unknown eval setting {unknown[0]!r}; known: {', '.join(known)}")
        for name in ("fractions", "guidance_scale", "guided_channels"):
            if name in d:
                d[name] = tuple(_as_list(d[name]))
        if "guidance_interval" in d:
            d["guidance_interval"] = _intervals(d["guidance_interval"], source)
        try:
            settings = cls(**d)
        except TypeError as err:
            raise UserError(f"{source}: bad eval settings ({err})") from None
        settings.check()
        return settings


def known_samplers() -> tuple[str, ...]:
    """Every sampler name, of every objective."""
    from ditkit.choices import SAMPLERS

    return SAMPLERS


def _intervals(value: Any, source: str) -> tuple[tuple[float, float] | None, ...]:
    """None, one [t_lo, t_hi], or a list of those (a sweep)."""
    single = value is None or (
        isinstance(value, list | tuple) and value and not isinstance(value[0], list | tuple | None)
    )
    entries = [value] if single else value
    if not isinstance(entries, list | tuple):
        raise UserError(f"{source}: eval guidance_interval must be [t_lo, t_hi], a list of them, or none")
    out: list[tuple[float, float] | None] = []
    for entry in entries:
        if entry is None:
            out.append(None)
        elif isinstance(entry, list | tuple) and len(entry) == 2:
            out.append((float(entry[0]), float(entry[1])))
        else:
            raise UserError(f"{source}: eval guidance_interval must be [t_lo, t_hi] pairs, got {entry!r}")
    return tuple(out)


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]
