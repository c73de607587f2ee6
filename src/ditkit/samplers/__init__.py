"""Samplers over a callable model(x, t, y): DDPM, DDIM, DPM-Solver++(2M), classifier-free guidance, and the
`SamplingSettings` every sampling command shares. The entry point that picks a sampler for a model's
objective is `ditkit.objectives.sampling.sample` (`ditkit.sample`)."""

from typing import Any

from ditkit.samplers.settings import SamplingSettings

__all__ = ["ClassifierFreeGuidance", "SamplingSettings", "classifier_free_guidance"]


def __getattr__(name: str) -> Any:
    # The guidance (torch) is imported when asked for: the CLI reads `SamplingSettings` to build its
    # flags, and `--help` must not load torch.
    if name in ("ClassifierFreeGuidance", "classifier_free_guidance"):
        from ditkit.samplers import guidance

        return getattr(guidance, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
