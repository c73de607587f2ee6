"""A run that cannot fit is refused before its model is built, naming the option that fits (issue 28)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from test_train_support import tiny_config

from ditkit.cli.main import main
from ditkit.errors import UserError
from ditkit.model.dit import DiT
from ditkit.model.presets import get_config
from ditkit.training import memory, train, trainer
from ditkit.training.freeze import apply_freeze
from ditkit.training.memory import check_train_memory, estimate_train_memory, saved_activation_bytes

GIB = 2**30


@pytest.mark.parametrize(("recompute", "policy"), [(0, "full"), (2, "full"), (4, "full"), (3, "selective")])
def test_the_estimate_counts_what_the_whole_model_keeps(recompute, policy):
    """Two blocks counted at batch 1 and 2 give the activations of every depth and batch exactly."""
    config = get_config(
        "DiT-T/2", input_size=8, num_classes=10, depth=4, recompute_blocks=recompute, recompute_policy=policy
    )
    estimate = estimate_train_memory(config, 3, "fp32")
    torch.manual_seed(0)
    whole = saved_activation_bytes(DiT(config), 3, "fp32").total
    assert estimate.activations == pytest.approx(whole, rel=0.02)
    params = sum(p.numel() for p in DiT(config).parameters())
    assert estimate.state == pytest.approx(5 * 4 * params, rel=0.01)  # weights, grads, EMA, AdamW's two


@pytest.mark.parametrize("spec", ["all-but-adaln", "x_embedder,blocks.*.attn"])
def test_frozen_parameters_have_no_gradients_or_optimizer_state(spec):
    """--freeze: weights and EMA for every parameter, gradients and AdamW's two moments for the trainable."""
    config = get_config("DiT-T/2", input_size=8, num_classes=10, depth=2)
    model = DiT(config)
    before = sum(p.numel() for p in model.parameters() if p.requires_grad)  # all but the fixed positions
    trainable, total = apply_freeze(model, spec)
    assert 0 < trainable < before
    full = estimate_train_memory(config, 3, "fp32")
    frozen = estimate_train_memory(config, 3, "fp32", freeze=spec)
    assert frozen.state == pytest.approx(4 * (2 * total + 3 * trainable), rel=0.02)  # positions aside
    assert full.state - frozen.state == 4 * 3 * (before - trainable)
    assert frozen.activations == full.activations  # counted as if all trained: an upper bound


def test_a_run_that_cannot_fit_names_the_micro_batch_that_does():
    config = get_config("DiT-XL/2", input_size=32, num_classes=1000)
    with pytest.raises(UserError, match=r"micro-batch 256 needs about .* only 40.0 GiB is free") as err:
        check_train_memory(config, 256, "bf16", torch.device("cuda"), available=40 * GIB)
    message = str(err.value)
    assert "\n" not in message and "--recompute-blocks 28" in message
    micro = int(message.split("--micro-batch ")[1].split()[0])
    need = estimate_train_memory(config, micro, "bf16")
    assert need.total <= 40 * GIB and micro >= 8


def test_weights_alone_too_large_name_fsdp():
    config = get_config("DiT-XL/2", input_size=32, num_classes=1000)
    with pytest.raises(UserError, match="--parallel fsdp"):
        check_train_memory(config, 1, "fp32", torch.device("cuda"), available=GIB, world_size=8)
    with pytest.raises(UserError, match="smaller --model"):
        check_train_memory(config, 1, "fp32", torch.device("cpu"), available=GIB)


def test_near_the_limit_is_a_warning():
    config = get_config("DiT-T/2", input_size=8, num_classes=10)
    need = estimate_train_memory(config, 8, "fp32").total
    assert check_train_memory(config, 8, "fp32", torch.device("cpu"), available=int(need * 1.1)) is not None
    assert check_train_memory(config, 8, "fp32", torch.device("cpu"), available=int(need * 10)) is None


def test_the_trainer_refuses_before_building_the_model(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model was built before the memory check")

    monkeypatch.setattr(memory, "available_bytes", lambda device: 1000)
    monkeypatch.setattr(trainer, "build_model", refuse)
    with pytest.raises(UserError, match="only 0.0 GiB is free"):
        train(tiny_config(tmp_path), progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_resume_of_a_folder_holding_no_run_is_an_error(tmp_path, capsys):
    """A typo'd run folder does not start a new, default-sized run."""
    missing = tmp_path / "rnus" / "x"
    assert main(["train", "--out", str(missing), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert f"no run in {missing}" in err and "drop --resume" in err
    assert not missing.exists()


def test_available_memory_is_read_on_the_cpu():
    free = memory.available_bytes(torch.device("cpu"))
    assert free is None or free > 0
    assert dataclasses.is_dataclass(memory.MemoryEstimate)
