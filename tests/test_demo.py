"""The demo's pipeline on a tiny recipe: files, formats and the report (its bar is measured by `make demo`)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import write_fake_fmnist
from PIL import Image

from ditkit.checkpoints import load_model
from ditkit.demo.recipe import FLOW_DEMO_RECIPE, DemoRecipe
from ditkit.demo.report import verdict
from ditkit.demo.run import run_demo
from ditkit.errors import UserError
from ditkit.evaluation import fmnist_classifier

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

TINY = DemoRecipe(
    model="DiT-T/2", overrides={"depth": 1}, global_batch=8, steps=2, sample_steps=2, cfg_scale=2.0
)


@pytest.fixture
def untrained_classifier(monkeypatch):
    """The demo's pipeline does not depend on the shipped weights; an untrained classifier scores it."""
    torch.manual_seed(0)
    model = fmnist_classifier.FashionMNISTClassifier().eval()
    monkeypatch.setattr(fmnist_classifier, "load_fmnist_classifier", lambda path=None: model)
    return model


def test_demo_recipe_can_train_by_flow_matching(tmp_path, untrained_classifier):
    flow = dataclasses.replace(TINY, objective="flow", time_sampling="logit-normal", sampler="heun")
    report = run_demo(
        write_fake_fmnist(tmp_path / "fmnist"),
        tmp_path / "demo",
        recipe=flow,
        per_class=2,
        device="cpu",
        progress=False,
    )
    assert report["recipe"]["objective"] == "flow" and report["recipe"]["sampler"] == "heun"
    saved = json.loads((tmp_path / "demo" / "train_config.json").read_text())
    assert saved["objective"] == "flow" and saved["time_sampling"] == "logit-normal"
    assert FLOW_DEMO_RECIPE.train_config(None, "x", "cpu").objective == "flow"


def test_demo_writes_samples_grid_curve_and_report(tmp_path, untrained_classifier, capsys):
    data = write_fake_fmnist(tmp_path / "fmnist")
    out = tmp_path / "demo"
    report = run_demo(data, out, recipe=TINY, per_class=3, device="cpu", progress=False)

    with np.load(out / "samples.npz") as npz:
        images, labels = npz["images"], npz["labels"]
    assert images.dtype == np.uint8 and images.shape == (30, 28, 28)
    assert labels.tolist() == [c for c in range(10) for _ in range(3)]
    grid = Image.open(out / "grid.png")
    assert grid.size == (2 * (3 * 30 + 2), 2 * (10 * 30 + 2))  # 10 rows of 3 (28 px + 2 px padding), x2
    assert Image.open(out / "loss_curve.png").format == "PNG"
    saved = json.loads((out / "report.json").read_text())
    assert saved["training"]["steps"] == 2 and saved["samples_per_class"] == 3
    # The reported agreement is the classifier's verdict on the saved samples and their saved labels.
    _, logits = fmnist_classifier.classify(untrained_classifier, images)
    hits = logits.argmax(axis=1) == labels
    assert saved["scores"]["agreement"] == pytest.approx(hits.mean(), abs=1e-12)
    per_class = saved["scores"]["per_class_agreement"]
    assert list(per_class.values()) == pytest.approx([hits[labels == c].mean() for c in range(10)])
    assert np.isfinite(saved["scores"]["frechet_distance"]) and saved["scores"]["frechet_distance"] >= 0
    assert set(verdict(saved)) == {"agreement", "time"}
    assert "classifier agreement" in (out / "report.md").read_text()
    printed = capsys.readouterr().out
    assert "classifier agreement:" in printed and "Frechet distance" in printed and "wall time" in printed
    assert report["scores"]["num_samples"] == 30
    final = load_model(out / "checkpoint")  # the stable name of the final checkpoint
    assert final.num_classes == 10 and final.config.depth == 1

    # A second demo replaces the first one's outputs rather than resuming it.
    run_demo(data, out, recipe=TINY, per_class=1, device="cpu", progress=False)
    with np.load(out / "samples.npz") as npz:
        assert npz["images"].shape[0] == 10


def test_demo_refuses_a_foreign_folder(tmp_path, untrained_classifier):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("do not delete")
    with pytest.raises(UserError, match="not a ditkit demo"):
        run_demo(tmp_path / "fmnist", tmp_path / "mine", recipe=TINY, device="cpu", progress=False)
    assert (tmp_path / "mine" / "thesis.tex").exists()


def test_checkpoint_link_falls_back_to_a_whole_copy(tmp_path, monkeypatch):
    from ditkit.demo import run as demo_run

    checkpoint = tmp_path / "checkpoints" / "0000004"
    checkpoint.mkdir(parents=True)
    (checkpoint / "config.json").write_text("{}")

    def no_links(self, *args, **kwargs):
        raise OSError("links not supported here")

    monkeypatch.setattr(Path, "symlink_to", no_links)
    link = demo_run._link_checkpoint(tmp_path, checkpoint)
    assert not link.is_symlink() and (link / "config.json").read_text() == "{}"

    # A copy that fails leaves nothing under the final name.
    def broken_copy(src, dst, **kwargs):
        (Path(dst) / "config.json").write_text("partial")
        raise OSError("disk full")

    monkeypatch.setattr(demo_run.shutil, "copytree", broken_copy)
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(OSError, match="disk full"):
        demo_run._link_checkpoint(other, checkpoint)
    assert list(other.iterdir()) == []
