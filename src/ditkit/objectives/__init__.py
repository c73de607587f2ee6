"""What a DiT is trained to do and how it is sampled: one `Objective` per training objective.

- `base`: the `Objective` protocol;
- `diffusion`: DiT's Gaussian diffusion and its samplers (`DiffusionObjective`);
- `flow`: flow matching as in SiT (`FlowObjective`);
- `meanflow`: MeanFlow's one- and few-step objective (`MeanFlowObjective`);
- `registry`: the objectives by name, from a run's options or a checkpoint's record;
- `sampling`: `sample(...)`, the one entry point that applies the noise, labels and guidance around an
  objective's sampler;
- `dit_compat`: the official DiT code's `create_diffusion` as a thin face over these.
"""

from ditkit.objectives.base import Objective
from ditkit.objectives.diffusion import DiffusionObjective
from ditkit.objectives.flow import FlowObjective
from ditkit.objectives.meanflow import MeanFlowObjective
from ditkit.objectives.registry import (
    OBJECTIVE_TYPES,
    as_objective,
    objective_from_options,
    objective_from_record,
)

__all__ = [
    "OBJECTIVE_TYPES",
    "DiffusionObjective",
    "FlowObjective",
    "MeanFlowObjective",
    "Objective",
    "as_objective",
    "objective_from_options",
    "objective_from_record",
]
