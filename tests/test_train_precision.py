"""The precision a run asks for is the precision its matmuls run in: in the trainer, and in the bench
that times the trainer's step (issue 11: a "bf16" bench row once ran its forward in float32)."""

from __future__ import annotations

import contextlib
from collections import Counter

import pytest
import torch
from test_train_support import tiny_config
from torch.utils._python_dispatch import TorchDispatchMode

from ditkit.bench.train import build_model, synthetic_batch
from ditkit.bench.trainer_step import BenchStep
from ditkit.model.blocks import DiTBlock
from ditkit.model.precision import autocast
from ditkit.training import train
from ditkit.training.randomness import draw_step
from ditkit.training.step import TrainStep, forward_backward

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

MATMULS = {torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default}


class MatmulDtypes(TorchDispatchMode):
    """Counts the output dtypes of the matmuls that run inside a DiT block's forward.

    Blocks are recognised by forward hooks, so the backward (and the embedders, the final layer,
    the loss) are not counted: the forward's block matmuls are the ones autocast decides.
    """

    def __init__(self) -> None:
        super().__init__()
        self.in_block = 0
        self.block: Counter[torch.dtype] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in MATMULS and self.in_block:
            self.block[out.dtype] += 1
        return out

    @contextlib.contextmanager
    def watching(self):
        """Enter the mode with hooks on every DiTBlock (of any model built inside)."""

        def enter(module, args):
            self.in_block += 1

        def leave(module, args, output):
            self.in_block -= 1

        handles = [
            torch.nn.modules.module.register_module_forward_pre_hook(
                lambda m, a: enter(m, a) if isinstance(m, DiTBlock) else None
            ),
            torch.nn.modules.module.register_module_forward_hook(
                lambda m, a, o: leave(m, a, o) if isinstance(m, DiTBlock) else None
            ),
        ]
        try:
            with self:
                yield self
        finally:
            for h in handles:
                h.remove()


@pytest.mark.parametrize(("precision", "dtype"), [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_the_trainer_runs_its_block_matmuls_in_the_asked_precision(tmp_path, precision, dtype):
    counter = MatmulDtypes()
    with counter.watching():
        train(tiny_config(tmp_path, steps=1, precision=precision, micro_batch=4), progress=False)
    # DiT-T/2 has 2 blocks; each block forward runs qkv, attention out, fc1, fc2 and adaLN matmuls.
    assert sum(counter.block.values()) >= 2 * 2 * 5  # 2 micro-batches
    assert set(counter.block) == {dtype}


def _tiny_model():
    torch.manual_seed(0)
    return build_model("DiT-T/2", 8, 10, torch.device("cpu")).train()


def test_the_bench_times_the_trainers_step_in_bf16():
    model = _tiny_model()
    step = BenchStep(model, "bf16")
    assert type(step.step) is TrainStep  # the trainer's class, not a copy
    x, y = synthetic_batch(model, 4, torch.device("cpu"), 0)
    counter = MatmulDtypes()
    with counter.watching():
        loss = step(x, y)
    assert torch.isfinite(loss) and sum(counter.block.values()) >= 2 * 5
    assert set(counter.block) == {torch.bfloat16}


def test_an_fp32_forward_backward_leaves_a_callers_autocast_on():
    """The bug of issue 11: the bench entered bf16 autocast, then forward_backward(..., bf16=False)
    entered torch.autocast(enabled=False) and the forward ran in float32."""
    model = _tiny_model()
    x, y = synthetic_batch(model, 4, torch.device("cpu"), 0)
    draws = draw_step(0, 0, range(4), x.shape[1:], 1000, 0.1)
    counter = MatmulDtypes()
    with counter.watching(), autocast("bf16", "cpu"):
        forward_backward(model, _diffusion(), x, y, draws, 0.25, "fp32")
    assert set(counter.block) == {torch.bfloat16}


def _diffusion():
    from ditkit.objectives import DiffusionObjective

    return DiffusionObjective()
