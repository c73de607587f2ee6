"""Compute cost of a DiT the way the paper counts "Gflops": multiply-accumulates of one forward
pass (attention included), for one image. Counted from a real forward pass, not from a table.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from ditkit.model.dit import DiT


def count_gflops(model: DiT) -> float:
    """Giga multiply-accumulates of one forward pass of `model` on one input.

    Runs the forward on the meta device when possible, so even DiT-XL/2 at 512 costs nothing
    to count. torch's FLOP counter reports 2 FLOPs per multiply-accumulate.
    """
    h, w = model.config.size_hw
    device = next(model.parameters()).device
    x = torch.zeros(1, model.in_channels, h, w, device=device)
    t = torch.zeros(1, device=device)
    y = torch.zeros(1, dtype=torch.long, device=device) if model.num_classes else None
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(x, t, y)
    finally:
        model.train(was_training)
    return counter.get_total_flops() / 2 / 1e9


def count_params(model: torch.nn.Module) -> int:
    """All parameters, the frozen position embedding included, as the official code counts them."""
    return sum(p.numel() for p in model.parameters())
