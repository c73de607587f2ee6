"""The objectives by name, and how a run's options or a checkpoint's record pick one."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ditkit.choices import OBJECTIVES
from ditkit.errors import UserError
from ditkit.objectives.base import Objective
from ditkit.objectives.diffusion import DiffusionObjective
from ditkit.objectives.flow import FlowObjective
from ditkit.objectives.meanflow import MeanFlowObjective

# Name -> implementation; the names are `ditkit.choices.OBJECTIVES` (the CLI's choice list).
OBJECTIVE_TYPES: dict[str, Any] = {
    cls.name: cls for cls in (DiffusionObjective, FlowObjective, MeanFlowObjective)
}
assert tuple(OBJECTIVE_TYPES) == OBJECTIVES, "ditkit.choices.OBJECTIVES lists the registered objectives"


def objective_type(name: str) -> Any:
    """The class of the objective called `name`."""
    if name not in OBJECTIVE_TYPES:
        raise UserError(f"unknown objective {name!r}; choose one of {', '.join(OBJECTIVE_TYPES)}")
    return OBJECTIVE_TYPES[name]


def objective_from_options(config: Any) -> Objective:
    """The objective a `TrainConfig` trains with."""
    return objective_type(config.objective).from_options(config)


def as_objective(objective: Objective | str | None) -> Objective:
    """An objective, by name with its defaults (None: DiT's diffusion), or as given."""
    if objective is None:
        return DiffusionObjective()
    if isinstance(objective, str):
        return objective_type(objective)()
    return objective


def objective_from_record(
    extra: Mapping[str, Any], requested: str | None = None, source: object = "the checkpoint"
) -> tuple[Objective, str | None]:
    """The objective a checkpoint records (or `requested`, for files that do not say), and a note on
    what was assumed.

    Released files that do not say (official DiT and SiT .pt files have the same keys) are read as
    `requested`, else as diffusion; asking for another objective than the file records is an error.
    """
    if requested is not None:
        objective_type(requested)
    stored = extra.get("objective")
    if stored is None and FlowObjective.described_in(extra):
        stored = FlowObjective.name
    if stored is not None and requested is not None and stored != requested:
        raise UserError(f"{source} holds a {objective_type(stored).kind} model; drop --objective {requested}")
    cls = objective_type(stored or requested or DiffusionObjective.name)
    objective = cls.from_record(extra)
    note = None
    if cls is FlowObjective and not FlowObjective.described_in(extra):
        s = objective.settings
        note = (
            f"the checkpoint does not describe its flow; assuming SiT's defaults ({s.path_type} path, "
            f"{s.prediction} prediction)"
        )
    return objective, note
