"""How flow-matching training draws its times t in [t0, t1].

"uniform" is SiT's choice; "logit-normal" is SD3's (Esser et al. 2024, Sec. 3.1, eq. 19):
t = sigmoid(n) with n ~ N(mean, std), which puts more samples in the middle of the path. In SiT's
time (data at t = 1) a positive mean favours the data end; SD3's own time runs the other way
(noise at 1), so SD3's lognorm(m, s) is logit-normal with mean -m here. Either draw is then mapped
affinely onto the training interval [t0, t1] of the path (see `Transport.check_interval`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ditkit.choices import TIME_SAMPLINGS
from ditkit.errors import UserError
from ditkit.transport.settings import LOGIT_NORMAL_MEAN, LOGIT_NORMAL_STD


@dataclass(frozen=True)
class TimeDistribution:
    """The distribution of training times.

    Attributes:
        kind: "uniform" or "logit-normal".
        low, high: the interval [t0, t1] the draws are mapped onto.
        mean, std: of the logit-normal's normal variable.
    """

    kind: str = "uniform"
    low: float = 0.0
    high: float = 1.0
    mean: float = LOGIT_NORMAL_MEAN
    std: float = LOGIT_NORMAL_STD

    def __post_init__(self) -> None:
        if self.kind not in TIME_SAMPLINGS:
            raise UserError(f"unknown time sampling {self.kind!r}; choose one of {', '.join(TIME_SAMPLINGS)}")
        if not self.std > 0:
            raise UserError(f"the logit-normal std must be positive, got {self.std}")
        if not 0.0 <= self.low < self.high <= 1.0:
            raise UserError(
                f"the time interval must satisfy 0 <= t0 < t1 <= 1, got [{self.low}, {self.high}]"
            )

    def draw(self, shape: Sequence[int], generator: torch.Generator | None = None) -> Tensor:
        """Times of the given shape, float32 on the CPU (drawn in float64 from `generator`)."""
        if self.kind == "uniform":
            unit = torch.rand(tuple(shape), generator=generator, dtype=torch.float64)
        else:
            n = torch.randn(tuple(shape), generator=generator, dtype=torch.float64)
            unit = torch.sigmoid(self.mean + self.std * n)
        return (self.low + (self.high - self.low) * unit).float()
