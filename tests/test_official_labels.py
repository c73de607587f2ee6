"""Official label tables: the null-class row exists only when the model was trained with label dropout.

The files are written here in the official layout: a state dict whose `y_embedder.embedding_table`
has num_classes rows (dropout 0) or num_classes + 1 (dropout > 0), plain or in train.py's dict.
"""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from helpers import SAMPLING_WEIGHT_STD, random_tiny_dit

from ditkit.checkpoints import load_checkpoint
from ditkit.cli.main import main
from ditkit.errors import UserError
from ditkit.generation.pipeline import DiTPipeline

TABLE = "y_embedder.embedding_table.weight"
NUM_CLASSES = 10


def _reference():
    """A tiny DiT with 10 classes + the null row, in fp32 eval mode."""
    return random_tiny_dit(seed=3, std=SAMPLING_WEIGHT_STD, in_channels=1, num_classes=NUM_CLASSES)


def _without_null_row(model):
    """Its weights as the official code saves a model trained with dropout 0: exactly 10 label rows."""
    state = dict(model.state_dict())
    state[TABLE] = state[TABLE][:NUM_CLASSES].clone()
    return state


def _outputs(model, labels):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(len(labels), 1, 8, 8, generator=g)
    with torch.no_grad():
        return model(x, torch.full((len(labels),), 500.0), torch.tensor(labels))


def test_plain_file_assumes_a_null_row_and_says_so(tmp_path):
    torch.save(_without_null_row(_reference()), tmp_path / "no-dropout.pt")
    loaded = load_checkpoint(tmp_path / "no-dropout.pt")
    assert loaded.config.num_classes == NUM_CLASSES - 1 and loaded.model.null_class == NUM_CLASSES - 1
    assert any("--num-classes 10" in note and "null class" in note for note in loaded.notes)


def test_explicit_class_count_reads_a_table_without_null_row(tmp_path):
    reference = _reference()
    torch.save(_without_null_row(reference), tmp_path / "no-dropout.pt")
    loaded = load_checkpoint(tmp_path / "no-dropout.pt", config={"num_classes": NUM_CLASSES})
    model = loaded.model
    assert model.num_classes == NUM_CLASSES and model.null_class is None
    assert model.y_embedder.embedding_table.weight.shape[0] == NUM_CLASSES
    assert not any("null class" in note for note in loaded.notes)
    labels = list(range(NUM_CLASSES))  # every class, the last one included, as the reference sees it
    assert torch.equal(_outputs(model, labels), _outputs(reference, labels))
    with pytest.raises(ValueError, match="no null class"):
        model(torch.zeros(1, 1, 8, 8), torch.zeros(1), None)
    with pytest.raises(UserError, match="class count"):
        load_checkpoint(tmp_path / "no-dropout.pt", config={"num_classes": 7})


@pytest.mark.parametrize("rows", [NUM_CLASSES, NUM_CLASSES + 1])
def test_training_arguments_decide_the_null_row(tmp_path, rows):
    reference = _reference()
    state = _without_null_row(reference) if rows == NUM_CLASSES else reference.state_dict()
    args = argparse.Namespace(model="DiT-T/2", image_size=8, num_classes=NUM_CLASSES, global_seed=0)
    torch.save({"model": state, "ema": state, "args": args}, tmp_path / "0001000.pt")
    loaded = load_checkpoint(tmp_path / "0001000.pt")
    assert loaded.config.num_classes == NUM_CLASSES and loaded.notes == []
    assert (loaded.model.null_class is not None) == (rows == NUM_CLASSES + 1)
    labels = [0, 4, 9]
    assert torch.equal(_outputs(loaded.model, labels), _outputs(reference, labels))


def test_cli_num_classes_for_convert_and_sample(tmp_path, capsys):
    torch.save(_without_null_row(_reference()), tmp_path / "no-dropout.pt")
    assert (
        main(["convert", str(tmp_path / "no-dropout.pt"), str(tmp_path / "out"), "--num-classes", "10"]) == 0
    )
    config = json.loads((tmp_path / "out" / "config.json").read_text())["config"]
    assert config["num_classes"] == NUM_CLASSES and config["null_class_row"] is False
    assert load_checkpoint(tmp_path / "out").model.null_class is None  # the converted folder keeps it

    argv = ["sample", str(tmp_path / "no-dropout.pt"), "--num-classes", "10", "--class", "9"]
    argv += ["--sampler", "ddim", "--steps", "2", "--num-per-class", "1", "--device", "cpu", "--quiet"]
    assert main([*argv, "--cfg-scale", "1", "--out", str(tmp_path / "s")]) == 0
    assert (tmp_path / "s" / "samples.json").is_file()
    assert main([*argv, "--cfg-scale", "4", "--out", str(tmp_path / "g")]) == 2
    err = capsys.readouterr().err
    assert "trained without label dropout" in err and "\n" not in err.strip()


def test_pipeline_config_argument(tmp_path):
    torch.save(_without_null_row(_reference()), tmp_path / "no-dropout.pt")
    pipe = DiTPipeline.from_pretrained(tmp_path / "no-dropout.pt", config={"num_classes": NUM_CLASSES})
    images = pipe([9, 0], guidance_scale=1.0, num_steps=2, sampler="ddim", progress=False)
    assert images.shape == (2, 8, 8, 1)
