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
# Sample steps: one count, or several (a sweep; a spec's list, held as a tuple).
Steps = int | tuple[int, ...]


@dataclass(frozen=True)
class EvalSettings:
    """How every run is evaluated: the same sampler, seeds and sample count for all of them.

    Attributes:
        fractions: evaluate at these fractions of the training steps (each in (0, 1]).
        num_samples: images per evaluation; image i has label i % num_classes and seed `seed + i`.
        sampler, sample_steps: the sampler of `ditkit.samplers` and its steps; or a table keyed by the
            training objective ({"diffusion": "dpm++2m", "flow": "heun"}), for studies that mix them.
            Steps may be a list, swept as the guidance scales are ({"flow": [2, 4, 8], "meanflow": [1, 2]}).
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
    sample_steps: Steps | dict[str, Steps] = 20
    guidance_scale: tuple[float, ...] = (1.0,)
    guided_channels: tuple[str, ...] = ("all",)
    guidance_interval: tuple[tuple[float, float] | None, ...] = (None,)
    seed: int = 0
    batch_size: int = 250
    precision: str = "auto"

    def check(self) -> None:
        if not self.fractions or any(not 0 < f <= 1 for f in self.fractions):
            raise UserError(f"eval fractions must lie in (0, 1], got {list(self.fractions)}")
        if self.num_samples < 2 or self.batch_size < 1:
            raise UserError("eval num_samples must be >= 2 and batch_size >= 1")
        _check_steps(self.sample_steps)
        known = known_samplers()
        for name in self.sampler.values() if isinstance(self.sampler, dict) else [self.sampler]:
            if name not in known:
                raise UserError(f"unknown eval sampler {name!r}; choose one of {', '.join(known)}")
        if isinstance(self.sampler, dict):
            _check_objective_keys("sampler", self.sampler)
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

    def sampler_for(self, objective: str) -> tuple[str, tuple[int, ...]]:
        """The sampler and its step counts (one, or the sweep) for a model trained with `objective`."""
        sampler = self.sampler if isinstance(self.sampler, str) else self.sampler.get(objective)
        steps = self.sample_steps.get(objective) if isinstance(self.sample_steps, dict) else self.sample_steps
        if sampler is None or steps is None:
            raise UserError(f"the eval sampler table names no sampler or steps for {objective} models")
        return sampler, steps if isinstance(steps, tuple) else (steps,)

    def variants(self, objective: str) -> list[SamplingSettings]:
        """Every setting drawn at each evaluation step of a model trained with `objective`: its sampler at
        each step count x guidance scale x channels x interval, with the evaluation's seed. Scale 1 is no
        guidance, where channels and intervals change nothing: it is drawn once, with the first of each."""
        sampler, counts = self.sampler_for(objective)
        first = (self.guided_channels[0], self.guidance_interval[0])
        return [
            SamplingSettings(
                sampler=sampler,
                steps=n,
                guidance_scale=s,
                guided_channels=c,
                guidance_interval=i,
                seed=self.seed,
            )
            for n, s, c, i in itertools.product(
                counts, self.guidance_scale, self.guided_channels, self.guidance_interval
            )
            if s != 1.0 or (c, i) == first
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
        steps = d.get("sample_steps")
        if isinstance(steps, dict):
            d["sample_steps"] = {k: _tuple(v) for k, v in steps.items()}
        elif steps is not None:
            d["sample_steps"] = _tuple(steps)
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


def _tuple(value: Any) -> Any:
    """A list as a tuple (what the frozen settings hold); anything else as it is, for `check`."""
    return tuple(value) if isinstance(value, list | tuple) else value


def _check_steps(steps: Any) -> None:
    """One count >= 1, a non-empty list of distinct ones, or a table of those keyed by objective."""
    if isinstance(steps, dict):
        _check_objective_keys("sample_steps", steps, allow_empty=False)
        entries = [(f"sample_steps.{key}", value) for key, value in steps.items()]
    else:
        entries = [("sample_steps", steps)]
    for where, value in entries:
        counts = list(value) if isinstance(value, list | tuple) else [value]
        whole = all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in counts)
        if not counts or not whole or len(set(counts)) < len(counts):
            shown = list(value) if isinstance(value, tuple) else value
            raise UserError(
                f"eval {where} must be a whole number >= 1 or a list of distinct ones, got {shown!r}"
            )


def _check_objective_keys(field: str, table: dict[str, Any], allow_empty: bool = True) -> None:
    """A per-objective table (`sampler`, `sample_steps`) has no key but objectives' names."""
    if (not table and not allow_empty) or not set(table) <= set(OBJECTIVES):
        raise UserError(
            f"eval {field} tables are keyed by objective ({', '.join(OBJECTIVES)}), got {list(table)}"
        )
