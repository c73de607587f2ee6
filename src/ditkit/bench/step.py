"""One DiT training step as the benchmarks time it: hybrid loss, backward, AdamW, EMA.

The step is the trainer's (`ditkit.training`): its `forward_backward` (the `GaussianDiffusion`
hybrid loss, labels dropped through `force_drop_ids`), its per-sample draws and its fused `EMA`.
Each speed-relevant choice is an option: precision, attention kernel, optimizer and EMA
implementation, and where the timesteps and noise are drawn. The "loop" choices with math
attention make the straightforward float32 baseline the fast path is compared against on the CPU.

The step never synchronises with the host: it returns the loss as a device tensor (the trainer's
per-sample draws do copy from host memory each step, as the trainer does).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ditkit.diffusion.gaussian import GaussianDiffusion
from ditkit.diffusion.schedule import make_schedule
from ditkit.errors import UserError
from ditkit.model.fast import autocast, check_precision, matmul_precision, sdpa_backend
from ditkit.training.ema import EMA
from ditkit.training.randomness import StepDraws, draw_step
from ditkit.training.step import forward_backward

# Optimizer settings of the DiT paper (Sec. 4): AdamW, constant learning rate 1e-4, no weight decay.
DIT_LR = 1e-4
DIT_WEIGHT_DECAY = 0.0
# EMA decay of the DiT paper (Sec. 4).
DIT_EMA_DECAY = 0.9999
OPTIMIZER_IMPLS = ("fused", "foreach", "loop")
EMA_IMPLS = ("multi-tensor", "loop")
DRAW_CHOICES = ("per-sample", "device")


@dataclass
class StepOptions:
    """How a training step is computed.

    Attributes:
        precision: "fp32", "tf32" or "bf16" (bf16 autocast; master weights stay float32).
        attention: SDPA backend, "auto" or one of `ditkit.model.fast.SDPA_BACKENDS`.
        optimizer: AdamW implementation: "fused" (one kernel), "foreach" (multi-tensor) or "loop"
            (one parameter at a time).
        ema: "multi-tensor" (the trainer's `EMA`) or "loop" (one tensor at a time).
        draws: "per-sample" (the trainer's: one CPU generator per sample, then copied to the
            device) or "device" (one device generator for the batch, no host work).
        lr, weight_decay, ema_decay: DiT's values by default.
        grad_clip: clip the gradient norm to this value before the AdamW step, as the trainer's
            `--grad-clip` does (None: no clipping, as DiT).
    """

    precision: str = "fp32"
    attention: str = "auto"
    optimizer: str = "fused"
    ema: str = "multi-tensor"
    draws: str = "per-sample"
    lr: float = DIT_LR
    weight_decay: float = DIT_WEIGHT_DECAY
    ema_decay: float = DIT_EMA_DECAY
    grad_clip: float | None = None

    def check(self, device: torch.device) -> None:
        check_precision(self.precision, device)
        for what, value, choices in (
            ("optimizer", self.optimizer, OPTIMIZER_IMPLS),
            ("EMA implementation", self.ema, EMA_IMPLS),
            ("draws", self.draws, DRAW_CHOICES),
        ):
            if value not in choices:
                raise UserError(f"unknown {what} {value!r}; choose one of {', '.join(choices)}")


def make_adamw(params: list[nn.Parameter], options: StepOptions) -> torch.optim.AdamW:
    """AdamW with the implementation `options.optimizer` asks for."""
    fused = options.optimizer == "fused"
    foreach = options.optimizer == "foreach"
    return torch.optim.AdamW(
        params, lr=options.lr, weight_decay=options.weight_decay, fused=fused, foreach=foreach
    )


@torch.no_grad()
def loop_ema_(ema: Sequence[Tensor], params: Sequence[Tensor], decay: float) -> None:
    """The straightforward EMA: ema <- decay * ema + (1 - decay) * param, one tensor at a time."""
    for e, p in zip(ema, params, strict=True):
        e.mul_(decay).add_(p.detach(), alpha=1.0 - decay)


class TrainStep:
    """forward + hybrid loss + backward + AdamW + EMA for a DiT, on the model's device.

    Args:
        model: the DiT in training mode (compile it before, if wanted).
        options: see `StepOptions`.
        seed: seeds the timesteps, noise and label dropout.

    Call as `step(x, y)` with latents x (B, C, H, W) and labels y (B,) or None; returns the mean
    loss as a 0-d device tensor (reading it is the caller's synchronisation, not the step's). With
    `options.grad_clip`, the last step's gradient norm is `grad_norm` (a 0-d device tensor).
    """

    def __init__(self, model: nn.Module, options: StepOptions, seed: int = 0) -> None:
        self.device = next(model.parameters()).device
        options.check(self.device)
        self.model = model
        self.options = options
        self.seed = seed
        self.count = 0
        self.diffusion = GaussianDiffusion(make_schedule())
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = make_adamw(self.params, options)
        self.ema = EMA(model, options.ema_decay)  # float32 shadow of every parameter
        self.generator = torch.Generator(self.device).manual_seed(seed)
        self.dropout = float(getattr(getattr(model, "config", None), "class_dropout_prob", 0.0))
        self.grad_norm: Tensor | None = None

    def loss(
        self,
        x: Tensor,
        y: Tensor | None,
        t: Tensor,
        noise: Tensor,
        drop: Tensor | None = None,
        autocast_on: bool = True,
    ) -> Tensor:
        """Mean hybrid loss (0-d) for given timesteps t (B,), noise (B, C, H, W) and label-dropout
        flags drop (B,) (None: the model's own random dropout in training mode), without backward."""

        def denoiser(x_t: Tensor, steps: Tensor, labels: Tensor | None) -> Tensor:
            if labels is None:
                return self.model(x_t, steps)
            return self.model(x_t, steps, labels, force_drop_ids=drop)

        precision = self.options.precision if autocast_on else "fp32"
        with sdpa_backend(self.options.attention), autocast(precision, self.device):
            return self.diffusion.training_losses(denoiser, x, t, noise, y)["loss"].mean()

    def draws(self, x: Tensor) -> StepDraws:
        """Timesteps (B,), noise (B, C, H, W) and label-dropout flags (B,) of this step, on the device."""
        batch, n = x.shape[0], self.diffusion.num_timesteps
        if self.options.draws == "per-sample":
            draws = draw_step(self.seed, self.count, range(batch), x.shape[1:], n, self.dropout)
            return draws.to(self.device)
        g, dev = self.generator, self.device
        t = torch.randint(0, n, (batch,), device=dev, generator=g)
        noise = torch.randn(x.shape, device=dev, generator=g)
        return StepDraws(t, noise, torch.rand(batch, device=dev, generator=g) < self.dropout)

    def __call__(self, x: Tensor, y: Tensor | None) -> Tensor:
        draws = self.draws(x)
        options = self.options
        with matmul_precision(options.precision), sdpa_backend(options.attention):
            with autocast(options.precision, self.device):
                terms = forward_backward(self.model, self.diffusion, x, y, draws, 1.0 / x.shape[0])
            if options.grad_clip is not None:
                self.grad_norm = torch.nn.utils.clip_grad_norm_(self.params, options.grad_clip)
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if options.ema == "multi-tensor":
            self.ema.update(self.model)
        else:
            loop_ema_(self.ema.shadow, list(self.model.parameters()), options.ema_decay)
        self.count += 1
        return terms["loss"].mean()
