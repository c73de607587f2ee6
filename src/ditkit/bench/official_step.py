"""The official DiT training step, as its code runs it: the reference every ditkit row is compared with.

What the official `train.py` (facebookresearch/DiT) does per step, rebuilt on ditkit's DiT (the
same architecture: `ditkit.checkpoints.official` loads official weights into it unchanged) and
ditkit's `GaussianDiffusion` (the same hybrid loss; its schedule lives on the device, so it is at
least as fast as the official float64 NumPy tables indexed per call):

- eager (no torch.compile), float32 with TF32 matmuls on CUDA (precision "tf32": the official
  script turns TF32 on), strict float32 on the CPU; attention through scaled_dot_product_attention, as timm's `Attention`
  runs it today;
- timesteps `torch.randint` and noise `torch.randn` drawn on the device for the whole batch, labels
  dropped with probability 0.1 by a `torch.rand` on the device (the official `LabelEmbedder`);
- `torch.optim.AdamW(lr=1e-4, weight_decay=0)` with PyTorch's default implementation for the
  device (foreach on CUDA, one parameter at a time on the CPU);
- the EMA loop `ema.mul_(decay).add_(param, alpha=1 - decay)` over `named_parameters()` dicts.

The optional bf16 variant enters bfloat16 autocast around the forward and the loss (the official
script has no autocast; this is what adding one would give). Left out, to keep the reference
no slower than the official loop: its `loss.item()` every step (a host synchronisation on CUDA).
The draws use a seeded device generator instead of the global RNG (library code never touches
it); that costs the same.
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import torch
from torch import Tensor, nn

from ditkit.diffusion.gaussian import GaussianDiffusion
from ditkit.diffusion.schedule import make_schedule
from ditkit.model.precision import autocast, check_precision, matmul_precision
from ditkit.training.config import OFFICIAL_CLASS_DROPOUT, OFFICIAL_EMA_DECAY, OFFICIAL_LR


@torch.no_grad()
def official_ema_update(ema: nn.Module, model: nn.Module, decay: float = OFFICIAL_EMA_DECAY) -> None:
    """The official `update_ema`: one in-place multiply-add per parameter, looked up by name."""
    ema_params = OrderedDict(ema.named_parameters())
    model_params = OrderedDict(model.named_parameters())
    for name, param in model_params.items():
        ema_params[name].mul_(decay).add_(param.data, alpha=1 - decay)


class OfficialStep:
    """One official training step on `model`; `step(x, y)` returns the mean loss (0-d, device).

    Args:
        model: a DiT in training mode (eager).
        precision: "tf32" (CUDA: the official script's mode), "fp32" (the CPU's) or "bf16" (autocast
            added; TF32 stays on for what autocast leaves in float32 on CUDA).
        seed: seeds the device generator of the draws.
    """

    def __init__(self, model: nn.Module, precision: str = "fp32", seed: int = 0) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        check_precision(precision, self.device)
        self.precision = precision
        self.matmul = "tf32" if self.device.type == "cuda" and precision != "fp32" else "fp32"
        self.diffusion = GaussianDiffusion(make_schedule())
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=OFFICIAL_LR, weight_decay=0)
        self.ema = copy.deepcopy(model).requires_grad_(False)
        self.generator = torch.Generator(self.device).manual_seed(seed)
        self.dropout = OFFICIAL_CLASS_DROPOUT if getattr(model, "null_class", None) is not None else 0.0

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        """One step on x (B, C, H, W) and labels y (B,) already on the device."""
        g, dev, batch = self.generator, self.device, x.shape[0]
        t = torch.randint(0, self.diffusion.num_timesteps, (batch,), device=dev, generator=g)
        noise = torch.randn(x.shape, device=dev, generator=g)
        drop = torch.rand(batch, device=dev, generator=g) < self.dropout

        def denoiser(x_t: Tensor, steps: Tensor, labels: Tensor | None) -> Tensor:
            return self.model(x_t, steps, labels, force_drop_ids=drop)

        with matmul_precision(self.matmul):
            with autocast(self.precision, dev):
                loss = self.diffusion.training_losses(denoiser, x, t, noise, y)["loss"].mean()
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        official_ema_update(self.ema, self.model)
        return loss.detach()
