"""How a diffusion model was trained, as its checkpoint records it: what sampling must match.

The flow-matching counterpart is `ditkit.transport.settings.FlowSettings`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from ditkit.choices import DEFAULT_DIFFUSION_STEPS


@dataclass(frozen=True)
class DiffusionSettings:
    """The training process a model was trained with (what sampling must match).

    Attributes:
        noise_schedule: "linear" (DiT) or "cosine".
        diffusion_steps: length of the training chain (1000 for DiT).
        fixed_variance: "large" (beta_t, DiT) or "small", for models that do not learn sigma.
    """

    noise_schedule: str = "linear"
    diffusion_steps: int = DEFAULT_DIFFUSION_STEPS
    fixed_variance: str = "large"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> DiffusionSettings:
        """Read the settings from a checkpoint's record; keys it does not know are ignored."""
        data = dict(data or {})
        if "fixed_variance" not in data and "sigma_small" in data:
            data["fixed_variance"] = "small" if data["sigma_small"] else "large"
        known = {k: data[k] for k in ("noise_schedule", "diffusion_steps", "fixed_variance") if k in data}
        return cls(**known)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
