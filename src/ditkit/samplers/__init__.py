"""Samplers over a callable model(x, t, y): DDPM, DDIM, DPM-Solver++(2M), and classifier-free guidance."""

from ditkit.samplers.api import sample
from ditkit.samplers.guidance import ClassifierFreeGuidance, classifier_free_guidance

__all__ = ["ClassifierFreeGuidance", "classifier_free_guidance", "sample"]
