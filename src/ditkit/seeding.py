"""Keyed random streams: a CPU generator per key, so that a draw depends only on its key.

Every per-item or per-sample draw in ditkit comes from here: a dataset item's flip and posterior
noise are keyed by (seed, epoch, index), a training sample's timestep, noise and label dropout by
(tag, seed, step, index), an epoch's data order by (tag, seed, epoch). Such draws do not depend on
the batch size, the number of processes or DataLoader workers, nor on what ran before, so a resumed
or re-sharded run sees exactly the same numbers. Library code never touches the global RNG.
"""

from __future__ import annotations

import numpy as np
import torch


def keyed_generator(*key: int) -> torch.Generator:
    """A CPU generator seeded from `key` (non-negative integers) through NumPy's SeedSequence hash.

    The hash mixes the numbers so that neighbouring keys (items, steps, epochs) get unrelated streams;
    callers put a distinct constant tag first to keep their streams apart from the others.
    """
    if not key or any(k < 0 for k in key):
        raise ValueError(f"a stream key is one or more non-negative integers, got {key}")
    (state,) = np.random.SeedSequence([int(k) for k in key]).generate_state(1, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state))


def item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The stream of dataset item `index` in `epoch`: its flip and posterior noise."""
    return keyed_generator(seed, epoch, index)


def coin_flip(generator: torch.Generator) -> bool:
    """Draw one fair coin from `generator`."""
    return bool(torch.randint(0, 2, (1,), generator=generator).item())
