"""Exponential moving average of the model's weights, kept in float32 and updated with fused list ops."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ditkit.distributed import full_tensor, like_layout

# Warmup of the decay for short runs: min(decay, (1 + n) / (10 + n)) after n updates, the schedule of
# TensorFlow's ExponentialMovingAverage with num_updates (also used by LDM and k-diffusion).
EMA_WARMUP_OFFSET = 10


class EMA:
    """EMA weights theta_ema <- decay * theta_ema + (1 - decay) * theta after every optimizer step.

    Buffers (DiT has none) are copied, not averaged. With FSDP the tensors are the local shards
    (DTensors), so the EMA is sharded as the model is.

    Args:
        model: the trained module (unwrapped from DDP); its current weights start the average,
            as in DiT (`update_ema(ema, model, decay=0)`).
        decay: the decay per step.
        warmup: use min(decay, (1 + n) / (10 + n)) after n updates.
    """

    def __init__(self, model: nn.Module, decay: float, warmup: bool = False) -> None:
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0
        self.names = [name for name, _ in model.named_parameters()]
        self.shadow = [p.detach().float().clone() for p in model.parameters()]

    def current_decay(self) -> float:
        """The decay the next update will use."""
        if not self.warmup:
            return self.decay
        n = self.num_updates
        return min(self.decay, (1 + n) / (EMA_WARMUP_OFFSET + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards the model's current parameters."""
        params = [p.detach() if p.dtype == torch.float32 else p.detach().float() for p in model.parameters()]
        torch._foreach_lerp_(self.shadow, params, 1.0 - self.current_decay())
        self.num_updates += 1

    def weights(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The EMA as a full state dict with the model's keys (buffers taken from the model).

        With FSDP this gathers the shards: every process must call it.
        """
        averaged = dict(zip(self.names, self.shadow, strict=True))
        return {k: full_tensor(averaged.get(k, v)) for k, v in model.state_dict().items()}

    @torch.no_grad()
    def load_weights(self, weights: Mapping[str, torch.Tensor]) -> None:
        """Set the average from a state dict (e.g. a checkpoint's ema.safetensors)."""
        missing = [name for name in self.names if name not in weights]
        if missing:
            raise KeyError(f"EMA weights lack {', '.join(missing[:3])}")
        for name, t in zip(self.names, self.shadow, strict=True):
            t.copy_(like_layout(weights[name], t))

    def state_dict(self) -> dict[str, Any]:
        """Counters only; the weights are saved as ema.safetensors beside the model's."""
        return {"num_updates": self.num_updates, "decay": self.decay, "warmup": self.warmup}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.num_updates = int(state["num_updates"])
