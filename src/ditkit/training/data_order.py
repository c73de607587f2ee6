"""Which items make up each global batch, as a pure function of (seed, step).

Every epoch is a seeded permutation of the dataset (the last partial batch is dropped, as DiT's
loader does); step s of the run takes the s-th block of `global_batch` items of its epoch's
permutation. Process r of W takes the r-th contiguous slice of that block and splits it into
micro-batches. The data position of a run is thus just its step: a resumed run, or one with
another number of processes, sees exactly the same samples.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from ditkit.errors import UserError
from ditkit.seeding import keyed_generator

# Mixed into the permutation seeds so they differ from every other stream seeded by the run's seed.
_ORDER_TAG = 0x0D47_A0DE


@dataclass(frozen=True)
class BatchLayout:
    """How a global batch is split over processes and micro-batches.

    Attributes:
        global_batch: samples per optimizer step, all processes together.
        world_size: number of processes.
        micro_batch: samples per forward pass on one process.
    """

    global_batch: int
    world_size: int
    micro_batch: int

    @classmethod
    def create(cls, global_batch: int, world_size: int, micro_batch: int | None) -> BatchLayout:
        if global_batch % world_size:
            raise UserError(f"global batch {global_batch} is not divisible by the {world_size} processes")
        local = global_batch // world_size
        micro = local if micro_batch is None else micro_batch
        if local % micro:
            who = f"each of the {world_size} processes gets" if world_size > 1 else "the step takes"
            raise UserError(
                f"{who} {local} samples per step, which --micro-batch {micro} does not divide; "
                f"pick a divisor of {local}"
            )
        return cls(global_batch, world_size, micro)

    @property
    def local_batch(self) -> int:
        return self.global_batch // self.world_size

    @property
    def accumulation(self) -> int:
        """Forward/backward passes per optimizer step on each process."""
        return self.local_batch // self.micro_batch

    def positions(self, rank: int, micro: int) -> range:
        """Positions in the global batch of micro-batch `micro` of process `rank`."""
        start = rank * self.local_batch + micro * self.micro_batch
        return range(start, start + self.micro_batch)


class DataOrder:
    """The seeded, epoch-wise order of the items.

    Args:
        num_items: dataset length.
        global_batch: samples per step.
        seed: the run's seed.
    """

    def __init__(self, num_items: int, global_batch: int, seed: int) -> None:
        if num_items < global_batch:
            raise UserError(
                f"the dataset has {num_items} items, fewer than one global batch of {global_batch}; "
                "lower --global-batch or add data"
            )
        self.num_items = num_items
        self.global_batch = global_batch
        self.seed = seed
        self.steps_per_epoch = num_items // global_batch
        self._cached: tuple[int, torch.Tensor] | None = None

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, step within the epoch) of a step."""
        return divmod(step, self.steps_per_epoch)

    def permutation(self, epoch: int) -> torch.Tensor:
        """(num_items,) int64 order of the items in `epoch`."""
        if self._cached is None or self._cached[0] != epoch:
            g = keyed_generator(_ORDER_TAG, self.seed, epoch)
            self._cached = (epoch, torch.randperm(self.num_items, generator=g))
        return self._cached[1]

    def global_batch_items(self, step: int) -> torch.Tensor:
        """(global_batch,) item indices of a step, in global-batch order."""
        epoch, k = self.position(step)
        return self.permutation(epoch)[k * self.global_batch : (k + 1) * self.global_batch]

    def state_dict(self) -> dict[str, Any]:
        return {"num_items": self.num_items, "global_batch": self.global_batch, "seed": self.seed}

    def check_resumable(self, saved: dict[str, Any]) -> None:
        """Refuse to resume a run whose data order would differ."""
        for key, now in self.state_dict().items():
            if key in saved and saved[key] != now:
                raise UserError(
                    f"cannot resume exactly: the checkpoint's data order used {key}={saved[key]}, this run "
                    f"has {now}; resume with the same data, --global-batch and --seed (or start a new --out)"
                )


class _MicroBatches:
    """Batch sampler over the micro-batches of one process for steps [first, last) of one epoch."""

    def __init__(self, order: DataOrder, layout: BatchLayout, rank: int, first: int, last: int) -> None:
        self.order, self.layout, self.rank, self.first, self.last = order, layout, rank, first, last

    def __len__(self) -> int:
        return (self.last - self.first) * self.layout.accumulation

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.first, self.last):
            items = self.order.global_batch_items(step)
            for micro in range(self.layout.accumulation):
                pos = self.layout.positions(self.rank, micro)
                yield items[pos.start : pos.stop].tolist()


def iterate_micro_batches(
    dataset: Dataset[Any],
    order: DataOrder,
    layout: BatchLayout,
    rank: int,
    start_step: int,
    total_steps: int,
    *,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> Iterator[tuple[int, int, Any]]:
    """Yield (step, micro index, collated batch) for this process from `start_step` on.

    The dataset's `set_epoch` (if any) is called before each epoch's loader starts, so per-item
    randomness (flips, posterior noise) follows the epoch; workers are not persistent for that reason.
    """
    step = start_step
    while step < total_steps:
        epoch, _ = order.position(step)
        last = min(total_steps, (epoch + 1) * order.steps_per_epoch)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        sampler = _MicroBatches(order, layout, rank, step, last)
        loader = DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers, pin_memory=pin_memory)
        for i, batch in enumerate(loader):
            s, micro = divmod(i, layout.accumulation)
            yield step + s, micro, batch
        step = last
