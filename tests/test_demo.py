"""The demo's pipeline on a tiny recipe: files, formats and the report (its bar is measured by `make demo`)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import write_fake_fmnist
from PIL import Image

from ditkit.checkpoints import load_model
from ditkit.cli.main import SIGPIPE_EXIT
from ditkit.data.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist
from ditkit.demo.recipe import DEMO_RECIPE, DIFFUSION_DEMO_RECIPE, GUIDANCE_INTERVAL, DemoRecipe
from ditkit.demo.report import lowest_class, training_outcome, verdict
from ditkit.demo.run import run_demo
from ditkit.demo.scores import FLOOR_SEED, score_demo
from ditkit.errors import UserError
from ditkit.evaluation import fmnist_classifier
from ditkit.evaluation.fmnist_classifier import balanced_subset, score_fmnist_samples
from ditkit.evaluation.npz_io import read_npz
from ditkit.model.presets import get_config
from ditkit.training.config import ADAM_BETAS
from ditkit.visual import MIN_TILE_SIDE, PANEL_GAP, grid_layout, upscale_nearest

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

TINY = DemoRecipe(
    model="DiT-T/2",
    overrides={"depth": 1},
    global_batch=8,
    steps=2,
    sampling=DEMO_RECIPE.sampling.replace(steps=2, guidance_scale=2.0),
)


@pytest.fixture
def untrained_classifier(monkeypatch):
    """The demo's pipeline does not depend on the shipped weights; an untrained classifier scores it."""
    torch.manual_seed(0)
    model = fmnist_classifier.FashionMNISTClassifier().eval()
    monkeypatch.setattr(fmnist_classifier, "load_fmnist_classifier", lambda path=None: model)
    return model


def test_demo_recipe_can_train_by_flow_matching(tmp_path, untrained_classifier, monkeypatch):
    from ditkit.generation.pipeline import DiTPipeline

    calls = []
    original = DiTPipeline.__call__

    def spy(self, *args, **kwargs):
        calls.append(kwargs)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(DiTPipeline, "__call__", spy)
    flow = dataclasses.replace(
        TINY, objective="flow", time_sampling="logit-normal", sampling=TINY.sampling.replace(sampler="heun")
    )
    report = run_demo(
        write_fake_fmnist(tmp_path / "fmnist"),
        tmp_path / "demo",
        recipe=flow,
        per_class=2,
        device="cpu",
        progress=False,
    )
    assert report["recipe"]["objective"] == "flow" and report["recipe"]["sampling"]["sampler"] == "heun"
    # guided only inside the recipe's interval of flow times, and the report says so
    used = [c["settings"].guidance_interval for c in calls]
    assert used == [GUIDANCE_INTERVAL] == [DEMO_RECIPE.sampling.guidance_interval]
    assert "guidance scale 2.0 for times 0.16 to 0.78 only" in (tmp_path / "demo" / "report.md").read_text()
    assert DIFFUSION_DEMO_RECIPE.sampling.guidance_interval is None  # diffusion timesteps are not flow times
    # the checkpoint records how it was evaluated, and sampling it with nothing named redraws the report's
    # samples (the path a user takes: `ditkit sample runs/demo/checkpoint --class ...`)
    pipe = DiTPipeline.from_pretrained(tmp_path / "demo" / "checkpoint", device="cpu")
    assert (
        pipe.sampling == flow.sampling and pipe.default_sampler == "heun" and pipe.default_steps("heun") == 2
    )
    saved_images, saved_labels = read_npz(tmp_path / "demo" / "samples.npz")
    again = pipe(saved_labels[:4].tolist(), seeds=range(4), progress=False)[..., 0]
    np.testing.assert_array_equal(again, saved_images[:4])
    saved = json.loads((tmp_path / "demo" / "train_config.json").read_text())
    assert saved["objective"] == "flow" and saved["time_sampling"] == "logit-normal"
    assert tuple(saved["betas"]) == flow.betas == DEMO_RECIPE.betas  # the recipe's AdamW betas reach training
    # Fashion-MNIST faces one way: the recipe trains without flips, and report.md says so
    assert saved["flip"] == flow.flip == DEMO_RECIPE.flip == "none"
    assert "horizontal flips: none" in (tmp_path / "demo" / "report.md").read_text()
    # Muon on the blocks' matrices, AdamW on the rest: it reaches training, and report.md says so
    assert saved["optimizer"] == flow.optimizer == DEMO_RECIPE.optimizer == "muon"
    assert (
        "Muon on the blocks' weight matrices and AdamW (betas (0.9, 0.95))"
        in (tmp_path / "demo" / "report.md").read_text()
    )
    assert DEMO_RECIPE.train_config(None, "x", "cpu").objective == "flow"
    diffusion = DIFFUSION_DEMO_RECIPE.train_config(None, "x", "cpu")
    assert diffusion.objective == "diffusion" and diffusion.min_snr_gamma == 5.0
    # the diffusion recipe (and the study presets built on it) keeps the optimizer it was measured with
    assert (diffusion.optimizer, diffusion.lr, diffusion.betas, diffusion.flip) == (
        "adamw",
        2e-3,
        ADAM_BETAS,
        "random",
    )
    assert (diffusion.lr, diffusion.betas) != (DEMO_RECIPE.lr, DEMO_RECIPE.betas)
    # the demo's model has the exact GELU (a cheaper kernel on the CPU); the diffusion recipe keeps DiT's
    demo_model = get_config(DEMO_RECIPE.model, **DEMO_RECIPE.train_config(None, "x", "cpu").model_overrides)
    diffusion_model = get_config(DIFFUSION_DEMO_RECIPE.model, **diffusion.model_overrides)
    assert (demo_model.activation, diffusion_model.activation) == ("gelu", "gelu-tanh")
    assert (
        (demo_model.hidden_size, demo_model.depth)
        == (diffusion_model.hidden_size, diffusion_model.depth)
        == (128, 4)
    )


