"""Per-item random streams: the randomness of item i depends only on (seed, epoch, i).

Datasets draw their augmentation (flips) and posterior noise from a generator made here, so an item
is the same whatever the batch size, the number of DataLoader workers or the order of the sampler,
and a resumed run sees exactly the items an uninterrupted one would have seen.
"""

from __future__ import annotations

import numpy as np
import torch


def item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """Return a CPU generator seeded from (seed, epoch, index) through NumPy's SeedSequence hash.

    The hash mixes the three numbers so that neighbouring items or epochs get unrelated streams.
    """
    if seed < 0 or epoch < 0 or index < 0:
        raise ValueError(f"seed, epoch and index must be non-negative, got {(seed, epoch, index)}")
    (state,) = np.random.SeedSequence([seed, epoch, index]).generate_state(1, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state))


def coin_flip(generator: torch.Generator) -> bool:
    """Draw one fair coin from `generator`."""
    return bool(torch.randint(0, 2, (1,), generator=generator).item())
