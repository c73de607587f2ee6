"""End to end: reference building, `evaluate_npz` and the two CLI commands, on a random-weight Inception.

The weights are random (same key layout as the real file), so the numbers mean nothing; what is
checked is the plumbing: identical sets score FID 0 and precision/recall 1, precomputed and
recomputed reference statistics agree, files and JSON are written, errors exit with status 2.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import fashion_mnist_missing
from test_inception import random_state, real_layout

from ditkit.cli.main import main
from ditkit.data.fashion_mnist import load_fashion_mnist
from ditkit.errors import UserError
from ditkit.evaluation.adm_metrics import compute_activations, evaluate_npz
from ditkit.evaluation.frechet import gaussian_stats
from ditkit.evaluation.inception_weights import load_inception
from ditkit.evaluation.npz_io import NpzImages, read_reference_stats
from ditkit.evaluation.reference import ArrayImages, FashionMNISTImages, build_reference


def blobs(n: int, seed: int, size: int = 16) -> np.ndarray:
    """Smooth random greyscale-ish images, uint8 (n, size, size, 3)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g)
    x = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    return (x.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()


class StubInception(torch.nn.Module):
    """Cheap stand-in with Inception's output widths: features are fixed projections of the pixels."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.proj = torch.nn.Parameter(torch.randn(3, 2048 + 2023, generator=g), requires_grad=False)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = images.float().mean(dim=(1, 2)) / 255  # (B, 3) mean colour
        feats = torch.sin(x @ self.proj)  # (B, 4071)
        return {"pool": feats[:, :2048], "spatial": feats[:, 2048:], "logits": feats[:, :1008]}


def test_reference_batch_holds_a_seeded_subset_and_statistics_of_all_images(tmp_path):
    model, real = StubInception(), blobs(10, seed=0)
    info = build_reference(ArrayImages(real), tmp_path / "a.npz", model, num_images=4, seed=7, batch_size=3)
    assert info == {"num_images": 10, "num_stored": 4}
    build_reference(ArrayImages(real), tmp_path / "b.npz", model, num_images=4, seed=7, batch_size=4)
    stored = np.concatenate(list(NpzImages(tmp_path / "a.npz").batches(10)))
    assert np.array_equal(stored, np.concatenate(list(NpzImages(tmp_path / "b.npz").batches(10))))
    index = [next(i for i, r in enumerate(real) if np.array_equal(s, r)) for s in stored]
    assert index == sorted(index) and len(set(index)) == 4  # distinct, in source order
    with torch.inference_mode():
        out = model(torch.from_numpy(real))
    stats = read_reference_stats(tmp_path / "a.npz")
    for key, feats in (("mu", out["pool"]), ("mu_s", out["spatial"])):
        mu, sigma = gaussian_stats(feats.double().numpy())
        assert np.allclose(stats[key], mu, atol=1e-6) and np.allclose(
            stats["sigma" + key[2:]], sigma, atol=1e-6
        )


def test_reference_sources_give_rgb_batches():
    grey = blobs(5, seed=2)[..., 0]  # (5, 16, 16)
    batch = ArrayImages(grey).read([3, 1])
    assert batch.shape == (2, 16, 16, 3) and all(
        np.array_equal(batch[:, ..., c], grey[[3, 1]]) for c in range(3)
    )
    with pytest.raises(UserError, match="uint8"):
        ArrayImages(grey.astype(np.float32))
    try:
        fmnist = FashionMNISTImages(None, "test", image_size=32)
    except UserError as err:
        fashion_mnist_missing(str(err))
    test, _ = load_fashion_mnist(split="test")
    padded = fmnist.read([0, 1])  # black 2-pixel border, as the 32x32 training data
    assert padded.shape == (2, 32, 32, 3) and (padded[:, :2] == 0).all() and (padded[:, :, -2:] == 0).all()
    assert np.array_equal(padded[:, 2:30, 2:30, 0], test[:2]) and len(fmnist) == 10_000


def test_activations_keep_only_what_is_asked(tmp_path):
    np.savez(tmp_path / "s.npz", arr_0=blobs(7, seed=4))
    images = NpzImages(tmp_path / "s.npz")
    acts = compute_activations(
        StubInception(), images.batches(3), 7, keep_pool=5, keep_logits=True, progress=False
    )
    assert acts.pool.shape == (5, 2048) and acts.logits is not None and acts.logits.shape == (7, 1008)
    assert acts.pool_stats.count == acts.spatial_stats.count == 7
    assert (
        compute_activations(StubInception(), images.batches(3), 7, keep_pool=0, progress=False).logits is None
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    torch.save(random_state(real_layout(), seed=3), root / "inception.pth")
    model = load_inception(root / "inception.pth")
    real, fake = blobs(6, seed=0), blobs(6, seed=1)
    np.savez(root / "real.npz", arr_0=real)
    np.savez(root / "fake.npz", arr_0=fake, labels=np.arange(6) % 10)
    return root, model, real


@pytest.mark.slow
def test_end_to_end_identical_and_different_sets(setup, capsys):
    root, model, real = setup
    build_reference(ArrayImages(real), root / "ref.npz", model, batch_size=4, progress=False)
    # The CLI, against precomputed reference statistics, on the reference's own images.
    out = root / "metrics.json"
    args = [
        "evaluate",
        str(root / "real.npz"),
        str(root / "ref.npz"),
        "--inception",
        str(root / "inception.pth"),
    ]
    opts = [
        "--device",
        "cpu",
        "--batch-size",
        "3",
        "--frechet-method",
        "eigh",
        "--no-progress",
        "--out",
        str(out),
    ]
    assert main([*args, *opts]) == 0
    same = json.loads(out.read_text())
    printed = capsys.readouterr().out
    assert f"FID: {same['fid']:.4f}" in printed and "Precision:" in printed and str(out) in printed
    assert same["precision"] == 1.0 and same["recall"] == 1.0 and same["inception_score"] >= 1.0
    assert same["num_samples"] == same["num_reference"] == 6
    # The library, against a reference without statistics (computed from its arr_0), on other images.
    other = evaluate_npz(root / "fake.npz", root / "real.npz", model, 5, "cpu", False, frechet_method="eigh")
    assert 0 <= other["precision"] <= 1 and 0 <= other["recall"] <= 1
    # Identical sets: zero up to the rounding of square roots of a rank-5 covariance's zero eigenvalues.
    assert abs(same["fid"]) < 1e-3 * other["fid"] and abs(same["sfid"]) < 1e-3 * other["sfid"]


@pytest.mark.slow
def test_cli_reference_from_an_image_folder(setup):
    from PIL import Image

    root, _, real = setup
    folder = root / "images"
    folder.mkdir()
    for i, img in enumerate(real[:4]):
        Image.fromarray(img).save(folder / f"{i}.png")
    ref = root / "folder_ref.npz"
    args = [
        "reference",
        "--images",
        str(folder),
        "--out",
        str(ref),
        "--inception",
        str(root / "inception.pth"),
    ]
    assert main([*args, "--no-progress", "--device", "cpu"]) == 0
    stored = np.concatenate(list(NpzImages(ref).batches(10)))
    assert np.array_equal(stored, real[:4]) and read_reference_stats(ref) is not None


def test_cli_errors_exit_2(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "s.npz")]) == 2
    assert "REFERENCE.npz" in capsys.readouterr().err
    (tmp_path / "s.npz").write_bytes(b"garbage")
    np.savez(tmp_path / "r.npz", arr_0=blobs(4, 0))
    assert main(["evaluate", str(tmp_path / "s.npz"), str(tmp_path / "r.npz"), "--inception", "x.pth"]) == 2
    assert "not a readable .npz" in capsys.readouterr().err
    assert not (tmp_path / "s.metrics.json").exists()
    with pytest.raises(SystemExit):  # argparse: one source is required
        main(["reference", "--out", str(tmp_path / "ref.npz")])
