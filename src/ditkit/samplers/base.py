"""What every sampler shares: the model call, the step iteration, and the per-step callback."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ditkit.diffusion.gaussian import GaussianDiffusion, ModelFn


@dataclass
class StepInfo:
    """Passed to the callback after each sampling step.

    Attributes:
        step: 0-based number of this step (0 for the first).
        index: chain index the step started from (N-1 down to 0).
        timestep: original timestep the model was given (0..999 for DiT).
        x: (B, C, H, W) the sample after this step.
        pred_xstart: (B, C, H, W) the model's prediction of x_0 at this step.
    """

    step: int
    index: int
    timestep: int
    x: Tensor
    pred_xstart: Tensor


Callback = Callable[[StepInfo], None]


def chain_indices(diffusion: GaussianDiffusion, progress: bool, desc: str) -> Iterator[int]:
    """Chain indices N-1, ..., 0, with a progress bar if asked."""
    n = diffusion.num_timesteps
    return iter(tqdm(reversed(range(n)), total=n, disable=not progress, desc=desc))


def call_model(
    model: ModelFn, diffusion: GaussianDiffusion, x: Tensor, index: int, y: Tensor | None
) -> Tensor:
    """Evaluate the model at chain index `index` for the whole batch; output cast to x's dtype.

    The model receives the original timestep (B,) int64, as in the official DiT code.
    """
    t = torch.full((x.shape[0],), int(diffusion.schedule.timesteps[index]), dtype=torch.long, device=x.device)
    return model(x, t, y).to(x.dtype)


def index_tensor(x: Tensor, index: int) -> Tensor:
    """(B,) int64 tensor filled with a chain index, on x's device."""
    return torch.full((x.shape[0],), index, dtype=torch.long, device=x.device)
