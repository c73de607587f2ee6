"""`ditkit train` from the command line: a tiny run, overrides, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import write_fake_fmnist

from ditkit.cli.main import main

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _args(tmp_path, *extra):
    data = tmp_path / "fmnist"
    if not data.exists():
        write_fake_fmnist(data)
    base = [
        "train",
        "--model",
        "DiT-T/2",
        "--data",
        "fashion-mnist",
        "--data-dir",
        str(data),
        "--image-size",
        "8",
    ]
    base += ["--global-batch", "8", "--device", "cpu", "--no-progress", "--out", str(tmp_path / "run")]
    return [*base, *extra]


def test_cli_trains_a_tiny_model_with_overrides(tmp_path, capsys):
    code = main(
        _args(tmp_path, "--steps", "2", "--set", "depth=1", "--set", "block=in-context", "--no-learn-sigma")
    )
    assert code == 0
    assert "trained steps 1-2" in capsys.readouterr().out
    config = json.loads((tmp_path / "run" / "checkpoints" / "0000002" / "config.json").read_text())["config"]
    assert config["depth"] == 1 and config["block"] == "in-context" and config["learn_sigma"] is False
    saved = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert saved["model_overrides"] == {"depth": 1, "block": "in-context"}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "exactly one of --steps and --epochs"),
        (["--steps", "2", "--global-batch", "7", "--micro-batch", "2"], "--micro-batch 2"),
        (["--steps", "2", "--set", "hidden_size=33"], "not divisible"),
        (["--steps", "2", "--set", "hidden_size=30"], "divisible by 4"),
        (["--steps", "2", "--set", "colour=blue"], "invalid model options"),
        (["--steps", "2", "--resume", "/nonexistent/run"], "no training checkpoint"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, capsys, extra, message):
    assert main(_args(tmp_path, *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_cli_help_shows_examples(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert "torchrun" in text and "--resume" in text and "--global-batch" in text


def test_resume_takes_the_runs_own_options(tmp_path, capsys):
    """`--resume` without --model/--data: the run's train_config.json supplies them (issue 16, item 1)."""
    assert main(_args(tmp_path, "--steps", "2", "--set", "depth=1", "--ckpt-every", "1")) == 0
    capsys.readouterr()
    run = str(tmp_path / "run")
    assert main(["train", "--out", run, "--resume", "--steps", "4", "--no-progress"]) == 0
    assert (tmp_path / "run" / "checkpoints" / "0000004").is_dir()
    # Item 5: the new steps are named, and the printed loss is the logged one, labelled.
    printed = capsys.readouterr().out
    assert "trained steps 3-4 (2 new steps after resuming)" in printed
    logged = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert logged["step"] == 4 and f"loss {logged['loss']:.4f} (mean of steps 3-4, as logged)" in printed
    saved = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert saved["model"] == "DiT-T/2" and saved["model_overrides"] == {"depth": 1} and saved["steps"] == 4


def test_resume_refuses_changed_options_in_one_line_with_both_values(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    saved = {"model": "DiT-T/2", "lr": 5e-4, "steps": 2, "out": str(run), "seed": 0}
    (run / "train_config.json").write_text(json.dumps(saved))
    assert main(["train", "--out", str(run), "--resume", "--steps", "4", "--lr", "1e-3", "--seed", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot resume") and "\n" not in err
    assert "--lr 0.0005 (now 0.001)" in err and "--seed" not in err


def test_bad_options_fail_before_torch_is_imported():
    """A missing --steps/--epochs is a parse-time error: no seconds of loading first (item 13)."""
    code = (
        "import sys\n"
        "from ditkit.cli.main import main\n"
        "code = main(['train', '--out', 'never-written'])\n"
        "print(code, 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["2", "False"]
    assert "exactly one of --steps and --epochs" in done.stderr


def test_a_run_folder_samples_its_newest_checkpoint_and_last_links_to_it(tmp_path, capsys):
    """Item 2: `ditkit sample RUN` and `RUN/checkpoints/last` (kept by the trainer) load the newest one."""
    assert main(_args(tmp_path, "--steps", "2", "--set", "depth=1", "--ckpt-every", "1")) == 0
    run = tmp_path / "run"
    last = run / "checkpoints" / "last"
    assert last.is_symlink() and last.resolve() == (run / "checkpoints" / "0000002").resolve()
    for source in (run, run / "checkpoints", last):
        out = tmp_path / f"grid-{source.name}"
        argv = ["sample", str(source), "--class", "3", "--num-per-class", "1", "--steps", "2"]
        assert main([*argv, "--device", "cpu", "--quiet", "--out", str(out)]) == 0
        used = json.loads((out / "samples.json").read_text())["settings"]["checkpoint"]
        assert Path(used).resolve() == (run / "checkpoints" / "0000002").resolve(), source
    assert "1 image " in capsys.readouterr().out  # not "1 images" (item 13)


def test_sampling_a_samples_file_says_what_it_is(tmp_path, capsys):
    """Item 12: a .npz passed as a checkpoint gets a plain sentence, not a C++ `enforce fail`."""
    npz = tmp_path / "samples.npz"
    npz.write_bytes(b"PK\x03\x04 not really a zip")
    assert main(["sample", str(npz), "--class", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "is a NumPy archive" in err and "not a checkpoint" in err and "enforce" not in err


def test_a_closed_pipe_does_not_lose_the_run(tmp_path):
    """`ditkit train ... 2>&1 | head -1`: the reader leaves after one line, the run still saves (issue 28)."""
    argv = [a for a in _args(tmp_path, "--steps", "3", "--log-every", "1") if a != "--no-progress"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "ditkit", *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout.readline()
    proc.stdout.close()  # as `head -1` does once it has its line
    assert proc.wait(timeout=120) == 141  # the work is done; the status says output was lost
    assert (tmp_path / "run" / "checkpoints" / "0000003" / "train_state.pt").is_file()
    assert json.loads((tmp_path / "run" / "train_summary.json").read_text())["step"] == 3