def test_demo_writes_samples_grid_curve_and_report(tmp_path, untrained_classifier, capsys):
    data = write_fake_fmnist(tmp_path / "fmnist")
    out = tmp_path / "demo"
    report = run_demo(data, out, recipe=TINY, per_class=3, device="cpu", progress=False)

    images, labels = read_npz(out / "samples.npz")
    assert images.dtype == np.uint8 and images.shape == (30, 28, 28)
    assert labels.tolist() == [c for c in range(10) for _ in range(3)]
    _check_pictures(out, images, labels, data)
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
    assert set(verdict(saved)) == {"agreement", "every_class", "frechet", "time"}
    _check_report_md((out / "report.md").read_text(), saved)
    printed = capsys.readouterr().out
    assert "classifier agreement:" in printed and "Frechet distance" in printed and "wall time" in printed
    # the weakest class by name, with its standard error over the 3 samples per class
    value, note = lowest_class(saved)
    assert f"lowest class agreement: {value} ({note}; bar 75%: " in printed
    assert note.endswith("the standard error of 3 samples at the bar")
    assert report["scores"]["num_samples"] == 30
    final = load_model(out / "checkpoint")  # the stable name of the final checkpoint
    assert final.num_classes == 10 and final.config.depth == 1

    # A second demo replaces the first one's outputs rather than resuming it.
    run_demo(data, out, recipe=TINY, per_class=1, device="cpu", progress=False)
    assert read_npz(out / "samples.npz")[0].shape[0] == 10


