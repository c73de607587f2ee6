"""The trainer's optimizer step, run again and again on one synthetic batch: what the benchmarks time.

Nothing here computes: `BenchStep` builds the trainer's `TrainStep` (`ditkit.training.setup.
build_train_step`: its AdamW, EMA, per-sample keyed draws, the hybrid loss under the precision's
autocast, the optional gradient clip) from a `TrainConfig` with DiT's defaults and calls it, one
micro-batch per step. A call never synchronises with the host: it returns the mean loss as a
device tensor.
"""

from __future__ import annotations

from torch import Tensor, nn

from ditkit.model.attention_kernel import sdpa_backend
from ditkit.training.config import TrainConfig
from ditkit.training.setup import build_train_step
from ditkit.training.step import MicroBatch, StepOutput, TrainStep


class BenchStep:
    """The trainer's step for `model` on a fixed batch; `step(x, y)` runs the next optimizer step.

    Args:
        model: the DiT in training mode (compiled before, if wanted), on its device.
        precision: "fp32", "tf32" or "bf16".
        seed: keys the per-sample draws (as a run's seed).
        grad_clip: the trainer's `--grad-clip` (None: no clipping, as DiT).
        attention: pin scaled_dot_product_attention to one kernel ("auto": PyTorch's choice).

    Attributes:
        step: the trainer's `TrainStep` (its `optimizer`, `ema`, `objective`).
        last: what the last call's `TrainStep` returned (its `grad_norm` with clipping).
    """

    def __init__(
        self,
        model: nn.Module,
        precision: str,
        seed: int = 0,
        grad_clip: float | None = None,
        attention: str = "auto",
    ) -> None:
        dropout = float(getattr(getattr(model, "config", None), "class_dropout_prob", 0.0))
        config = TrainConfig(steps=1, seed=seed, grad_clip=grad_clip, class_dropout=dropout)
        self.step: TrainStep = build_train_step(model, config, precision)
        sdpa_backend(attention)  # check the name now rather than at the first call
        self.attention = attention
        self.count = 0
        self.last: StepOutput | None = None

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        """One optimizer step on x (B, C, H, W) and labels y (B,); returns the mean loss (0-d, device)."""
        batch = x.shape[0]
        with sdpa_backend(self.attention):
            self.last = self.step(self.count, [MicroBatch(range(batch), x, y)], batch)
        self.count += 1
        return self.last.stats.sums["loss"] / batch

    @property
    def grad_norm(self) -> Tensor | None:
        """The last step's gradient norm before clipping (0-d device tensor), or None without clipping."""
        return None if self.last is None else self.last.grad_norm

    @property
    def params(self) -> list[nn.Parameter]:
        return [p for group in self.step.optimizer.param_groups for p in group["params"]]
