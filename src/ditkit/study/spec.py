"""A study: a base training config, the axes to vary, and how every run is evaluated.

A spec file (TOML or JSON) has four tables; only `axes` is required:

    name = "widths"
    seeds = 3                   # every configuration trained with seeds base.seed, +1, +2 (default 1)
    [base]                      # TrainConfig fields (model fields such as depth go to model_overrides)
    model = "DiT-XS/4"
    steps = 2000
    [axes]                      # each a list; the runs are the product of the axes
    hidden_size = [64, 128]
    "patch_size" = [4, 7]
    "depth,num_heads" = [[2, 2], [4, 4]]    # a comma-joined key varies several fields together
    [axes.technique]            # named variants: a table of name = {fields}; each is compared with the first
    baseline = {}
    rmsnorm = {norm = "rmsnorm"}
    [eval]                      # EvalSettings fields
    fractions = [0.5, 1.0]
    cfg_scale = [1.0, 4.0]      # guidance scales (also spelled guidance_scale); a list is swept

Axis and base names are TrainConfig fields (`ditkit train --help`), so options added to the trainer
work here at once, or the DiT fields in MODEL_FIELDS.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path
from typing import Any

from ditkit.choices import OBJECTIVES
from ditkit.errors import UserError
from ditkit.study.eval_settings import GUIDANCE_KEY, EvalSettings
from ditkit.training.config import TrainConfig

__all__ = [
    "GUIDANCE_KEY",
    "OBJECTIVES",
    "EvalSettings",
    "RunPlan",
    "StudySpec",
    "load_spec",
    "spec_from_dict",
]

# DiT fields a study may set; they go into TrainConfig.model_overrides. The others come from the data
# (input_size, in_channels, num_classes) or have a TrainConfig twin (learn_sigma, class_dropout, ...).
MODEL_FIELDS = (
    "patch_size",
    "hidden_size",
    "depth",
    "num_heads",
    "mlp_ratio",
    "block",
    "activation",
    # LightningDiT's block options (`ditkit.model.dit.LIGHTNING_OPTIONS`)
    "norm",
    "mlp",
    "rope",
    "qk_norm",
    "adaln_shift",
)
# Set by the study for every run, never by a spec.
RESERVED_FIELDS = ("out", "keep_checkpoints")
# Short names of axis values in run names ("w128-p4"); axes listed in VALUE_ONLY show their value alone.
ABBREVIATIONS = {"hidden_size": "w", "patch_size": "p", "depth": "d", "num_heads": "h", "global_batch": "b"}
VALUE_ONLY = ("model", "block", "objective", "noise_schedule", "data")
SPEC_KEYS = ("name", "description", "seeds", "base", "axes", "eval")


@dataclass
class RunPlan:
    """One training run of a study: its name, the axis values that define it, and its config.

    Attributes:
        name: the run's folder name: the configuration's name, then `-seed<k>` when a study has
            several seeds.
        values: the axis values of its configuration.
        config: its training options.
        configuration: the name its seeds share (`name` without the seed).
        position: the index of each axis value in its axis (which configurations are neighbours).
    """

    name: str
    values: dict[str, Any]
    config: TrainConfig
    configuration: str = ""
    position: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        self.configuration = self.configuration or self.name

    @property
    def seed(self) -> int:
        return self.config.seed


@dataclass
class StudySpec:
    """A study: a base TrainConfig (as a dict), axes to vary and the evaluation settings.

    Attributes:
        name: the study's name (used in titles).
        base: TrainConfig fields shared by every run; DiT fields in MODEL_FIELDS go to model_overrides.
        axes: axis key -> values; a key "a,b" takes [a, b] pairs (fields varied together); a table
            {name: {field: value}} is an axis of named variants (compared with its first).
        eval: the evaluation settings.
        description: one line for the results page.
        seeds: training seeds of every configuration: base.seed, base.seed + 1, ... (each a run).
    """

    name: str
    base: dict[str, Any]
    axes: dict[str, Any]
    eval: EvalSettings = field(default_factory=EvalSettings)
    description: str = ""
    seeds: int = 1

    def to_dict(self) -> dict[str, Any]:
        return _plain(
            {
                "name": self.name,
                "description": self.description,
                "seeds": self.seeds,
                "base": self.base,
                "axes": self.axes,
                "eval": self.eval.to_dict(),
            }
        )

    def with_base(self, **changes: Any) -> StudySpec:
        """A copy whose base has these fields changed (None values are ignored)."""
        base = {**self.base, **{k: v for k, v in changes.items() if v is not None}}
        return dataclasses.replace(self, base=base)

    def seed_list(self) -> list[int]:
        """The training seeds of every configuration."""
        first = int(self.base.get("seed", 0))
        return list(range(first, first + self.seeds))

    def runs(self) -> list[RunPlan]:
        """The product of the axes (in axis order), each with every seed: one RunPlan each; checks
        every config."""
        if self.seeds < 1:
            raise UserError(f"study {self.name!r}: seeds must be at least 1, got {self.seeds}")
        keys = list(self.axes)
        if self.seeds > 1 and any("seed" in k.split(",") for k in keys):
            raise UserError(f"study {self.name!r}: give several seeds or a `seed` axis, not both")
        plans, names = [], set()
        ranges = [range(len(self.axes[k])) for k in keys]
        for position in itertools.product(*ranges):
            values: dict[str, Any] = {}  # the fields the run sets
            labels: dict[str, Any] = {}  # what the run's name and the results show
            for key, i in zip(keys, position, strict=True):
                axis = self.axes[key]
                if isinstance(axis, dict):  # named variants: the name stands for its fields
                    variant_name, fields = list(axis.items())[i]
                    values.update(fields)
                    labels[key] = variant_name
                else:
                    labels.update(_split_axis(key, axis[i]))
                    values.update(_split_axis(key, axis[i]))
            configuration = (
                "-".join(
                    _slug(k, v, k in self.axes and isinstance(self.axes[k], dict)) for k, v in labels.items()
                )
                or "base"
            )
            if configuration in names:
                raise UserError(f"two runs of study {self.name!r} would both be called {configuration!r}")
            names.add(configuration)
            for seed in self.seed_list():
                name = configuration if self.seeds == 1 else f"{configuration}-seed{seed}"
                config = self._config(name, {**values, "seed": seed} if self.seeds > 1 else values)
                plans.append(RunPlan(name, {**labels, **values}, config, configuration, position))
        return plans

    def _config(self, name: str, values: dict[str, Any]) -> TrainConfig:
        merged = _route({**self.base})
        routed = _route(values)
        merged["model_overrides"] = {**merged.get("model_overrides", {}), **routed.pop("model_overrides", {})}
        merged.update(routed)
        if merged.get("epochs") is not None or not merged.get("steps"):
            raise UserError(f"study {self.name!r}: give the base a number of `steps` (not epochs)")
        try:
            config = TrainConfig.from_dict(merged)
        except UserError as err:
            raise UserError(f"study {self.name!r}, run {name}: {err}") from None
        except (TypeError, ValueError) as err:
            raise UserError(f"study {self.name!r}, run {name}: bad value ({err})") from None
        _check_model(config, name)
        return config

    def eval_steps(self, total: int) -> list[int]:
        """The training steps evaluated for a run of `total` steps."""
        return sorted({max(1, round(f * total)) for f in self.eval.fractions})

    def checkpoint_every(self, total: int) -> int:
        """A checkpoint period that lands on every evaluation step (their gcd)."""
        return reduce(math.gcd, self.eval_steps(total))


def _route(values: dict[str, Any]) -> dict[str, Any]:
    """Move DiT fields into model_overrides; other keys stay TrainConfig fields."""
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key in train_fields:
            out[key] = value
        else:
            out.setdefault("model_overrides", {})[key] = value
    return out


def _check_model(config: TrainConfig, name: str) -> None:
    """Build the DiT config to catch bad values (the input size, which needs the data, is checked by the runner)."""
    from ditkit.model.presets import get_config

    try:
        patch = config.model_overrides.get("patch_size") or get_config(config.model).patch_size
        get_config(config.model, **{"input_size": patch, **config.model_overrides})
    except UserError as err:
        raise UserError(f"run {name}: {err}") from None
    except (TypeError, ValueError) as err:
        raise UserError(f"run {name}: invalid model options ({err})") from None


def _split_axis(key: str, value: Any) -> dict[str, Any]:
    parts = key.split(",")
    if len(parts) == 1:
        return {key: value}
    if not isinstance(value, list | tuple) or len(value) != len(parts):
        raise UserError(f"axis {key!r} takes lists of {len(parts)} values, got {value!r}")
    return dict(zip(parts, value, strict=True))


def _slug(key: str, value: Any, named: bool = False) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    if key == "model":
        text = text.removeprefix("DiT-")
    label = text if named or key in VALUE_ONLY else f"{ABBREVIATIONS.get(key, key)}{text}"
    return re.sub(r"[^A-Za-z0-9._=+]+", "-", label).strip("-")


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value))


def check_axes(axes: Any, source: str) -> dict[str, Any]:
    """Validate the axes table: known field names, non-empty lists of values."""
    if not isinstance(axes, dict) or not axes:
        raise UserError(f"{source}: needs an [axes] table with at least one axis (field = [values])")
    allowed = axis_names()
    out: dict[str, Any] = {}
    for key, values in axes.items():
        if isinstance(values, dict):
            out[key] = _check_variants(key, values, allowed, source)
            continue
        for part in key.split(","):
            if part.strip() not in allowed:
                raise UserError(
                    f"{source}: unknown axis {part.strip()!r}; axes are TrainConfig fields "
                    f"(see `ditkit train --help`) or model fields ({', '.join(MODEL_FIELDS)})"
                )
        if not isinstance(values, list) or not values:
            raise UserError(f"{source}: axis {key!r} needs a non-empty list of values")
        out[",".join(p.strip() for p in key.split(","))] = values
    return out


def _check_variants(key: str, variants: dict[str, Any], allowed: set[str], source: str) -> dict[str, Any]:
    """A named-variants axis: {name: {field: value}}, its label not itself a field."""
    if key in allowed or "," in key:
        raise UserError(f"{source}: the named variants' axis {key!r} needs a label that is no field name")
    if not variants:
        raise UserError(f"{source}: axis {key!r} needs at least one named variant")
    for name, fields in variants.items():
        if not isinstance(fields, dict):
            raise UserError(f"{source}: variant {key}.{name} must be a table of fields, got {fields!r}")
        unknown = sorted(set(fields) - allowed)
        if unknown:
            raise UserError(
                f"{source}: variant {key}.{name} sets unknown field {unknown[0]!r}; fields are TrainConfig "
                f"fields (see `ditkit train --help`) or model fields ({', '.join(MODEL_FIELDS)})"
            )
    return {str(name): dict(fields) for name, fields in variants.items()}


def axis_names() -> set[str]:
    """Names an axis (or a base field) may have."""
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)} - set(RESERVED_FIELDS)
    return train_fields | set(MODEL_FIELDS)


def spec_from_dict(data: Any, source: str) -> StudySpec:
    """Validate a parsed spec file (or a built-in's dict) and build the StudySpec."""
    if not isinstance(data, dict):
        raise UserError(f"{source}: a study spec is a table with {', '.join(SPEC_KEYS)}")
    unknown = sorted(set(data) - set(SPEC_KEYS))
    if unknown:
        raise UserError(f"{source}: unknown key {unknown[0]!r}; a spec has {', '.join(SPEC_KEYS)}")
    base = data.get("base", {})
    if not isinstance(base, dict):
        raise UserError(f"{source}: [base] must be a table of TrainConfig fields")
    bad = sorted(set(base) - axis_names() - {"model_overrides"})
    if bad:
        raise UserError(
            f"{source}: unknown base field {bad[0]!r}; use TrainConfig fields (see `ditkit train --help`) "
            f"or model fields ({', '.join(MODEL_FIELDS)})"
        )
    name = str(data.get("name") or Path(source).stem)
    seeds = data.get("seeds", 1)
    if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
        raise UserError(f"{source}: seeds must be a whole number >= 1, got {seeds!r}")
    spec = StudySpec(
        name=name,
        base=dict(base),
        axes=check_axes(data.get("axes"), source),
        eval=EvalSettings.from_dict(data.get("eval", {}), source),
        description=str(data.get("description", "")),
        seeds=seeds,
    )
    return spec


def load_spec(path: str | Path) -> StudySpec:
    """Read a TOML (`.toml`) or JSON (`.json`) spec file; any problem is one UserError line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no such study spec: {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError:
            raise UserError("TOML specs need Python 3.11 or newer; write the spec as JSON") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise UserError(f"{path} is not valid TOML: {err}") from None
    elif path.suffix == ".json":
        try:
            data = json.loads(text)
        except ValueError as err:
            raise UserError(f"{path} is not valid JSON: {err}") from None
    else:
        raise UserError(f"{path}: a study spec is a .toml or .json file")
    return spec_from_dict(data, str(path))
