"""DiT's objective: the Gaussian diffusion process (Peebles & Xie 2023, sec. 3.1; Ho et al. 2020) and its
samplers (ancestral DDPM, DDIM, DPM-Solver++(2M))."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, ClassVar

from torch import Tensor

from ditkit.choices import DIFFUSION_SAMPLERS, OBJECTIVE_OPTIONS
from ditkit.diffusion.gaussian import GaussianDiffusion
from ditkit.diffusion.schedule import make_schedule
from ditkit.diffusion.settings import DiffusionSettings
from ditkit.objectives.base import (
    DIT_FID_GUIDANCE_SCALE,
    DIT_GUIDANCE_SCALE,
    SampleRequest,
    TrainingBatch,
    check_named_sampler,
    settings_record,
)
from ditkit.samplers.ddim import sample_ddim
from ditkit.samplers.ddpm import sample_ddpm
from ditkit.samplers.dpm_solver import sample_dpmpp_2m

SAMPLER_FUNCTIONS = dict(zip(DIFFUSION_SAMPLERS, (sample_ddpm, sample_ddim, sample_dpmpp_2m), strict=True))
# Default step counts: 250 DDPM steps as in the DiT paper's evaluations; 50 DDIM steps (Song et al.
# 2021, Table 1: most of the 1000-step quality); 20 DPM-Solver++ steps (Lu et al. 2022, abstract: 15-20).
DEFAULT_STEPS = {"ddpm": 250, "ddim": 50, "dpm++2m": 20}
# How an integer step count is spread over the chain: evenly with both ends for ddpm/ddim (as DiT's
# sampling does); time-uniform above t = 0 for DPM-Solver++, its authors' advice for high-resolution
# and latent models (DPM-Solver code, `skip_type`). With an evaluation at t = 0 the step into it is
# ~4.5x longer in log-SNR than the one before (linear schedule, 10-20 steps), which 2M amplifies.
INT_STEPS_SPACING = {"ddpm": "{}", "ddim": "{}", "dpm++2m": "uniform{}"}


class DiffusionObjective:
    """DiT's Gaussian diffusion: eps prediction (with learned sigma: the hybrid loss), integer timesteps.

    Args:
        settings: the process (noise schedule, chain length, fixed variance) sampling must match.
        min_snr_gamma: weight the noise loss by min(SNR_t, gamma) / SNR_t (Hang et al. 2023); None: uniform.
        learn_sigma: the model outputs eps and variance values (recorded for readers of the checkpoint).
    """

    name: ClassVar[str] = "diffusion"
    kind: ClassVar[str] = "diffusion"
    options: ClassVar[tuple[str, ...]] = OBJECTIVE_OPTIONS["diffusion"]
    samplers: ClassVar[tuple[str, ...]] = DIFFUSION_SAMPLERS
    default_sampler: ClassVar[str] = "ddpm"
    preview_sampler: ClassVar[str] = "ddim"
    walk_sampler: ClassVar[str] = "ddim"
    deterministic_samplers: ClassVar[tuple[str, ...]] = ("ddim", "dpm++2m")  # ddim with eta 0
    default_guidance_scale: ClassVar[float] = DIT_GUIDANCE_SCALE
    fid_guidance_scale: ClassVar[float] = DIT_FID_GUIDANCE_SCALE
    model_fields: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        settings: DiffusionSettings | None = None,
        *,
        min_snr_gamma: float | None = None,
        learn_sigma: bool = True,
    ) -> None:
        self.settings = settings or DiffusionSettings()
        self.min_snr_gamma = min_snr_gamma
        self.learn_sigma = learn_sigma

    def __repr__(self) -> str:
        return f"DiffusionObjective({self.settings}, min_snr_gamma={self.min_snr_gamma})"

    @classmethod
    def from_options(cls, config: Any) -> DiffusionObjective:
        """The objective a `TrainConfig` describes."""
        settings = DiffusionSettings(config.noise_schedule, config.diffusion_steps)
        return cls(settings, min_snr_gamma=config.min_snr_gamma, learn_sigma=config.learn_sigma)

    @classmethod
    def from_record(cls, extra: Mapping[str, Any]) -> DiffusionObjective:
        """The objective a checkpoint's `extra` records (DiT's process where it says nothing)."""
        return cls(DiffusionSettings.from_dict(settings_record(extra, "diffusion")))

    def record(self) -> dict[str, Any]:
        return {
            "objective": self.name,
            "diffusion": {**self.settings.to_dict(), "learn_sigma": self.learn_sigma},
        }

    # ---- training ----

    @functools.cached_property
    def process(self) -> GaussianDiffusion:
        """The full training chain."""
        s = self.settings
        schedule = make_schedule(s.noise_schedule, s.diffusion_steps)
        return GaussianDiffusion(schedule, s.fixed_variance, min_snr_gamma=self.min_snr_gamma)  # type: ignore[arg-type]

    def training_times(self) -> int:
        return int(self.process.num_timesteps)

    def losses(self, batch: TrainingBatch) -> dict[str, Tensor]:
        b = batch
        return self.process.training_losses(b.model, b.x, b.t, b.noise, b.labels)

    # ---- sampling ----

    @property
    def guidance_times(self) -> tuple[float, float]:
        return 0.0, float(self.settings.diffusion_steps - 1)

    @property
    def guidance_times_help(self) -> str:
        last = self.settings.diffusion_steps - 1
        return f"diffusion timesteps 0..{last} (noise at {last})"

    def default_steps(self, sampler: str) -> int | None:
        return DEFAULT_STEPS.get(sampler)

    def model_calls(self, sampler: str, steps: int) -> int | None:
        return steps  # one call per kept timestep, for each of the samplers

    def check_sampler(self, sampler: str, steps: Any, eta: float) -> None:
        check_named_sampler(self, sampler, eta)

    def sample(self, request: SampleRequest) -> Tensor:
        """Run `sampler` over the chain respaced to `steps` (an int, a respacing string or timesteps)."""
        r, s = request, self.settings
        steps = DEFAULT_STEPS[r.sampler] if r.steps is None else r.steps
        spacing = INT_STEPS_SPACING[r.sampler].format(steps) if isinstance(steps, int) else steps
        chain = GaussianDiffusion(
            make_schedule(s.noise_schedule, s.diffusion_steps, spacing),
            s.fixed_variance,  # type: ignore[arg-type]
        )
        run = (
            functools.partial(sample_ddim, eta=r.eta) if r.sampler == "ddim" else SAMPLER_FUNCTIONS[r.sampler]
        )
        return run(
            r.model,
            r.x,
            chain,
            y=r.y,
            noise=r.noise,
            clip_denoised=r.clip_denoised,
            progress=r.progress,
            callback=r.callback,
        )