def _check_pictures(out: Path, images: np.ndarray, labels: np.ndarray, data: Path) -> None:
    """grid.png: one labelled row per class of enlarged samples; real_vs_generated.png: real | samples."""
    grid = np.asarray(Image.open(out / "grid.png"))
    layout = grid_layout(images, 3, row_labels=list(FASHION_MNIST_CLASSES))
    assert layout.rows == 10 and layout.tile_h >= MIN_TILE_SIDE and layout.left > 0
    assert grid.shape == (10 * (layout.tile_h + 2) + 2, layout.left + 3 * (layout.tile_w + 2) + 2)
    for i in (0, 4, 29):  # class-major: sample i is in row i // 3
        x0, y0, x1, y1 = layout.tile_box(i)
        assert np.array_equal(grid[y0:y1, x0:x1], upscale_nearest(images[i][..., None], layout.scale)[..., 0])
    for row in range(10):  # each row carries its class name
        _, y0, _, y1 = layout.tile_box(3 * row)
        assert (grid[y0:y1, : layout.left] < 200).sum() > 20

    pair = np.asarray(Image.open(out / "real_vs_generated.png"))
    test_images, test_labels = load_fashion_mnist(data, split="test")
    left = grid_layout(images, 3, row_labels=list(FASHION_MNIST_CLASSES), title="real")
    right = grid_layout(images, 3, title="generated")
    assert left.rows == right.rows == 10 and left.top == right.top > 0  # one row per class, headers above
    left_width = left.left + 3 * (left.tile_w + 2) + 2
    assert pair.shape[1] == left_width + PANEL_GAP + 3 * (right.tile_w + 2) + 2
    small = {c: test_images[test_labels == c] for c in range(10)}
    for c in range(10):
        for j in range(3):
            x0, y0, x1, y1 = left.tile_box(3 * c + j)
            tile = pair[y0 : y1 : left.scale, x0 : x1 : left.scale]  # back to 28 px
            assert any(np.array_equal(tile, real) for real in small[c])  # a real test image of class c
            x0, y0, x1, y1 = right.tile_box(3 * c + j)
            tile = pair[
                y0 : y1 : right.scale, left_width + PANEL_GAP + x0 : left_width + PANEL_GAP + x1 : right.scale
            ]
            assert np.array_equal(tile, images[3 * c + j])  # the samples of class c, in order
        assert (pair[left.tile_box(3 * c)[1] : left.tile_box(3 * c)[3], : left.left] < 200).sum() > 20
    assert (pair[: left.top, left.left :] < 200).sum() > 10  # the "real" header
    assert (pair[: right.top, left_width + PANEL_GAP :] < 200).sum() > 10  # the "generated" header


def _check_report_md(md: str, report: dict) -> None:
    """report.md states the machine, steps, seed, both metrics with floors, per class, time, pictures."""
    machine = report["machine"]
    for needed in (
        machine["cpu"],
        f"{machine['cpu_count']} logical CPUs",
        f"torch threads: {machine['torch_threads']}",
        f"torch {machine['torch']}",
        "device cpu",
        "2 steps reached; all 2 steps done",
        f"seed {report['seed']}",
        "classifier agreement",
        "Frechet distance",
        "real training images",
        "real test images",
        "![Samples, one row per class](grid.png)",
        "(real_vs_generated.png)",
        "(loss_curve.png)",
        "| setup (before training) |",
        "| training |",
        "| sampling |",
        "| evaluation |",
        "| **total** |",
    ):
        assert needed in md, needed
    for name in FASHION_MNIST_CLASSES:
        assert f"| {name} | " in md
    floors = report["floors"]
    assert f"{report['scores']['agreement']:.1%}" in md and f"{floors['train']['agreement']:.1%}" in md
    assert f"{report['scores']['frechet_distance']:.2f}" in md
    assert f"{floors['train']['frechet_distance']:.3f}" in md
    assert "| lowest class agreement | **{}** ({}) |".format(*lowest_class(report)) in md


def test_report_says_when_the_time_budget_cut_training():
    train = {"steps": 2750, "planned_steps": 4000, "time_budget_minutes": 10.0, "stopped": "time budget"}
    assert training_outcome(train) == "stopped by the 10-minute time budget at step 2750 of 4000"
    assert "interrupted (SIGINT) at step 2750" in training_outcome({**train, "stopped": "SIGINT"})
    no_budget = {**train, "steps": 4000, "stopped": "finished", "time_budget_minutes": None}
    assert training_outcome(no_budget) == "all 4000 steps done"


