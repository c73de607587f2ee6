"""What every sampler shares: the loop over the chain, the model call, and the per-step callback.

A sampler is its update rule (a `StepFn`) run by `run_chain`; the rule lives in the sampler's own file.
"""

from __future__ import annotations

from collections.abc import Callable
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


# A sampler's update rule: (model output (B, C or 2C, H, W), x (B, C, H, W), chain index) ->
# (next x, predicted x_0), each (B, C, H, W). It may keep state between calls (multistep solvers).
StepFn = Callable[[Tensor, Tensor, int], tuple[Tensor, Tensor]]


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


def run_chain(
    model: ModelFn,
    x: Tensor,
    diffusion: GaussianDiffusion,
    y: Tensor | None,
    update: StepFn,
    *,
    desc: str,
    progress: bool,
    callback: Callback | None,
) -> Tensor:
    """Run `update` over chain indices N-1, ..., 0: one model call per index, then the callback.

    Args:
        model: denoiser called as model(x_t, original timesteps (B,), y).
        x: (B, C, H, W) starting noise x_T.
        diffusion: the (possibly respaced) process whose chain is walked.
        y: optional (B,) labels passed to the model.
        update: the sampler's update rule.
        desc: progress bar label.
        progress: show a progress bar.
        callback: called with a `StepInfo` after every step.

    Returns:
        (B, C, H, W) the sample after the last step.
    """
    n = diffusion.num_timesteps
    indices = tqdm(reversed(range(n)), total=n, disable=not progress, desc=desc)
    for step, index in enumerate(indices):
        output = call_model(model, diffusion, x, index, y)
        x, pred_xstart = update(output, x, index)
        if callback is not None:
            callback(StepInfo(step, index, int(diffusion.schedule.timesteps[index]), x, pred_xstart))
    return x
