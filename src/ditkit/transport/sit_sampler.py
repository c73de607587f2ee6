"""SiT's `Sampler`: the probability-flow ODE (torchdiffeq) and the SDE (Euler-Maruyama, Heun).

    sampler = Sampler(transport)
    sample_fn = sampler.sample_ode()                      # dopri5, atol 1e-6, rtol 1e-3
    x = sample_fn(z, model, y=labels)[-1]                 # model(x, t, y=labels), t from 0 to 1

Both return `sample_fn(z, model, **model_kwargs)` giving a sequence of states with the final sample
last: the ODE's states at `num_steps` evenly spaced times from t0 to t1 (z first, as torchdiffeq
returns them, a (num_steps, B, ...) tensor), the SDE's states after each of its num_steps - 1 steps and
after the final step to t = 1 (a list of num_steps tensors), as in SiT's code.

Differences from SiT's code: the SDE's noise comes from per-sample seeded streams (`noise=`, default
seeds 0..B-1) instead of the global RNG; "euler" and "heun" name torchdiffeq's fixed-grid solvers
("heun" is its "heun2"); an SBDM SDE whose diffusion is infinite at t = 0 starts at
`SBDM_MIN_START` (see `Transport.check_interval`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ditkit.diffusion.noise import NoiseSource, SeededNoise
from ditkit.errors import UserError
from ditkit.transport.paths import DIFFUSION_FORMS
from ditkit.transport.transport import FlowModel, Transport

# sample_fn(z, model, **model_kwargs) -> the states, final sample last (a stacked tensor or a list).
SampleFn = Callable[..., Tensor | list[Tensor]]
# torchdiffeq's names for the fixed-grid solvers the command line calls "euler" and "heun".
ODE_METHOD_ALIASES = {"heun": "heun2", "Euler": "euler", "Heun": "heun2"}
SDE_METHODS = ("Euler", "Heun")
LAST_STEPS = ("Mean", "Tweedie", "Euler")


def _times(t0: float, t1: float, num: int, device: torch.device, shift: float = 1.0) -> Tensor:
    times = shift_times(torch.linspace(t0, t1, num, dtype=torch.float64), shift)
    return times.to(device=device, dtype=torch.float32)


def shift_times(t: Tensor, shift: float) -> Tensor:
    """LightningDiT's timestep shift of a time grid: t -> s t / (1 + (s - 1) t), which keeps 0 and 1.

    With t = 0 at the noise, s < 1 packs the steps near the noise (their models sample with s = 0.3;
    hustvl/LightningDiT transport/integrators.py). s = 1 returns t unchanged.
    """
    if shift == 1.0:
        return t
    return shift * t / (1 + (shift - 1) * t)


class _Counter:
    """A model wrapper that advances a progress bar per call (the ODE solvers call it an unknown number of times)."""

    def __init__(self, model: FlowModel, bar: Any) -> None:
        self.model, self.bar = model, bar

    def __call__(self, *args: Any, **kwargs: Any) -> Tensor:
        out = self.model(*args, **kwargs)
        self.bar.update(1)
        return out


class Sampler:
    """Samplers of a `Transport` (SiT's interface).

    Args:
        transport: the objective the model was trained with.
    """

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.drift = transport.velocity
        self.score = transport.score

    def sample_ode(
        self,
        *,
        sampling_method: str = "dopri5",
        num_steps: int = 50,
        atol: float = 1e-6,
        rtol: float = 1e-3,
        reverse: bool = False,
        progress: bool = False,
        timestep_shift: float = 1.0,
    ) -> SampleFn:
        """The probability-flow ODE dx/dt = v(x, t) from t0 to t1, solved by torchdiffeq.

        Args:
            sampling_method: a torchdiffeq method: "dopri5" (adaptive), "euler", "heun", "rk4", ...
            num_steps: evenly spaced times from t0 to t1 at which states are returned (both ends
                included); for fixed-grid methods the solver steps between them (num_steps - 1 steps).
            atol, rtol: tolerances of adaptive methods.
            reverse: integrate from data to noise (1 -> 0), e.g. to encode images into noise.
            progress: show a bar counting model evaluations.
            timestep_shift: shift s of those times (`shift_times`; 1: evenly spaced).

        Returns:
            sample_fn(z, model, **model_kwargs) -> (num_steps, B, ...) states, the last at t1.
        """
        from torchdiffeq import odeint

        if num_steps < 2:
            raise UserError(f"the ODE needs num_steps >= 2 (both ends), got {num_steps}")
        method = ODE_METHOD_ALIASES.get(sampling_method, sampling_method)
        if method not in _torchdiffeq_methods():
            raise UserError(
                f"unknown ODE method {sampling_method!r}; try dopri5, euler or heun (torchdiffeq's names)"
            )
        t0, t1 = self.transport.check_interval(sde=False, eval=True, reverse=reverse)
        velocity = self.transport.velocity

        def sample_fn(z: Tensor, model: FlowModel, **model_kwargs: Any) -> Tensor:
            with tqdm(disable=not progress, desc=f"ODE {method}", unit="NFE") as bar:
                counted = _Counter(model, bar)

                def rhs(t: Tensor, x: Tensor) -> Tensor:
                    tt = torch.full((x.shape[0],), float(t), dtype=x.dtype, device=x.device)
                    return velocity(x, tt, counted, **model_kwargs)

                times = _times(t0, t1, num_steps, z.device, timestep_shift)
                # adaptive steps must land on the end, not overshoot it: paths such as VP are not
                # defined beyond t = 1 (SiT's solver steps past the end and interpolates back)
                options = {"step_t": times[-1:]} if _adaptive(method) else None
                return odeint(rhs, z, times, method=method, atol=atol, rtol=rtol, options=options)

        return sample_fn

    def sample_sde(
        self,
        *,
        sampling_method: str = "Euler",
        diffusion_form: str = "SBDM",
        diffusion_norm: float = 1.0,
        last_step: str | None = "Mean",
        last_step_size: float = 0.04,
        num_steps: int = 250,
        noise: NoiseSource | None = None,
        progress: bool = False,
    ) -> SampleFn:
        """The SDE dx = (v + w_t score) dt + sqrt(2 w_t) dW, which keeps the ODE's marginals.

        Args:
            sampling_method: "Euler" (Euler-Maruyama) or "Heun" (noise, then a Heun step on the drift).
            diffusion_form: w_t (`ditkit.transport.paths.DIFFUSION_FORMS`); "SBDM" is w_t = g(t).
            diffusion_norm: the scale of w_t.
            last_step: the final step from t1 = 1 - last_step_size to 1, without noise: "Mean" (along
                the SDE drift), "Euler" (along the velocity), "Tweedie" (the denoised mean), None.
            last_step_size: its length.
            num_steps: states returned: num_steps - 1 SDE steps from t0 to t1, then the last step.
            noise: per-sample streams of the step noise (default: seeds 0..B-1).
            progress: show a progress bar.

        Returns:
            sample_fn(z, model, **model_kwargs) -> list of num_steps states (B, ...).
        """
        if sampling_method not in SDE_METHODS:
            raise UserError(f"unknown SDE method {sampling_method!r}; choose one of {', '.join(SDE_METHODS)}")
        if diffusion_form not in DIFFUSION_FORMS:
            raise UserError(
                f"unknown diffusion form {diffusion_form!r}; choose one of {', '.join(DIFFUSION_FORMS)}"
            )
        if last_step is not None and last_step not in LAST_STEPS:
            raise UserError(f"unknown last step {last_step!r}; choose one of {', '.join(LAST_STEPS)} or None")
        if num_steps < 2:
            raise UserError(f"the SDE needs num_steps >= 2, got {num_steps}")
        size = 0.0 if last_step is None else float(last_step_size)
        t0, t1 = self.transport.check_interval(
            diffusion_form=diffusion_form, sde=True, eval=True, last_step_size=size
        )
        path = self.transport.path

        def sample_fn(z: Tensor, model: FlowModel, **model_kwargs: Any) -> list[Tensor]:
            streams = noise if noise is not None else SeededNoise(range(z.shape[0]), z.device)

            def w(x: Tensor, t: Tensor) -> Tensor:
                return path.compute_diffusion(x, t, diffusion_form, diffusion_norm)

            def drift(x: Tensor, t: Tensor) -> Tensor:
                v, score = self.transport.velocity_and_score(x, t, model, **model_kwargs)
                return v + w(x, t) * score

            times = _times(t0, t1, num_steps, z.device)
            dt = times[1] - times[0]
            x, states = z, []
            for i in tqdm(range(num_steps - 1), disable=not progress, desc=f"SDE {sampling_method}"):
                t = torch.full((z.shape[0],), float(times[i]), dtype=z.dtype, device=z.device)
                dw = streams.randn(z.shape[1:]).to(z) * dt.sqrt()
                if sampling_method == "Euler":
                    x = x + drift(x, t) * dt + torch.sqrt(2 * w(x, t)) * dw
                else:  # noise first, then a Heun step of the drift from t to t + dt
                    x_hat = x + torch.sqrt(2 * w(x, t)) * dw
                    k1 = drift(x_hat, t)
                    k2 = drift(x_hat + dt * k1, t + dt)
                    x = x_hat + 0.5 * dt * (k1 + k2)
                states.append(x)
            t_end = torch.full((z.shape[0],), float(t1), dtype=z.dtype, device=z.device)
            states.append(self._last_step(x, t_end, last_step, size, drift, model, model_kwargs))
            return states

        return sample_fn

    def _last_step(
        self,
        x: Tensor,
        t: Tensor,
        kind: str | None,
        size: float,
        drift: Callable[[Tensor, Tensor], Tensor],
        model: FlowModel,
        model_kwargs: dict[str, Any],
    ) -> Tensor:
        if kind is None:
            return x
        if kind == "Mean":
            return x + drift(x, t) * size
        if kind == "Euler":
            return x + self.drift(x, t, model, **model_kwargs) * size
        # Tweedie: E[x1 | x_t] = (x + sigma^2 score) / alpha
        path = self.transport.path
        alpha, _ = path.compute_alpha_t(t.view(-1, *([1] * (x.ndim - 1))))
        sigma, _ = path.compute_sigma_t(t.view(-1, *([1] * (x.ndim - 1))))
        return (x + sigma**2 * self.score(x, t, model, **model_kwargs)) / alpha


def _adaptive(method: str) -> bool:
    from torchdiffeq._impl.odeint import SOLVERS
    from torchdiffeq._impl.rk_common import RKAdaptiveStepsizeODESolver

    return issubclass(SOLVERS[method], RKAdaptiveStepsizeODESolver)


def _torchdiffeq_methods() -> set[str]:
    from torchdiffeq._impl.odeint import SOLVERS  # torchdiffeq's table of method names

    return set(SOLVERS)
