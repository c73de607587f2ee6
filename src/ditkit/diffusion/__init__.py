"""The Gaussian diffusion process DiT trains with: schedules, respacing, the hybrid loss, likelihood."""

from ditkit.diffusion.gaussian import GaussianDiffusion
from ditkit.diffusion.schedule import Schedule, make_schedule

__all__ = ["GaussianDiffusion", "Schedule", "make_schedule"]
