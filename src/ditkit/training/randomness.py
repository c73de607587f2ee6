"""The per-sample randomness of a training step: timestep (or flow time), noise and label dropout.

Sample j of the global batch at step s draws everything from its own generator, keyed by
(seed, s, j). The draws therefore depend neither on which rank holds the sample, nor on the
micro-batch it falls in, nor on what ran before: one process and N processes see the same
numbers, and a resumed run needs no generator state to continue exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ditkit.diffusion.noise import host_to_device
from ditkit.seeding import keyed_generator
from ditkit.transport.time_sampling import TimeDistribution

# Put first in every key so that these streams never coincide with the datasets' per-item streams,
# keyed (seed, epoch, index) (see ditkit.seeding).
_STREAM_TAG = 0x7D17_2A1B


def sample_generator(seed: int, step: int, index: int) -> torch.Generator:
    """CPU generator of global sample `index` at training step `step` (all non-negative)."""
    return keyed_generator(_STREAM_TAG, seed, step, index)


@dataclass
class StepDraws:
    """What a training step draws for its samples.

    Attributes:
        t: (B,) int64 chain indices in [0, num_timesteps) (diffusion), or float32 times in [0, 1]
            (flow matching).
        noise: (B, *sample_shape) float32 standard normal noise.
        drop: (B,) bool, True where the label is replaced by the null class.
        posterior_noise: (B, *sample_shape) float32 noise for sampling latents from an encoder's
            posterior (images encoded on the fly), else None.
    """

    t: torch.Tensor
    noise: torch.Tensor
    drop: torch.Tensor
    posterior_noise: torch.Tensor | None = None

    def to(self, device: torch.device) -> StepDraws:
        """The draws on `device`, copied without blocking the host (see `host_to_device`)."""
        post = None if self.posterior_noise is None else host_to_device(self.posterior_noise, device)
        t, noise, drop = (host_to_device(v, device) for v in (self.t, self.noise, self.drop))
        return StepDraws(t, noise, drop, post)


def draw_step(
    seed: int,
    step: int,
    indices: Sequence[int],
    sample_shape: Sequence[int],
    num_timesteps: int | TimeDistribution,
    drop_prob: float,
    posterior: bool = False,
) -> StepDraws:
    """Draw timesteps, noise and label-dropout flags for the given global sample indices.

    Args:
        seed: the run's seed.
        step: the optimizer step (0-based).
        indices: positions of the samples in the step's global batch (0..global_batch-1).
        sample_shape: (C, H, W) of one sample.
        num_timesteps: length of the diffusion chain (uniform integer timesteps), or the
            distribution of continuous flow-matching times.
        drop_prob: probability of dropping a label (classifier-free guidance training).
        posterior: also draw `posterior_noise`.

    Returns:
        StepDraws on the CPU with batch size len(indices).
    """
    ts, noises, drops, posts = [], [], [], []
    shape = tuple(sample_shape)
    for index in indices:
        g = sample_generator(seed, step, int(index))
        if isinstance(num_timesteps, int):
            ts.append(torch.randint(0, num_timesteps, (1,), generator=g))
        else:
            ts.append(num_timesteps.draw((1,), g))
        drops.append(torch.rand(1, generator=g) < drop_prob)
        noises.append(torch.randn(shape, generator=g))
        if posterior:
            posts.append(torch.randn(shape, generator=g))
    post = torch.stack(posts) if posterior else None
    return StepDraws(torch.cat(ts), torch.stack(noises), torch.cat(drops), post)
