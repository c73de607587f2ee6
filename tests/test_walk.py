"""Latent walks: slerp, noise walks, class-embedding walks, outputs, and `ditkit walk`."""

import copy
import math

import numpy as np
import pytest
import torch
from helpers import sampling_dit
from PIL import Image

from ditkit.checkpoints import save_model
from ditkit.cli.main import main
from ditkit.errors import UserError
from ditkit.generation.pipeline import DiTPipeline
from ditkit.generation.walks import (
    LabelMixModel,
    Walk,
    class_walk,
    make_walks,
    noise_walk,
    save_walks,
    slerp,
    walk_positions,
)
from ditkit.visual import grid_layout, upscale_nearest

FAST = dict(num_steps=3, progress=False)


@pytest.fixture(scope="module")
def pipe():
    return DiTPipeline(sampling_dit(), class_names=[f"c{i}" for i in range(10)], device="cpu")


def plain(pipe, label, seed, **kw):
    return pipe.sample_latents([label], seeds=[seed], sampler="ddim", batch_size=1, **FAST, **kw)[0]


def test_slerp_endpoints_are_exact_and_norm_is_kept():
    g = torch.Generator().manual_seed(0)
    z0, z1 = torch.randn(2, 4, 8, 8, generator=g)
    assert torch.equal(slerp(z0, z1, 0.0), z0) and torch.equal(slerp(z0, z1, 1.0), z1)
    u1 = z1 * (z0.norm() / z1.norm())  # equal norms: every point keeps the norm
    for a in (0.1, 0.25, 0.5, 0.9):
        assert math.isclose(slerp(z0, u1, a).norm().item(), z0.norm().item(), rel_tol=1e-5)
        # Gaussian noises of different norms stay near the sphere of radius sqrt(d), unlike lerp
        d = z0.numel()
        assert abs(slerp(z0, z1, a).norm().item() / math.sqrt(d) - 1) < 0.1
    assert (torch.lerp(z0, z1, 0.5).norm() / math.sqrt(z0.numel())).item() < 0.8
    e0, e1 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])  # the great circle
    torch.testing.assert_close(slerp(e0, e1, 0.5), torch.tensor([1.0, 1.0]) / math.sqrt(2))
    torch.testing.assert_close(slerp(e0, e1, 1 / 3), torch.tensor([math.cos(math.pi / 6), 0.5]))


