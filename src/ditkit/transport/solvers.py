"""The named flow solvers behind `ditkit.sample(..., objective="flow")`, `DiTPipeline` and `ditkit sample`.

- "dopri5": the probability-flow ODE with torchdiffeq's adaptive Dormand-Prince solver at SiT's
  tolerances (atol 1e-6, rtol 1e-3); steps are not given.
- "euler", "heun": the ODE on `steps` equal time steps (1 or 2 model evaluations per step).
- "sde-euler", "sde-heun": SiT's SDE with its command-line defaults (diffusion w_t = sigma_t, a final
  "Mean" step of 0.04 to t = 1); `steps` model evaluations (Heun: about twice that), per-sample noise.

The model is called as model(x, t, y) with t (B,) in [0, 1] (data at 1); guidance wraps it beforehand.
"""

from __future__ import annotations

from torch import Tensor

from ditkit.choices import FLOW_SAMPLERS
from ditkit.diffusion.gaussian import ModelFn
from ditkit.diffusion.noise import NoiseSource
from ditkit.errors import UserError
from ditkit.transport.settings import DEFAULT_FLOW_STEPS, FlowSettings
from ditkit.transport.sit_sampler import Sampler
from ditkit.transport.transport import Transport

# SiT's sample.py defaults for the SDE (its parse_sde_args): w_t = sigma_t at norm 1, a final mean step.
SDE_DIFFUSION_FORM = "sigma"
SDE_DIFFUSION_NORM = 1.0
SDE_LAST_STEP = "Mean"
SDE_LAST_STEP_SIZE = 0.04
# SiT's ODE tolerances (its sample.py --atol / --rtol).
ODE_ATOL = 1e-6
ODE_RTOL = 1e-3


def check_flow_sampler(sampler: str, steps: int | None) -> None:
    """Raise UserError for an unknown flow sampler or a step count it cannot take."""
    if sampler not in FLOW_SAMPLERS:
        raise UserError(f"unknown flow sampler {sampler!r}; choose one of {', '.join(FLOW_SAMPLERS)}")
    if sampler == "dopri5" and steps is not None:
        raise UserError("dopri5 chooses its own steps; drop --steps, or pick euler, heun or an sde sampler")
    if steps is not None and steps < 1:
        raise UserError(f"steps must be positive, got {steps}")


def flow_model_calls(sampler: str, steps: int) -> int | None:
    """Model calls of one sample with a named flow sampler in `steps` steps (None: dopri5, adaptive)."""
    per_step = 2 if sampler.endswith("heun") else 1
    if sampler in ("euler", "heun"):
        return per_step * steps  # torchdiffeq's heun2 evaluates the end of its last step too
    if sampler in ("sde-euler", "sde-heun"):
        return per_step * (steps - 1) + 1  # steps - 1 SDE steps, then the last step's one call
    return None


def sample_flow(
    model: ModelFn,
    x: Tensor,
    settings: FlowSettings,
    *,
    y: Tensor | None,
    sampler: str,
    steps: int | None,
    noise: NoiseSource,
    progress: bool = False,
    timestep_shift: float = 1.0,
) -> Tensor:
    """Integrate from noise x (B, C, H, W) at t0 to data at t = 1 with a named sampler.

    Args:
        model: called as model(x_t, t (B,) float32 in [0, 1], y) -> (B, C or 2C, H, W).
        x: the starting noise.
        settings: the model's flow settings.
        y: (B,) labels or None.
        sampler: one of `FLOW_SAMPLERS`.
        steps: the fixed-step samplers' steps (default `DEFAULT_FLOW_STEPS`); None for dopri5.
        noise: per-sample streams of the SDE's noise.
        progress: show a progress bar.
        timestep_shift: euler and heun's time grid, shifted (`ditkit.transport.sit_sampler.shift_times`).

    Returns:
        (B, C, H, W) float32 samples.
    """
    check_flow_sampler(sampler, steps)
    flow_sampler = Sampler(Transport(settings))

    def bound(x_t: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        return model(x_t, t, y)

    if sampler == "dopri5":
        run = flow_sampler.sample_ode(
            sampling_method="dopri5", num_steps=2, atol=ODE_ATOL, rtol=ODE_RTOL, progress=progress
        )
    elif sampler in ("euler", "heun"):
        n = DEFAULT_FLOW_STEPS[sampler] if steps is None else steps
        run = flow_sampler.sample_ode(
            sampling_method=sampler, num_steps=n + 1, progress=progress, timestep_shift=timestep_shift
        )
    else:
        n = DEFAULT_FLOW_STEPS[sampler] if steps is None else steps
        if n < 2:
            raise UserError(f"the SDE samplers need at least 2 steps, got {n}")
        run = flow_sampler.sample_sde(
            sampling_method="Euler" if sampler == "sde-euler" else "Heun",
            diffusion_form=SDE_DIFFUSION_FORM,
            diffusion_norm=SDE_DIFFUSION_NORM,
            last_step=SDE_LAST_STEP,
            last_step_size=SDE_LAST_STEP_SIZE,
            num_steps=n,
            noise=noise,
            progress=progress,
        )
    return run(x, bound, y=y)[-1].float()
