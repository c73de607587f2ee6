"""`--logger tensorboard`: the scalars of metrics.jsonl and the preview grids as TensorBoard events."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from test_train_cli import _args

from ditkit.cli.main import main
from ditkit.errors import UserError
from ditkit.training.metrics import TENSORBOARD_DIR, MetricsLog, check_logger, read_metrics

pytest.importorskip("tensorboard", reason="the tensorboard extra (make test installs it)")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _events(folder):
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def _scalars(events, tag):
    return [(e.step, e.value) for e in events.Scalars(tag)]


def test_scalars_and_images_match_the_jsonl(tmp_path):
    log = MetricsLog(tmp_path, logger="tensorboard")
    records = [{"step": s, "epoch": 0, "loss": 1.0 / s, "lr": 1e-4 * s, "finite": True} for s in (1, 2, 3)]
    for record in records:
        log.write(record)
    log.image("samples", np.full((6, 4, 3), 200, dtype=np.uint8), step=3)
    log.close()
    assert read_metrics(tmp_path / "metrics.jsonl") == records  # the JSONL is written as before
    events = _events(tmp_path / TENSORBOARD_DIR)
    assert set(events.Tags()["scalars"]) == {"epoch", "loss", "lr"}  # numbers only, not step or flags
    assert _scalars(events, "loss") == [(s, pytest.approx(1.0 / s)) for s in (1, 2, 3)]
    (image,) = events.Images("samples")
    assert (image.step, image.width, image.height) == (3, 4, 6)


def test_jsonl_logger_writes_no_events(tmp_path):
    log = MetricsLog(tmp_path)
    log.write({"step": 1, "loss": 0.5})
    log.image("samples", np.zeros((2, 2, 3), dtype=np.uint8), step=1)
    assert not (tmp_path / TENSORBOARD_DIR).exists()


def test_missing_tensorboard_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(UserError, match=r"pip install 'ditkit\[tensorboard\]'"):
        check_logger("tensorboard")


def test_training_run_logs_the_same_scalars_and_the_previews(tmp_path):
    argv = _args(tmp_path, "--steps", "2", "--set", "depth=1", "--log-every", "1", "--sample-every", "2")
    assert main([*argv, "--sample-steps", "2", "--logger", "tensorboard"]) == 0
    run = tmp_path / "run"
    records = read_metrics(run / "metrics.jsonl")
    events = _events(run / TENSORBOARD_DIR)
    assert [step for step, _ in _scalars(events, "loss")] == [r["step"] for r in records] == [1, 2]
    for tag in ("loss", "lr"):
        assert [v for _, v in _scalars(events, tag)] == pytest.approx([r[tag] for r in records], rel=1e-6)
    (grid,) = events.Images("samples")
    assert grid.step == 2 and grid.width > 0