def test_slerp_degenerate_inputs():
    z = torch.randn(16, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(slerp(z, z.clone(), 0.3), z)  # parallel: no NaN, falls back to lerp
    torch.testing.assert_close(slerp(z, -z, 0.25), 0.5 * z)  # opposite: lerp, no huge weights
    with pytest.raises(ValueError):
        slerp(z, z[:8], 0.5)


def test_walk_positions():
    assert walk_positions(2, 3) == [(0, 0.0), (0, 0.5), (0, 1.0)]
    assert len(walk_positions(3, 4)) == 7 and walk_positions(3, 4)[3] == (1, 0.0)
    assert walk_positions(2, 3, loop=True) == [(0, 0.0), (0, 0.5), (1, 0.0), (1, 0.5)]
    with pytest.raises(UserError):
        walk_positions(1, 4)
    with pytest.raises(UserError):
        walk_positions(2, 1)


def test_noise_walk_ends_on_the_seeds_samples(pipe):
    walk = noise_walk(pipe, "c3", [4, 9, 2], 4, batch_size=1, **FAST)
    assert walk.latents.shape == (7, 1, 8, 8) and walk.images.shape == (7, 8, 8, 1)
    for frame, seed in ((0, 4), (3, 9), (6, 2)):
        assert torch.equal(walk.latents[frame], plain(pipe, 3, seed))
    assert (walk.latents[1] - walk.latents[0]).abs().max() > 1e-4  # in between: something else
    assert walk.title == "c3: seeds 4 -> 9 -> 2"
    batched = noise_walk(pipe, 3, [4, 9, 2], 4, **FAST)  # one batch: equal up to float rounding
    torch.testing.assert_close(batched.latents, walk.latents, rtol=1e-4, atol=1e-4)
    with pytest.raises(UserError, match="deterministic"):
        noise_walk(pipe, 3, [0, 1], 3, sampler="ddpm", **FAST)


def test_class_walk_ends_equal_plain_sampling(pipe):
    walk = class_walk(pipe, ["c1", 5], seed=7, frames_per_segment=5, batch_size=1, **FAST)
    assert torch.equal(walk.latents[0], plain(pipe, 1, 7))
    assert torch.equal(walk.latents[-1], plain(pipe, 5, 7))
    assert (walk.latents[2] - walk.latents[0]).abs().max() > 1e-4
    assert walk.title == "seed 7: c1 -> c5"
    assert not pipe.model.y_embedder._forward_hooks  # the hook is gone after the call
    # ddpm: the per-step noise is the seed's for every frame, so the ends still match
    ddpm = class_walk(pipe, [1, 5], 7, 3, sampler="ddpm", batch_size=1, **FAST)
    expected = pipe.sample_latents([5], seeds=[7], sampler="ddpm", **FAST)[0]
    assert torch.equal(ddpm.latents[-1], expected)


def test_class_walk_midpoint_is_the_mixed_embedding_with_null_guidance(pipe):
    """Frame alpha = 0.5 equals a model whose class-1 row is replaced by the mix (null row untouched)."""
    walk = class_walk(pipe, [1, 5], 7, 3, batch_size=1, guidance_scale=3.0, **FAST)
    assert walk.label == "seed 7"  # what tells class walks apart in a grid
    edited = copy.deepcopy(pipe.model)
    table = edited.y_embedder.embedding_table.weight
    with torch.no_grad():
        table[1] = 0.5 * table[1] + 0.5 * table[5]
    reference = DiTPipeline(edited, device="cpu")
    expected = reference.sample_latents([1], seeds=[7], sampler="ddim", guidance_scale=3.0, **FAST)[0]
    torch.testing.assert_close(walk.latents[1], expected, rtol=1e-5, atol=1e-5)


def test_label_mix_model_needs_a_conditional_model():
    with pytest.raises(UserError, match="class-conditional"):
        LabelMixModel(sampling_dit(num_classes=0), torch.zeros(2, 32))


def test_make_and_save_walks(pipe, tmp_path):
    walks = make_walks(pipe, "noise", [1, 2], [0, 1], 3, **FAST)
    assert [w.title for w in walks] == ["c1: seeds 0 -> 1", "c2: seeds 0 -> 1"]
    paths = save_walks(walks, tmp_path, "noise_walk", duration_ms=50, bounce=True)
    assert [p.name for p in paths] == [
        "noise_walk_grid.png",
        "noise_walk_0.png",
        "noise_walk_0.gif",
        "noise_walk_1.png",
        "noise_walk_1.gif",
    ]
    assert [w.label for w in walks] == ["c1", "c2"] and {w.path for w in walks} == {"seeds 0 -> 1"}
    grid = np.asarray(Image.open(paths[0]))
    frames = np.concatenate([w.images for w in walks])
    layout = grid_layout(frames, 3, row_labels=["c1", "c2"], title="seeds 0 -> 1")
    assert layout.scale == 14 and layout.left > 0 and layout.top > 0  # 112-px frames, labelled rows, path
    assert grid.shape == (layout.top + 2 * (112 + 2) + 2, layout.left + 3 * (112 + 2) + 2)
    assert (grid[: layout.top] < 200).sum() > 20  # the path written above the frames
    x0, y0, x1, y1 = layout.tile_box(5)  # row 1, last frame
    assert np.array_equal(grid[y0:y1, x0:x1], upscale_nearest(walks[1].images[2], 14)[..., 0])
    gif = Image.open(paths[2])
    assert gif.n_frames == 4  # 3 frames forward, 1 back (bounce)
    assert gif.size[0] == 112 and gif.size[1] > 112  # enlarged, with the walk's label above
    assert gif.info["duration"] == 50 and gif.info["loop"] == 0
    with pytest.raises(UserError, match="two classes"):
        make_walks(pipe, "class", [1], [0], 3, **FAST)
    with pytest.raises(UserError, match="mode"):
        make_walks(pipe, "random", [1], [0], 3, **FAST)


def test_cli_walk(tmp_path, capsys):
    extra = {"first_stage": {"kind": "identity", "channels": 1}, "class_names": [f"c{i}" for i in range(10)]}
    save_model(sampling_dit(), tmp_path / "ckpt", extra=extra)
    args = [
        "walk",
        str(tmp_path / "ckpt"),
        "--mode",
        "class",
        "--class",
        "c1",
        "--class",
        "c4",
        "--class",
        "c2",
    ]
    args += [
        "--seed",
        "3",
        "--frames",
        "3",
        "--steps",
        "2",
        "--out",
        str(tmp_path / "w"),
        "--quiet",
        "--device",
        "cpu",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "walk: seed 3: c1 -> c4 -> c2 (5 frames)" in out
    assert Image.open(tmp_path / "w" / "class_walk_0.gif").n_frames == 5
    assert (tmp_path / "w" / "class_walk_grid.png").exists()


def test_walks_of_different_paths_are_labelled_by_their_titles(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (2, 2, 28, 28, 1), dtype=np.uint8)
    walks = [Walk(torch.zeros(2, 1, 28, 28), images[0], [], "Bag", "seeds 0 -> 1")]
    walks.append(Walk(torch.zeros(2, 1, 28, 28), images[1], [], "seed 3", "Bag -> Coat"))
    assert walks[1].title == "seed 3: Bag -> Coat"
    grid = save_walks(walks, tmp_path, "mixed")[0]
    titles = [w.title for w in walks]
    layout = grid_layout(images.reshape(4, 28, 28, 1), 2, row_labels=titles)
    assert layout.top == 0 and Image.open(grid).size == (layout.left + 2 * 114 + 2, 2 * 114 + 2)
    assert layout.left > grid_layout(images.reshape(4, 28, 28, 1), 2, row_labels=["Bag", "seed 3"]).left
