"""Optional parts: the core runs without them, and a missing one is named with its extra in one line."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import write_fake_fmnist

from ditkit.errors import UserError
from ditkit.extras import EXTRA_MODULES
from ditkit.first_stage.load import load_first_stage

# Run as a fresh interpreter in which every optional module fails to import.
_WITHOUT_EXTRAS = """
import sys
for name in {modules!r}:
    sys.modules[name] = None  # `import name` now raises ModuleNotFoundError
from ditkit.cli.main import main
code = main({argv!r})
leaked = sorted(m for m in sys.modules if m.split(".")[0] in {modules!r} and sys.modules[m] is not None)
assert not leaked, leaked
sys.exit(code)
"""


def _run_without_extras(argv):
    modules = [m for group in EXTRA_MODULES.values() for m in group]
    script = _WITHOUT_EXTRAS.format(modules=modules, argv=argv)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_core_trains_and_samples_without_any_extra(tmp_path):
    data = write_fake_fmnist(tmp_path / "fmnist", n=16)
    train = [
        "train",
        "--model",
        "DiT-T/2",
        "--set",
        "depth=1",
        "--data",
        "fashion-mnist",
        "--data-dir",
        str(data),
    ]
    train += ["--image-size", "8", "--global-batch", "4", "--steps", "1", "--device", "cpu", "--no-progress"]
    done = _run_without_extras([*train, "--out", str(tmp_path / "run")])
    assert done.returncode == 0, done.stderr
    checkpoint = str(tmp_path / "run" / "checkpoints" / "0000001")
    sample = [
        "sample",
        checkpoint,
        "--class",
        "3",
        "--num-per-class",
        "1",
        "--sampler",
        "ddim",
        "--steps",
        "2",
    ]
    done = _run_without_extras([*sample, "--device", "cpu", "--quiet", "--out", str(tmp_path / "s")])
    assert done.returncode == 0, done.stderr


def test_missing_diffusers_names_the_extra(tmp_path, monkeypatch):
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "config.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "diffusers", None)
    with pytest.raises(UserError, match=r"pip install 'ditkit\[diffusers\]'") as info:
        load_first_stage(str(tmp_path / "vae"))
    assert "\n" not in str(info.value)
