"""Samplers over a callable model(x, t, y): DDPM, DDIM, DPM-Solver++(2M), classifier-free guidance, and the
`SamplingSettings` every sampling command shares. The entry point that picks a sampler for a model's
objective is `ditkit.objectives.sampling.sample` (`ditkit.sample`)."""

from ditkit.samplers.guidance import ClassifierFreeGuidance, classifier_free_guidance
from ditkit.samplers.settings import SamplingSettings

__all__ = ["ClassifierFreeGuidance", "SamplingSettings", "classifier_free_guidance"]
