"""One process and two (torchrun, gloo on CPU) give the same weights at the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_train_support import assert_state_equal, tiny_config

import ditkit
from ditkit.run_folder import checkpoint_path
from ditkit.training import train
from ditkit.training.state import load_training_checkpoint

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow, pytest.mark.filterwarnings("ignore::UserWarning")]


def _torchrun(
    cfg, parallel: str, *extra: str, entry: tuple[str, ...] = ("-m", "ditkit"), ok: bool = True
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    command += [
        *entry,
        "train",
        "--model",
        cfg.model,
        "--data",
        "fashion-mnist",
        "--data-dir",
        cfg.data_dir,
    ]
    command += ["--image-size", "8", "--global-batch", str(cfg.global_batch), "--micro-batch", "2"]
    command += ["--steps", str(cfg.steps), "--lr", str(cfg.lr), "--ema-decay", str(cfg.ema_decay)]
    command += ["--ckpt-every", "2", "--log-every", "1", "--device", "cpu", "--parallel", parallel]
    command += ["--out", cfg.out, "--no-progress", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert (done.returncode == 0) == ok, done.stderr[-3000:]
    return done


def _optimizer(state):
    """The optimizer state without the kernel choice (FSDP runs foreach, one process fused)."""
    groups = [{k: v for k, v in g.items() if k not in ("fused", "foreach")} for g in state["param_groups"]]
    return {"state": state["state"], "param_groups": groups}


def _losses(folder):
    return [json.loads(line)["loss"] for line in (folder / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_processes_match_one(tmp_path, parallel):
    single = train(tiny_config(tmp_path, out=str(tmp_path / "one"), steps=3), progress=False)
    two = tiny_config(tmp_path, out=str(tmp_path / "two"), steps=3)
    done = _torchrun(two, parallel)
    assert done.stdout.count("trained steps 1-3") == 1  # only rank 0 reports

    a = load_training_checkpoint(single.checkpoint)
    b = load_training_checkpoint(checkpoint_path(two.out, 3))
    # Gradients averaged over ranks differ from one process's only in the order of summation.
    assert_state_equal(a.model, b.model, exact=False)
    assert_state_equal(a.ema, b.ema, exact=False)
    assert_state_equal(_optimizer(a.state["optimizer"]), _optimizer(b.state["optimizer"]), exact=False)
    assert b.state["world_size"] == 2 and len(b.state["rng"]) == 2
    assert _losses(tmp_path / "one") == pytest.approx(_losses(tmp_path / "two"), rel=1e-5)

    # A two-process checkpoint resumes in one process and continues the same run.
    resumed = train(
        tiny_config(tmp_path, out=str(tmp_path / "two"), steps=3),
        resume=checkpoint_path(two.out, 2),
        progress=False,
    )
    c = load_training_checkpoint(resumed.checkpoint)
    assert c.step == 3
    assert_state_equal(a.model, c.model, exact=False)
    assert_state_equal(_optimizer(a.state["optimizer"]), _optimizer(c.state["optimizer"]), exact=False)


def test_two_processes_match_one_with_flow_matching(tmp_path):
    flow = {"objective": "flow", "time_sampling": "logit-normal"}
    single = train(tiny_config(tmp_path, out=str(tmp_path / "one"), steps=2, **flow), progress=False)
    two = tiny_config(tmp_path, out=str(tmp_path / "two"), steps=2, **flow)
    _torchrun(two, "ddp", "--objective", "flow", "--time-sampling", "logit-normal")
    a = load_training_checkpoint(single.checkpoint)
    b = load_training_checkpoint(checkpoint_path(two.out, 2))
    assert_state_equal(a.model, b.model, exact=False)
    assert _losses(tmp_path / "one") == pytest.approx(_losses(tmp_path / "two"), rel=1e-5)


def test_two_processes_match_one_with_meanflow(tmp_path):
    # Under torchrun the Jacobian-vector product takes two reverse passes through the DDP-wrapped model
    # ("auto"; forward-mode AD cannot run through DDP): the gradients average as for one process, whose
    # forward-mode run gives the same (tests/test_meanflow.py compares the two routes).
    jvp = "auto"
    meanflow = {
        "objective": "meanflow",
        "meanflow_guidance": 2.0,
        "meanflow_interval_share": 0.5,
        "meanflow_jvp": jvp,
    }
    single = train(tiny_config(tmp_path, out=str(tmp_path / "one"), steps=2, **meanflow), progress=False)
    two = tiny_config(tmp_path, out=str(tmp_path / "two"), steps=2, **meanflow)
    flags = ["--objective", "meanflow", "--meanflow-guidance", "2", "--meanflow-interval-share", "0.5"]
    _torchrun(two, "ddp", *flags, "--meanflow-jvp", jvp)
    a = load_training_checkpoint(single.checkpoint)
    b = load_training_checkpoint(checkpoint_path(two.out, 2))
    assert_state_equal(a.model, b.model, exact=False)
    assert _losses(tmp_path / "one") == pytest.approx(_losses(tmp_path / "two"), rel=1e-5)


def test_two_processes_match_one_with_muon(tmp_path):
    # Every rank orthogonalises the same all-reduced gradients, so DDP computes one process's update.
    muon = {"optimizer": "muon"}
    single = train(tiny_config(tmp_path, out=str(tmp_path / "one"), steps=2, **muon), progress=False)
    two = tiny_config(tmp_path, out=str(tmp_path / "two"), steps=2, **muon)
    _torchrun(two, "ddp", "--optimizer", "muon")
    a = load_training_checkpoint(single.checkpoint)
    b = load_training_checkpoint(checkpoint_path(two.out, 2))
    assert_state_equal(a.model, b.model, exact=False)
    assert_state_equal(_optimizer(a.state["optimizer"]), _optimizer(b.state["optimizer"]), exact=False)
    assert _losses(tmp_path / "one") == pytest.approx(_losses(tmp_path / "two"), rel=1e-5)


# `ditkit` with the blocks compiled by aot_eager: dynamo traces them with fullgraph=True as for
# inductor (where FSDP2's hooks inside a compiled block broke the graph), without minutes of C++.
TRACED_DITKIT = """
import sys
from pathlib import Path
import ditkit.model.compilation as compilation
compile_blocks = compilation.compile_blocks
compilation.compile_blocks = lambda model, **kw: compile_blocks(model, **{**kw, "backend": "aot_eager"})
from ditkit.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_fsdp_shards_compiled_blocks(tmp_path):
    """`--parallel fsdp --compile blocks`: FSDP2's hooks stay outside the compiled blocks (fullgraph),
    and two sharded compiled processes follow one eager process."""
    single = train(tiny_config(tmp_path, out=str(tmp_path / "one"), steps=3), progress=False)
    two = tiny_config(tmp_path, out=str(tmp_path / "two"), steps=3)
    script = tmp_path / "traced_ditkit.py"
    script.write_text(TRACED_DITKIT)
    done = _torchrun(two, "fsdp", "--compile", "blocks", entry=(str(script),))
    assert "compile blocks" in done.stderr
    a = load_training_checkpoint(single.checkpoint)
    b = load_training_checkpoint(checkpoint_path(two.out, 3))
    assert _losses(tmp_path / "one") == pytest.approx(_losses(tmp_path / "two"), rel=1e-5)
    assert_state_equal(a.model, b.model, exact=False)


