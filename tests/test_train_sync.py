"""The training step never makes the host wait for the device (values stay there until a read); per-device defaults."""

from __future__ import annotations

import contextlib
import functools

import pytest
import torch
from test_train_support import tiny_config

from ditkit.training import train
from ditkit.training import trainer as trainer_module
from ditkit.training.step import LogWindow, PendingSteps, StepStats, TrainStep, reduce_step

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

# Tensor methods that copy a value to the host: each one waits for a CUDA device to finish its queue.
HOST_READS = ("item", "cpu", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__")


def test_pending_steps_average_on_one_read_and_flag_non_finite_losses():
    pending = PendingSteps()
    assert pending.read(since=0.0) is None
    for loss, stop in ((1.0, False), (3.0, True)):
        stats = StepStats()
        stats.add({"loss": torch.tensor([loss, loss]), "mse": torch.tensor([0.5, 1.5])})
        pending.add(*reduce_step(stats, stop))
    readout = pending.read(since=0.0)
    assert readout is not None and readout.steps == 2
    assert readout.values == {"loss": 2.0, "mse": 1.0} and readout.stop and not readout.nonfinite
    window = LogWindow()
    window.add(readout)
    assert window.summary(global_batch=2)["loss"] == 2.0

    stats = StepStats()
    stats.add({"loss": torch.tensor([1.0, float("nan")])})
    pending.add(*reduce_step(stats, False))
    readout = pending.read(since=0.0)
    assert readout is not None and readout.nonfinite and not readout.stop and readout.steps == 1


def test_the_host_reads_at_logs_checkpoints_and_every_few_steps(tmp_path, monkeypatch):
    reads: list[int] = []
    original = PendingSteps.read

    def counting_read(self, since):
        readout = original(self, since)
        reads.append(readout.steps)
        return readout

    monkeypatch.setattr(PendingSteps, "read", counting_read)
    monkeypatch.setattr(trainer_module, "HOST_READ_EVERY", 4)
    cfg = tiny_config(tmp_path, steps=11, log_every=5, ckpt_every=3)
    result = train(cfg, progress=False)
    at_steps = [sum(reads[: i + 1]) for i in range(len(reads))]
    assert at_steps == [3, 4, 5, 6, 8, 9, 10, 11]  # ckpt 3, 6, 9; read 4, 8; log 5, 10; the end 11
    records = [r for r in result.out.joinpath("metrics.jsonl").read_text().splitlines() if r]
    assert len(records) == 3  # the log window still spans 5 steps, whatever was read in between


def test_a_training_step_copies_nothing_to_the_host(tmp_path, monkeypatch):
    """Between two reads the trainer only queues work: no tensor value reaches Python."""
    inside = {"depth": 0}
    seen: list[str] = []

    def watch(name, method):
        @functools.wraps(method)
        def wrapper(self, *args, **kwargs):
            if inside["depth"]:
                seen.append(name)
            return method(self, *args, **kwargs)

        return wrapper

    for name in HOST_READS:
        monkeypatch.setattr(torch.Tensor, name, watch(name, getattr(torch.Tensor, name)))

    @contextlib.contextmanager
    def in_step():
        inside["depth"] += 1
        try:
            yield
        finally:
            inside["depth"] -= 1

    def step_part(method):
        @functools.wraps(method)
        def wrapper(*args, **kwargs):
            with in_step():
                return method(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(TrainStep, "__call__", step_part(TrainStep.__call__))
    monkeypatch.setattr(PendingSteps, "add_step", step_part(PendingSteps.add_step))

    cfg = tiny_config(tmp_path, steps=3, log_every=0, grad_clip=1.0, micro_batch=4)
    train(cfg, progress=False)
    assert seen == []

    # The watch does see a read where there is one.
    with in_step():
        float(torch.ones(()))
    assert seen == ["__float__"]


def test_auto_precision_and_compile_resolve_per_device(tmp_path, capsys):
    train(tiny_config(tmp_path, steps=1), progress=False)
    assert "precision fp32, compile none" in capsys.readouterr().err  # the CPU defaults

    from ditkit.errors import UserError

    with pytest.raises(UserError, match="tf32 needs a CUDA device"):
        train(tiny_config(tmp_path, steps=1, precision="tf32", out=str(tmp_path / "tf32")), progress=False)


@pytest.mark.slow
def test_compiled_blocks_train_like_eager(tmp_path):
    """`--compile blocks` (the CUDA default; inductor) with selective checkpointing follows the eager run."""
    import json

    torch._dynamo.reset()
    runs = {}
    for how in ("none", "blocks"):
        cfg = tiny_config(
            tmp_path, out=str(tmp_path / how), compile=how, recompute_blocks=1, recompute_policy="selective"
        )
        result = train(cfg, progress=False)
        lines = result.out.joinpath("metrics.jsonl").read_text().splitlines()
        runs[how] = [json.loads(line)["loss"] for line in lines if line]
    assert len(runs["blocks"]) == 4
    assert runs["blocks"] == pytest.approx(runs["none"], rel=1e-4)
