"""The original diffusion package's names (guided-diffusion as vendored by facebookresearch/DiT).

`create_diffusion(...)` returns an object with `training_losses`, `p_sample_loop`,
`ddim_sample_loop` and `calc_bpd_loop` taking the original arguments, so code written against
the original runs unchanged. Each is a thin call into ditkit's `GaussianDiffusion` and samplers.

Differences: the sampling loops draw their noise from per-sample seeds (default 0..B-1) instead
of the global RNG, and `denoised_fn` / `cond_fn` (classifier guidance) are not supported.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ditkit.diffusion.gaussian import GaussianDiffusion, ModelFn
from ditkit.diffusion.noise import SeededNoise
from ditkit.diffusion.schedule import DEFAULT_DIFFUSION_STEPS, make_schedule
from ditkit.errors import UserError

OriginalModel = Callable[..., Tensor]  # model(x, t, **model_kwargs)


def create_diffusion(
    timestep_respacing: str | Sequence[int] | None,
    noise_schedule: str = "linear",
    use_kl: bool = False,
    sigma_small: bool = False,
    predict_xstart: bool = False,
    learn_sigma: bool = True,
    rescale_learned_sigmas: bool = False,
    diffusion_steps: int = DEFAULT_DIFFUSION_STEPS,
) -> SpacedDiffusion:
    """The DiT repo's `create_diffusion`: the ADM process, respaced, with learned or fixed sigma.

    Args:
        timestep_respacing: "" or None for all steps (training); "250", "ddim50", ... for sampling.
        noise_schedule: "linear" or "cosine".
        sigma_small: for fixed-variance models, use the posterior variance instead of beta_t.
        learn_sigma: the model outputs eps and variance values (hybrid loss) rather than eps only.
        diffusion_steps: length of the training chain.
        use_kl, predict_xstart, rescale_learned_sigmas: accepted for compatibility; only False
            (DiT's setting) is supported.
    """
    unsupported = {
        "use_kl": use_kl,
        "predict_xstart": predict_xstart,
        "rescale_learned_sigmas": rescale_learned_sigmas,
    }
    for name, value in unsupported.items():
        if value:
            raise UserError(f"create_diffusion({name}=True) is not supported; DiT uses {name}=False")
    schedule = make_schedule(noise_schedule, diffusion_steps, timestep_respacing)
    return SpacedDiffusion(GaussianDiffusion(schedule, "small" if sigma_small else "large"), learn_sigma)


class SpacedDiffusion:
    """The original diffusion object's interface over a `GaussianDiffusion`.

    Timesteps `t` index the respaced chain (0..num_timesteps-1); the model sees original timesteps.
    """

    def __init__(self, diffusion: GaussianDiffusion, learn_sigma: bool) -> None:
        self.diffusion = diffusion
        self.learn_sigma = learn_sigma

    @property
    def num_timesteps(self) -> int:
        return self.diffusion.num_timesteps

    @property
    def timestep_map(self) -> list[int]:
        """Original timestep of each step of this chain."""
        return [int(t) for t in self.diffusion.schedule.timesteps]

    @property
    def betas(self) -> np.ndarray:
        return self.diffusion.schedule.betas

    @property
    def alphas_cumprod(self) -> np.ndarray:
        return self.diffusion.schedule.alphas_cumprod

    def _bind(self, model: OriginalModel, model_kwargs: dict[str, Any] | None) -> ModelFn:
        """Adapt model(x, t, **model_kwargs) to ditkit's model(x, t, y), checking the output channels."""
        kwargs = model_kwargs or {}

        def bound(x: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
            out = model(x, t, **kwargs)
            expected = 2 * x.shape[1] if self.learn_sigma else x.shape[1]
            if out.shape[1] != expected:
                raise UserError(
                    f"model returned {out.shape[1]} channels but the diffusion was created with "
                    f"learn_sigma={self.learn_sigma} (expected {expected}); match create_diffusion to the model"
                )
            return out

        return bound

    def q_sample(self, x_start: Tensor, t: Tensor, noise: Tensor | None = None) -> Tensor:
        noise = torch.randn_like(x_start) if noise is None else noise  # the original's global-RNG default
        return self.diffusion.q_sample(x_start, t, noise)

    def training_losses(
        self,
        model: OriginalModel,
        x_start: Tensor,
        t: Tensor,
        model_kwargs: dict[str, Any] | None = None,
        noise: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Per-sample {"loss", "mse"(, "vb")}, each (B,); see `GaussianDiffusion.training_losses`."""
        noise = torch.randn_like(x_start) if noise is None else noise  # the original's global-RNG default
        return self.diffusion.training_losses(self._bind(model, model_kwargs), x_start, t, noise)

    def p_sample_loop(
        self,
        model: OriginalModel,
        shape: Sequence[int],
        noise: Tensor | None = None,
        clip_denoised: bool = True,
        denoised_fn: Callable[[Tensor], Tensor] | None = None,
        cond_fn: Callable[..., Tensor] | None = None,
        model_kwargs: dict[str, Any] | None = None,
        device: torch.device | str | None = None,
        progress: bool = False,
        seeds: Sequence[int] | None = None,
    ) -> Tensor:
        """Ancestral sampling over this chain; returns (B, C, H, W)."""
        from ditkit.samplers.ddpm import sample_ddpm

        x, streams = self._start(model, shape, noise, device, seeds, denoised_fn, cond_fn)
        bound = self._bind(model, model_kwargs)
        with torch.no_grad():
            return sample_ddpm(
                bound, x, self.diffusion, noise=streams, clip_denoised=clip_denoised, progress=progress
            )

    def ddim_sample_loop(
        self,
        model: OriginalModel,
        shape: Sequence[int],
        noise: Tensor | None = None,
        clip_denoised: bool = True,
        denoised_fn: Callable[[Tensor], Tensor] | None = None,
        cond_fn: Callable[..., Tensor] | None = None,
        model_kwargs: dict[str, Any] | None = None,
        device: torch.device | str | None = None,
        progress: bool = False,
        eta: float = 0.0,
        seeds: Sequence[int] | None = None,
    ) -> Tensor:
        """DDIM sampling over this chain (respace with "ddim50" etc.); returns (B, C, H, W)."""
        from ditkit.samplers.ddim import sample_ddim

        x, streams = self._start(model, shape, noise, device, seeds, denoised_fn, cond_fn)
        bound = self._bind(model, model_kwargs)
        with torch.no_grad():
            return sample_ddim(
                bound,
                x,
                self.diffusion,
                noise=streams,
                clip_denoised=clip_denoised,
                progress=progress,
                eta=eta,
            )

    def calc_bpd_loop(
        self,
        model: OriginalModel,
        x_start: Tensor,
        clip_denoised: bool = True,
        model_kwargs: dict[str, Any] | None = None,
        seeds: Sequence[int] | None = None,
    ) -> dict[str, Tensor]:
        """The full variational bound; see `ditkit.diffusion.likelihood.nll_bpd`."""
        from ditkit.diffusion.likelihood import nll_bpd

        return nll_bpd(self.diffusion, self._bind(model, model_kwargs), x_start, None, seeds, clip_denoised)

    def _start(
        self,
        model: OriginalModel,
        shape: Sequence[int],
        noise: Tensor | None,
        device: torch.device | str | None,
        seeds: Sequence[int] | None,
        denoised_fn: object,
        cond_fn: object,
    ) -> tuple[Tensor, SeededNoise]:
        if denoised_fn is not None or cond_fn is not None:
            raise UserError("denoised_fn and cond_fn are not supported by ditkit's samplers")
        if device is None:
            device = noise.device if noise is not None else _model_device(model)
        streams = SeededNoise(range(shape[0]) if seeds is None else seeds, device)
        if len(streams) != shape[0]:
            raise UserError(f"got {len(streams)} seeds for {shape[0]} samples")
        x = streams.randn(tuple(shape)[1:])  # always drawn: given noise must not reappear as step noise
        if noise is not None:
            x = noise.to(device)
        return x, streams


def _model_device(model: OriginalModel) -> torch.device:
    """The device of a module's first parameter (a bound method's module too), else the CPU."""
    module = getattr(model, "__self__", model)
    if isinstance(module, torch.nn.Module):
        param = next(module.parameters(), None)
        if param is not None:
            return param.device
    return torch.device("cpu")
