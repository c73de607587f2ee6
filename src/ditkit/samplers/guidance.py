"""Classifier-free guidance (Ho & Salimans 2022) as a wrapper around a denoiser.

eps_guided = eps(x, null) + s (eps(x, y) - eps(x, null)), computed with one batched forward pass
over [cond; null]. The variance channels of a learned-sigma model are taken from the
conditional branch, as in the official DiT code.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from ditkit.choices import GUIDED_CHANNELS
from ditkit.diffusion.gaussian import ModelFn
from ditkit.errors import UserError

GuidedChannels = Literal["all", "first3"]
# The official DiT `forward_with_cfg` guides only eps channels 0..2 of the 4 latent channels (a slip
# the authors kept so that FID 2.27 reproduces: facebookresearch/DiT models.py); "first3" mirrors it.
OFFICIAL_GUIDED_CHANNELS = 3


class ClassifierFreeGuidance:
    """A model callable that applies classifier-free guidance to another one.

    Args:
        model: denoiser called as model(x, t, y) -> (B, C or 2C, H, W).
        guidance_scale: guidance scale s (1 = the conditional model, 0 = the unconditional one).
        null_label: the label meaning "no class" (DiT: `model.null_class`, the number of classes).
        guided_channels: "all" (correct, the default) or "first3" (the official DiT behaviour).
        interval: optional (t_min, t_max), inclusive, in the model's timesteps: guide only there and
            use the plain conditional model elsewhere.

    Example:
        >>> guided = ClassifierFreeGuidance(model, guidance_scale=4.0, null_label=model.null_class)
        >>> out = guided(x, t, y)  # (B, 2C, H, W), one forward pass over 2B samples
    """

    def __init__(
        self,
        model: ModelFn,
        guidance_scale: float,
        null_label: int,
        guided_channels: GuidedChannels = "all",
        interval: tuple[float, float] | None = None,
    ) -> None:
        if guided_channels not in GUIDED_CHANNELS:
            raise UserError(
                f"guided_channels must be one of {', '.join(GUIDED_CHANNELS)}, got {guided_channels!r}"
            )
        if interval is not None and not interval[0] <= interval[1]:
            raise UserError(f"guidance interval must be (low, high) with low <= high, got {interval}")
        self.model = model
        self.guidance_scale = float(guidance_scale)
        self.null_label = int(null_label)
        self.guided_channels = guided_channels
        self.interval = interval

    def __call__(self, x: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
        """Guided output (B, C or 2C, H, W) for x (B, C, H, W), t (B,), y (B,)."""
        if y is None:
            raise UserError("classifier-free guidance needs class labels")
        active = None
        if self.interval is not None:
            times = t if t.ndim == 1 else t[:, 0]  # (B, 2) times: the time and an interval (MeanFlow)
            active = (times >= self.interval[0]) & (times <= self.interval[1])  # (B,)
            if not bool(active.any()):
                return self.model(x, t, y)
        null = torch.full_like(y, self.null_label)
        both = self.model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]))  # (2B, C or 2C, H, W)
        cond, uncond = both.chunk(2)
        n = x.shape[1] if self.guided_channels == "all" else min(OFFICIAL_GUIDED_CHANNELS, x.shape[1])
        guided_eps = uncond[:, :n] + self.guidance_scale * (cond[:, :n] - uncond[:, :n])
        guided = torch.cat([guided_eps, cond[:, n:]], dim=1)
        if active is not None:
            guided = torch.where(active.view(-1, *([1] * (x.ndim - 1))), guided, cond)
        return guided


def classifier_free_guidance(
    model: ModelFn,
    guidance_scale: float,
    null_label: int,
    guided_channels: GuidedChannels = "all",
    interval: tuple[float, float] | None = None,
) -> ClassifierFreeGuidance:
    """Wrap `model` with classifier-free guidance; see `ClassifierFreeGuidance` for the arguments."""
    return ClassifierFreeGuidance(model, guidance_scale, null_label, guided_channels, interval)