def test_floors_score_balanced_real_images(tmp_path, untrained_classifier):
    data = write_fake_fmnist(tmp_path / "fmnist", n=200)
    classifier = fmnist_classifier.load_fmnist_classifier()
    images, labels = load_fashion_mnist(data, split="train")
    measured = score_demo(images[:40], labels[:40], classifier=classifier, data_dir=data, per_class=4)
    assert measured.real_labels.tolist() == [c for c in range(10) for _ in range(4)]
    test_images, test_labels = load_fashion_mnist(data, split="test")
    chosen = balanced_subset(test_labels, 4, FLOOR_SEED)
    assert np.array_equal(measured.real_images, test_images[chosen])
    train, test = measured.floors["train"], measured.floors["test"]
    assert train["num_samples"] == test["num_samples"] == 40 and train["num_reference"] == 200
    assert not train["in_reference"] and test["in_reference"]
    # The floors are what the same scoring gives for those real images.
    again = score_fmnist_samples(
        test_images[chosen], test_labels[chosen], ref_images=test_images, classifier=classifier
    )
    assert test["agreement"] == again["agreement"]
    assert test["frechet_distance"] == pytest.approx(again["frechet_distance"], rel=1e-9)


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


def test_verdict_checks_every_bar():
    classes = {f"c{i}": 0.95 for i in range(10)}
    good = {
        "scores": {"agreement": 0.93, "per_class_agreement": classes, "frechet_distance": 4.0},
        "timing": {"total_seconds": 14 * 60},
    }
    assert all(verdict(good).values())
    weak_class = {**good, "scores": {**good["scores"], "per_class_agreement": {**classes, "c3": 0.7}}}
    assert verdict(weak_class) == {"agreement": True, "every_class": False, "frechet": True, "time": True}
    far = {**good, "scores": {**good["scores"], "frechet_distance": 5.5}}
    assert not verdict(far)["frechet"]
    low = {**good, "scores": {**good["scores"], "agreement": 0.89}}
    slow = {**good, "timing": {"total_seconds": 15.5 * 60}}
    assert not verdict(low)["agreement"] and not verdict(slow)["time"]


def test_lowest_class_names_the_class_and_its_standard_error():
    classes = {"Shirt": 0.77, "Bag": 1.0, "Pullover": 0.79}
    report = {"scores": {"per_class_agreement": classes}, "samples_per_class": 100}
    # sqrt(0.75 * 0.25 / n): 0.0433 at 100 samples, 0.0250 at 300
    assert lowest_class(report) == (
        "77.0%",
        "Shirt; ±4.3 points, the standard error of 100 samples at the bar",
    )
    at_300 = lowest_class({**report, "samples_per_class": 300})
    assert at_300 == ("77.0%", "Shirt; ±2.5 points, the standard error of 300 samples at the bar")


def test_demo_piped_into_head_still_finishes_and_saves(tmp_path):
    """`ditkit demo 2>&1 | head -1`: the reader leaves after the first line, the demo still trains, samples,
    scores and writes its report, and the status says output was lost (issue 28, item 7)."""
    data = write_fake_fmnist(tmp_path / "fmnist")
    out = tmp_path / "demo"
    command = [sys.executable, "-m", "ditkit", "demo", "--data-dir", str(data), "--out", str(out)]
    command += ["--steps", "2", "--num-per-class", "1", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    assert proc.stdout.readline().startswith("training ")
    proc.stdout.close()  # as `head -1` does once it has its line
    assert proc.wait(timeout=300) == SIGPIPE_EXIT
    report = json.loads((out / "report.json").read_text())
    assert report["training"]["steps"] == 2 and report["samples_per_class"] == 1
    assert (out / "checkpoint").is_dir() and (out / "samples.npz").is_file()