LOW_MEMORY_ON_RANK_1 = """
import os
import sys
from pathlib import Path
import ditkit.training.memory as memory
if os.environ["RANK"] == "1":  # this process sees 1 MiB free
    memory.available_bytes = lambda device: 2**20
from ditkit.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_memory_refusal_in_one_process_stops_every_process_with_the_same_line(tmp_path):
    """Each process checks its own device's memory; one refusing stops all, before the model is built,
    each with the refusal's one line (rank 0 was killed by torchrun mid-setup instead: issue 28)."""
    cfg = tiny_config(tmp_path, out=str(tmp_path / "two"), steps=3)
    script = tmp_path / "low_memory_on_rank_1.py"
    script.write_text(LOW_MEMORY_ON_RANK_1)
    done = _torchrun(cfg, "ddp", entry=(str(script),), ok=False)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    # each process prints the same line; torchrun may end the second before it prints, once the
    # first has stopped, so one or two lines, never another message or a traceback
    assert len(errors) in (1, 2) and len(set(errors)) == 1, done.stderr[-3000:]
    assert "but only 0.0 GiB is free" in errors[0], errors
    frames = [line for line in done.stderr.splitlines() if line.strip().startswith('File "')]
    package = str(Path(ditkit.__file__).parent)
    assert not [f for f in frames if package in f], done.stderr[-3000:]  # torchrun's own report aside
    assert not (tmp_path / "two" / "checkpoints").exists()
