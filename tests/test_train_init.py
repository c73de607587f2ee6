"""`ditkit train --init`: a new run from a checkpoint's weights, fitted to the run's model and data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import random_tiny_dit
from PIL import Image
from test_train_support import assert_state_equal, tiny_config

from ditkit import distributed as D
from ditkit.checkpoints import load_model, save_model
from ditkit.checkpoints.digest import weights_sha256
from ditkit.errors import UserError
from ditkit.run_folder import RUN_CONFIG_FILE
from ditkit.training import train
from ditkit.training.finetune import LABEL_TABLE
from ditkit.training.preflight import preflight
from ditkit.training.setup import build_model
from ditkit.training.state import load_training_checkpoint
from ditkit.training.trainer import Trainer

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def started(config, lines=None):
    """The Trainer of `config` after it set up its step-0 model (nothing trained)."""
    trainer = Trainer(
        config,
        D.init_distributed("cpu"),
        ([] if lines is None else lines).append,
        init=preflight(config, None),
    )
    trainer._start(None)
    return trainer


@pytest.fixture
def source_run(tmp_path):
    """A 2-step DiT-T/2 flow run on fake Fashion-MNIST whose EMA differs from its raw weights."""
    return train(tiny_config(tmp_path, out=str(tmp_path / "src"), objective="flow", steps=2), progress=False)


def _outputs(model, t, y, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, model.in_channels, *model.config.size_hw, generator=g)
    with torch.no_grad():
        return model.eval()(x, t, y)


@pytest.mark.parametrize("weights", ["ema", "model"])
def test_step_0_weights_and_ema_are_the_checkpoints(tmp_path, source_run, weights):
    src = load_training_checkpoint(source_run.checkpoint)
    expected = getattr(src, weights)
    assert any(not torch.equal(src.ema[k], src.model[k]) for k in src.ema)  # the two sets differ
    lines: list[str] = []
    config = tiny_config(tmp_path, out=str(tmp_path / "ft"), objective="flow", init=str(tmp_path / "src"))
    config.init_weights = weights
    trainer = started(config, lines)
    assert_state_equal(dict(trainer.raw.state_dict()), expected)
    assert_state_equal(trainer.ema.weights(trainer.raw), expected)
    assert trainer.step == 0 and not trainer.optimizer.state  # a fresh optimizer
    assert config.init_digest == weights_sha256(expected)
    assert lines[0].startswith(f"starting from {tmp_path / 'src'}") and f"{weights} weights" in lines[0]


@pytest.mark.parametrize("kind", ["official", "diffusers"])
def test_official_pt_files_and_diffusers_folders_start_a_run(tmp_path, kind):
    from ditkit.checkpoints import export_diffusers

    released = random_tiny_dit(in_channels=1)  # DiT-T/2's shape on 8x8 one-channel inputs, 10 classes
    if kind == "official":
        path = tmp_path / "DiT-T-2.pt"
        torch.save(released.state_dict(), path)
    else:
        path = export_diffusers(released, tmp_path / "hf", pipeline=False)
    config = tiny_config(tmp_path, out=str(tmp_path / "ft"), init=str(path))
    trainer = started(config)
    assert_state_equal(dict(trainer.raw.state_dict()), dict(released.state_dict()))
    assert trainer.init is not None and trainer.init.source.raw.kind == kind
    assert config.init_digest == weights_sha256(released.state_dict())  # the weights', not the file's


def test_the_run_records_where_it_started(tmp_path, source_run):
    config = tiny_config(tmp_path, out=str(tmp_path / "ft"), objective="flow", init=str(tmp_path / "src"))
    result = train(config, progress=False)
    digest = weights_sha256(load_training_checkpoint(source_run.checkpoint).ema)
    saved = json.loads((tmp_path / "ft" / RUN_CONFIG_FILE).read_text())
    assert saved["init"] == str(tmp_path / "src") and saved["init_digest"] == digest
    extra = json.loads((result.checkpoint / "config.json").read_text())["extra"]
    assert extra["init"] == {
        "path": str(tmp_path / "src"),
        "source": str(source_run.checkpoint),
        "kind": "ditkit",
        "weights": "ema",
        "sha256": digest,
    }
    changed = tiny_config(tmp_path, out=str(tmp_path / "again"), objective="flow", init=str(tmp_path / "src"))
    changed.init_digest = "0" * 64  # the options of a run whose checkpoint has changed since
    with pytest.raises(UserError, match="the checkpoint changed"):
        train(changed, progress=False)


def make_rgb_folder(root: Path, classes=("ant", "bee", "cat"), per_class: int = 4) -> Path:
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def _folder_config(tmp_path, source, **overrides):
    return tiny_config(
        tmp_path,
        data=str(make_rgb_folder(tmp_path / "images"))
        if not (tmp_path / "images").exists()
        else str(tmp_path / "images"),
        first_stage="identity",
        out=str(tmp_path / "ft"),
        init=str(source),
        **overrides,
    )


def test_another_class_count_rebuilds_the_table_with_the_null_row_and_mapped_rows(tmp_path):
    names = [f"class{i}" for i in range(10)]
    source_model = random_tiny_dit(in_channels=3)  # 10 classes + the null row
    save_model(source_model, tmp_path / "src", extra={"class_names": names})
    (tmp_path / "map.json").write_text(json.dumps({"bee": "class7", "2": 4}))
    lines: list[str] = []
    trainer = started(
        _folder_config(tmp_path, tmp_path / "src", init_class_map=str(tmp_path / "map.json")), lines
    )
    table = trainer.raw.state_dict()[LABEL_TABLE]
    src = source_model.state_dict()[LABEL_TABLE]
    fresh = build_model(trainer.model_config, 0, torch.device("cpu")).state_dict()[LABEL_TABLE]
    assert table.shape == (4, 32)  # ant, bee, cat + null
    assert torch.equal(table[0], fresh[0])  # unmapped: DiT's N(0, 0.02) draw
    assert torch.equal(table[1], src[7]) and torch.equal(table[2], src[4])
    assert torch.equal(table[3], src[10])  # the null row of guidance carried over
    assert any("11 -> 4 rows: 2 copied (1<-7, 2<-4), 1 new" in line for line in lines), lines
    # every other tensor is the checkpoint's
    for key, value in source_model.state_dict().items():
        if key != LABEL_TABLE:
            assert torch.equal(trainer.raw.state_dict()[key], value), key


def test_same_count_other_names_copies_rows_with_a_note_and_an_empty_map_starts_them_fresh(tmp_path):
    source_model = random_tiny_dit(in_channels=3, num_classes=3)
    save_model(source_model, tmp_path / "src", extra={"class_names": ["x", "y", "z"]})
    lines: list[str] = []
    table = started(_folder_config(tmp_path, tmp_path / "src"), lines).raw.state_dict()[LABEL_TABLE]
    assert torch.equal(table, source_model.state_dict()[LABEL_TABLE])  # ant <- x, bee <- y, cat <- z
    assert any("copied row by row" in line and "'ant' starts from 'x'" in line for line in lines), lines
    (tmp_path / "empty.json").write_text("{}")
    lines = []
    config = _folder_config(tmp_path, tmp_path / "src", init_class_map=str(tmp_path / "empty.json"))
    trainer = started(config, lines)
    table = trainer.raw.state_dict()[LABEL_TABLE]
    fresh = build_model(trainer.model_config, 0, torch.device("cpu")).state_dict()[LABEL_TABLE]
    assert torch.equal(table[:3], fresh[:3]) and torch.equal(
        table[3], source_model.state_dict()[LABEL_TABLE][3]
    )
    assert not any("row by row" in line for line in lines)


def test_unconditional_fine_tuning_keeps_the_null_row(tmp_path):
    source_model = random_tiny_dit(in_channels=3)
    save_model(source_model, tmp_path / "src")
    trainer = started(_folder_config(tmp_path, tmp_path / "src", model_overrides={"num_classes": 0}))
    assert LABEL_TABLE not in trainer.raw.state_dict()
    t = torch.tensor([10.0, 500.0, 900.0])
    null = torch.full((3,), 10)
    torch.testing.assert_close(_outputs(trainer.raw, t, None), _outputs(source_model, t, null))


def test_a_flow_checkpoint_starts_meanflow_as_the_flow_model(tmp_path, source_run):
    config = tiny_config(tmp_path, out=str(tmp_path / "mf"), objective="meanflow", init=str(tmp_path / "src"))
    lines: list[str] = []
    trainer = started(config, lines)
    assert any("new (initialised as a fresh DiT): h_embedder (4 tensors)" in line for line in lines)
    assert not torch.equal(trainer.raw.h_embedder.mlp[0].weight, torch.zeros(()))  # fresh, not zeroed
    flow = load_model(source_run.checkpoint)
    t, y = torch.tensor([0.1, 0.5, 0.9]), torch.tensor([1, 4, 10])
    for interval in (torch.zeros(3), torch.tensor([0.05, 0.3, 0.9])):
        meanflow = _outputs(trainer.raw, torch.stack([t, interval], dim=1), y)
        assert torch.equal(meanflow, _outputs(flow, t, y))


def test_what_cannot_fit_is_refused_in_one_line_before_building(tmp_path, source_run, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("built something before refusing")

    monkeypatch.setattr("ditkit.training.trainer.build_data", never)
    wide = tiny_config(
        tmp_path,
        out=str(tmp_path / "w"),
        objective="flow",
        init=str(tmp_path / "src"),
        model_overrides={"hidden_size": 64},
    )
    with pytest.raises(UserError) as err:
        train(wide, progress=False)
    assert str(err.value) == (
        f"cannot start from {tmp_path / 'src'}: hidden_size 32 (this run: 64); use --set hidden_size=32"
    )
    small = tiny_config(tmp_path, out=str(tmp_path / "s"), model="DiT-S/2", init=str(tmp_path / "src"))
    with pytest.raises(UserError, match=r"depth 2 \(this run: 12\).*; use --model DiT-T/2 \(or --set"):
        train(small, progress=False)


def test_other_channels_are_refused_naming_the_first_stage(tmp_path, source_run, monkeypatch):
    monkeypatch.setattr("ditkit.training.trainer.build_model", lambda *a: pytest.fail("built the model"))
    with pytest.raises(UserError, match=r"in_channels 1 \(this run: 3\); train on the latents of") as err:
        train(_folder_config(tmp_path, tmp_path / "src", objective="flow"), progress=False)
    assert "\n" not in str(err.value)


def test_freeze_keeps_frozen_weights_and_leaves_them_out_of_the_optimizer(tmp_path, source_run):
    src = load_training_checkpoint(source_run.checkpoint).ema
    config = tiny_config(
        tmp_path,
        out=str(tmp_path / "fz"),
        objective="flow",
        init=str(tmp_path / "src"),
        freeze="x_embedder,blocks.0",
    )
    lines: list[str] = []
    result = train(config, progress=False, echo=lines.append)
    after = load_training_checkpoint(result.checkpoint)
    frozen = [k for k in src if k.startswith(("x_embedder.", "blocks.0.", "pos_embed"))]
    for key in frozen:
        assert torch.equal(after.model[key], src[key]) and torch.equal(after.ema[key], src[key]), key
    moved = [k for k in src if k not in frozen and not torch.equal(after.model[k], src[k])]
    assert moved  # the rest trained
    trainable = [k for k in src if k not in frozen]
    groups = after.state["optimizer"]["param_groups"]
    assert sum(len(g["params"]) for g in groups) == len(trainable)
    assert any(line.startswith("training ") and "(--freeze x_embedder,blocks.0)" in line for line in lines)


def test_freeze_all_but_adaln_and_names_that_match_nothing(tmp_path, source_run):
    config = tiny_config(tmp_path, out=str(tmp_path / "a"), objective="flow", init=str(tmp_path / "src"))
    config.freeze = "all-but-adaln"
    trainer = started(config)
    trained = {n for n, p in trainer.raw.named_parameters() if p.requires_grad}
    assert trained and all(".adaLN_modulation." in n or n.startswith("final_layer.") for n in trained)
    assert "final_layer.linear.weight" in trained and "blocks.1.adaLN_modulation.1.weight" in trained
    config = tiny_config(tmp_path, out=str(tmp_path / "b"), objective="flow", freeze="x_embedder,attn")
    with pytest.raises(UserError, match="--freeze attn: no parameter is named so"):
        Trainer(config, D.init_distributed("cpu"), print)


def _resume_options(tmp_path, out, steps):
    return tiny_config(
        tmp_path,
        out=str(tmp_path / out),
        steps=steps,
        global_batch=16,
        micro_batch=8,
        warmup_steps=2,
        ema_decay=0.99,
        objective="flow",
        init=str(tmp_path / "src"),
        freeze="pos_embed,x_embedder",
    )


def test_an_init_run_resumes_exactly(tmp_path, source_run):
    straight = train(_resume_options(tmp_path, "straight", 4), progress=False)
    train(_resume_options(tmp_path, "resumed", 2), progress=False)
    (tmp_path / "src" / "checkpoints" / "0000002" / "ema.safetensors").unlink()  # never read again on resume
    resumed = train(_resume_options(tmp_path, "resumed", 4), resume=True, progress=False)
    a = load_training_checkpoint(straight.checkpoint)
    b = load_training_checkpoint(resumed.checkpoint)
    assert_state_equal(a.model, b.model)
    assert_state_equal(a.ema, b.ema)
    assert_state_equal(a.state["optimizer"], b.state["optimizer"])
    digest = json.loads((tmp_path / "straight" / RUN_CONFIG_FILE).read_text())["init_digest"]
    assert json.loads((tmp_path / "resumed" / RUN_CONFIG_FILE).read_text())["init_digest"] == digest
    extra = json.loads((resumed.checkpoint / "config.json").read_text())["extra"]
    assert extra["init"]["sha256"] == digest


def test_the_command_line_starts_and_resumes_an_init_run(tmp_path, source_run, capsys):
    from ditkit.cli.main import main

    base = tiny_config(tmp_path)
    command = ["train", "--model", "DiT-T/2", "--data", "fashion-mnist", "--data-dir", str(base.data_dir)]
    command += ["--image-size", "8", "--global-batch", "8", "--device", "cpu", "--objective", "flow"]
    out = str(tmp_path / "cli")
    init = ["--init", str(tmp_path / "src"), "--init-weights", "model", "--freeze", "all-but-adaln"]
    assert main([*command, *init, "--steps", "1", "--out", out, "--no-progress"]) == 0
    saved = json.loads((tmp_path / "cli" / RUN_CONFIG_FILE).read_text())
    assert saved["init_weights"] == "model" and saved["freeze"] == "all-but-adaln" and saved["init_digest"]
    assert main(["train", "--out", out, "--resume", "--steps", "2", "--no-progress"]) == 0
    assert json.loads((tmp_path / "cli" / RUN_CONFIG_FILE).read_text()) == {**saved, "steps": 2}
    assert main(["train", "--out", out, "--resume", "--init-weights", "ema", "--no-progress"]) == 2
    assert "--init-weights model (now ema)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"bee": "tabby"}, "records no class names; give its label index instead of 'tabby'"),
        ({"bee": 10}, "10 is no class of"),
        ({"wasp": 1}, "wasp"),
    ],
)
def test_class_maps_that_cannot_work_are_refused_before_building(tmp_path, mapping, message, monkeypatch):
    save_model(random_tiny_dit(in_channels=3), tmp_path / "src")  # 10 classes, no names recorded
    (tmp_path / "map.json").write_text(json.dumps(mapping))
    monkeypatch.setattr("ditkit.training.trainer.build_model", lambda *a: pytest.fail("built the model"))
    config = _folder_config(tmp_path, tmp_path / "src", init_class_map=str(tmp_path / "map.json"))
    with pytest.raises(UserError, match="--init-class-map") as err:
        train(config, progress=False)
    assert message in str(err.value) and "\n" not in str(err.value)
