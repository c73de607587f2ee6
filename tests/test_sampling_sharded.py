"""FID-scale sharded sampling: label plans, resume, process-count independence, packing, `ditkit sample --num`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import sampling_dit

from ditkit.checkpoints import save_model
from ditkit.cli.main import main
from ditkit.errors import UserError
from ditkit.evaluation.npz_io import NpzImages, read_labels
from ditkit.generation.pipeline import DiTPipeline
from ditkit.generation.sharded import (
    MANIFEST_FILE,
    ShardedSettings,
    generate_sharded,
    label_plan,
    load_packed,
    pack_shards,
    shard_path,
)
from ditkit.samplers.settings import SamplingSettings

# 7 samples in shards of 3: shards of 3, 3 and 1 (the last one short).
SETTINGS = ShardedSettings(
    num_samples=7,
    shard_size=3,
    sampling=SamplingSettings(sampler="ddim", steps=3, guidance_scale=2.0, seed=5),
)
IDENTITY = {"first_stage": {"kind": "identity", "channels": 1}}


@pytest.fixture(scope="module")
def pipe():
    return DiTPipeline(sampling_dit(), device="cpu")


@pytest.fixture(scope="module")
def reference(pipe, tmp_path_factory):
    """An uninterrupted single-process run."""
    out = tmp_path_factory.mktemp("reference")
    result = generate_sharded(pipe, out, SETTINGS, progress=False)
    assert result.computed == [0, 1, 2] and result.packed == out / "samples.npz"
    return load_packed(result.packed)


def test_label_plans():
    uniform = label_plan(ShardedSettings(num_samples=2000, sampling=SamplingSettings(seed=3)), 10)
    assert uniform.dtype == np.int64 and set(uniform.tolist()) == set(range(10))
    assert np.array_equal(
        uniform, label_plan(ShardedSettings(num_samples=2000, sampling=SamplingSettings(seed=3)), 10)
    )
    assert not np.array_equal(
        uniform, label_plan(ShardedSettings(num_samples=2000, sampling=SamplingSettings(seed=4)), 10)
    )
    balanced = label_plan(ShardedSettings(num_samples=25, label_mode="balanced"), 10)
    assert np.array_equal(balanced, np.arange(25) % 10)
    subset = label_plan(ShardedSettings(num_samples=100, classes=(2, 7)), 10)
    assert set(subset.tolist()) == {2, 7}
    assert label_plan(ShardedSettings(num_samples=5), 0) is None
    with pytest.raises(UserError):
        label_plan(ShardedSettings(num_samples=5, classes=(10,)), 10)
    with pytest.raises(UserError):
        ShardedSettings(label_mode="random")


def test_packed_layout_and_redraw(pipe, reference):
    images, labels = reference
    assert images.shape == (7, 8, 8, 3) and images.dtype == np.uint8
    assert np.array_equal(images[..., 0], images[..., 2])  # grey copied to 3 channels (ADM layout)
    assert np.array_equal(labels, label_plan(SETTINGS, 10))
    # sample i is `seed + i` with label i: it can be redrawn alone (same batch composition: shard 2 has 1 sample)
    alone = pipe(
        [int(labels[6])],
        seeds=[SETTINGS.sampling.seed + 6],
        guidance_scale=2.0,
        num_steps=3,
        sampler="ddim",
        progress=False,
    )
    assert np.array_equal(images[6], np.repeat(alone[0], 3, axis=-1))
    assert len({images[i].tobytes() for i in range(7)}) == 7


def test_packed_file_reads_like_an_adm_batch(tmp_path, pipe):
    generate_sharded(pipe, tmp_path, SETTINGS, progress=False)
    npz = NpzImages(tmp_path / "samples.npz")
    assert len(npz) == 7 and npz.image_shape == (8, 8, 3)
    streamed = np.concatenate(list(npz.batches(4)))
    assert np.array_equal(streamed, load_packed(tmp_path / "samples.npz")[0])
    assert np.array_equal(read_labels(tmp_path / "samples.npz"), label_plan(SETTINGS, 10))


def test_interrupted_run_resumes_to_identical_arrays(tmp_path, pipe, reference):
    first = generate_sharded(pipe, tmp_path, SETTINGS, max_shards=1, progress=False)
    assert first.computed == [0] and first.packed is None and first.missing == [1, 2]
    stamp = shard_path(tmp_path, 0).stat().st_mtime_ns
    second = generate_sharded(pipe, tmp_path, SETTINGS, progress=False)
    assert second.skipped == [0] and second.computed == [1, 2]
    assert shard_path(tmp_path, 0).stat().st_mtime_ns == stamp  # never recomputed
    images, labels = load_packed(second.packed)
    assert np.array_equal(images, reference[0]) and np.array_equal(labels, reference[1])
    # a deleted shard is recomputed to the same bytes
    shard_path(tmp_path, 1).unlink()
    (tmp_path / "samples.npz").unlink()
    third = generate_sharded(pipe, tmp_path, SETTINGS, progress=False)
    assert third.computed == [1]
    assert np.array_equal(load_packed(third.packed)[0], reference[0])


def test_two_ranks_equal_one_process(tmp_path, pipe, reference):
    r1 = generate_sharded(pipe, tmp_path, SETTINGS, rank=1, world_size=2, progress=False)
    assert r1.computed == [1] and r1.packed is None
    r0 = generate_sharded(pipe, tmp_path, SETTINGS, rank=0, world_size=2, progress=False)
    assert r0.computed == [0, 2]
    images, labels = load_packed(r0.packed)
    assert np.array_equal(images, reference[0]) and np.array_equal(labels, reference[1])


def test_changed_settings_or_model_refuse_to_resume(tmp_path, pipe):
    generate_sharded(pipe, tmp_path, SETTINGS, max_shards=1, progress=False)
    changed = ShardedSettings.from_dict({**SETTINGS.to_dict(), "guidance_scale": 4.0})
    with pytest.raises(UserError, match="guidance_scale: 2.0 then, 4.0 now"):
        generate_sharded(pipe, tmp_path, changed, progress=False)
    other = DiTPipeline(sampling_dit(seed=1), device="cpu")
    with pytest.raises(UserError, match="model"):
        generate_sharded(other, tmp_path, SETTINGS, progress=False)
    with pytest.raises(UserError, match="lacks 2 of 3 shards"):
        pack_shards(tmp_path)


def test_a_run_begun_by_the_older_settings_resumes(tmp_path, pipe, reference):
    """The manifest keeps the keys it had before ShardedSettings held a SamplingSettings."""
    older = {  # what ditkit wrote before, for SETTINGS
        "num_samples": 7,
        "seed": 5,
        "label_mode": "uniform",
        "classes": None,
        "shard_size": 3,
        "guidance_scale": 2.0,
        "num_steps": 3,
        "sampler": "ddim",
        "guided_channels": "all",
        "guidance_interval": None,
        "eta": 0.0,
    }
    assert SETTINGS.to_dict() == {**older, "timestep_shift": 1.0}  # the fields added since, at defaults
    assert ShardedSettings.from_dict(older) == SETTINGS
    generate_sharded(pipe, tmp_path, SETTINGS, max_shards=1, progress=False)
    manifest = json.loads((tmp_path / MANIFEST_FILE).read_text())
    (tmp_path / MANIFEST_FILE).write_text(json.dumps({**manifest, "settings": older}))
    resumed = generate_sharded(pipe, tmp_path, SETTINGS, progress=False)
    assert resumed.skipped == [0] and resumed.computed == [1, 2]
    assert np.array_equal(load_packed(resumed.packed)[0], reference[0])


def test_unconditional_run_has_no_labels(tmp_path):
    pipe = DiTPipeline(sampling_dit(num_classes=0), device="cpu")
    settings = ShardedSettings(
        num_samples=4, shard_size=2, sampling=SamplingSettings(sampler="ddim", steps=2)
    )
    images, labels = load_packed(generate_sharded(pipe, tmp_path, settings, progress=False).packed)
    assert images.shape == (4, 8, 8, 3) and labels is None


def test_cli_fid_mode(tmp_path, capsys, reference):
    save_model(sampling_dit(), tmp_path / "ckpt", extra=IDENTITY)

    def args(steps="3"):
        out = [
            "sample",
            str(tmp_path / "ckpt"),
            "--num",
            "7",
            "--shard-size",
            "3",
            "--seed",
            "5",
            "--cfg-scale",
            "2",
        ]
        return out + ["--sampler", "ddim", "--steps", steps, "--fid-out", str(tmp_path / "fid"), "--quiet"]

    assert main([*args(), "--max-shards", "2"]) == 0
    assert "1 shard still missing" in capsys.readouterr().out
    assert main(args()) == 0
    assert "samples.npz (7 samples" in capsys.readouterr().out
    images, labels = load_packed(tmp_path / "fid" / "samples.npz")
    assert np.array_equal(images, reference[0]) and np.array_equal(labels, reference[1])
    assert main(args(steps="4")) == 2  # other settings: refuses to mix runs
    assert "num_steps: 3 then, 4 now" in capsys.readouterr().err


@pytest.mark.multiprocess
@pytest.mark.slow
def test_torchrun_two_processes_equal_one(tmp_path, reference):
    save_model(sampling_dit(), tmp_path / "ckpt", extra=IDENTITY)
    out = tmp_path / "fid"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    command += ["-m", "ditkit", "sample", str(tmp_path / "ckpt"), "--num-samples", "7", "--shard-size", "3"]
    command += ["--seed", "5"]
    command += ["--cfg-scale", "2", "--sampler", "ddim", "--steps", "3", "--fid-out", str(out), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=300, cwd=Path(__file__).parent
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "computed 2 shards here, 0 already done" in done.stdout  # rank 0: shards 0 and 2 of 3
    assert sorted(p.name for p in out.glob("shard_*.npz")) == [
        "shard_00000.npz",
        "shard_00001.npz",
        "shard_00002.npz",
    ]
    images, labels = load_packed(out / "samples.npz")
    assert np.array_equal(images, reference[0]) and np.array_equal(labels, reference[1])
