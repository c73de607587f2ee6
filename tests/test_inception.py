"""The FID Inception: the weight file's key layout, loading, preprocessing, outputs, errors.

No weights are downloaded: the tests write state dicts with the key names and shapes of
pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`, spelled out below independently of the model
code (torchvision's Inception3 layout with 1008 classes and no auxiliary head).
"""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import torch
from helpers import assert_junk_and_missing_files_rejected

from ditkit.errors import UserError
from ditkit.evaluation import inception_weights
from ditkit.evaluation.inception import FIDInceptionV3, InceptionA, InceptionE, resize_like_tf1
from ditkit.evaluation.inception_weights import load_inception


def _a(cin, pool):
    return [("branch1x1", cin, 64, 1, 1), ("branch5x5_1", cin, 48, 1, 1), ("branch5x5_2", 48, 64, 5, 5),
            ("branch3x3dbl_1", cin, 64, 1, 1), ("branch3x3dbl_2", 64, 96, 3, 3), ("branch3x3dbl_3", 96, 96, 3, 3),
            ("branch_pool", cin, pool, 1, 1)]  # fmt: skip


def _b(cin):
    return [("branch3x3", cin, 384, 3, 3), ("branch3x3dbl_1", cin, 64, 1, 1), ("branch3x3dbl_2", 64, 96, 3, 3),
            ("branch3x3dbl_3", 96, 96, 3, 3)]  # fmt: skip


def _c(cin, c7):
    return [("branch1x1", cin, 192, 1, 1), ("branch7x7_1", cin, c7, 1, 1), ("branch7x7_2", c7, c7, 1, 7),
            ("branch7x7_3", c7, 192, 7, 1), ("branch7x7dbl_1", cin, c7, 1, 1), ("branch7x7dbl_2", c7, c7, 7, 1),
            ("branch7x7dbl_3", c7, c7, 1, 7), ("branch7x7dbl_4", c7, c7, 7, 1), ("branch7x7dbl_5", c7, 192, 1, 7),
            ("branch_pool", cin, 192, 1, 1)]  # fmt: skip


def _d(cin):
    return [("branch3x3_1", cin, 192, 1, 1), ("branch3x3_2", 192, 320, 3, 3), ("branch7x7x3_1", cin, 192, 1, 1),
            ("branch7x7x3_2", 192, 192, 1, 7), ("branch7x7x3_3", 192, 192, 7, 1), ("branch7x7x3_4", 192, 192, 3, 3)]  # fmt: skip


def _e(cin):
    return [("branch1x1", cin, 320, 1, 1), ("branch3x3_1", cin, 384, 1, 1), ("branch3x3_2a", 384, 384, 1, 3),
            ("branch3x3_2b", 384, 384, 3, 1), ("branch3x3dbl_1", cin, 448, 1, 1), ("branch3x3dbl_2", 448, 384, 3, 3),
            ("branch3x3dbl_3a", 384, 384, 1, 3), ("branch3x3dbl_3b", 384, 384, 3, 1), ("branch_pool", cin, 192, 1, 1)]  # fmt: skip


STEM = [("Conv2d_1a_3x3", 3, 32, 3, 3), ("Conv2d_2a_3x3", 32, 32, 3, 3), ("Conv2d_2b_3x3", 32, 64, 3, 3),
        ("Conv2d_3b_1x1", 64, 80, 1, 1), ("Conv2d_4a_3x3", 80, 192, 3, 3)]  # fmt: skip
BLOCKS = {"Mixed_5b": _a(192, 32), "Mixed_5c": _a(256, 64), "Mixed_5d": _a(288, 64), "Mixed_6a": _b(288),
          "Mixed_6b": _c(768, 128), "Mixed_6c": _c(768, 160), "Mixed_6d": _c(768, 160), "Mixed_6e": _c(768, 192),
          "Mixed_7a": _d(768), "Mixed_7b": _e(1280), "Mixed_7c": _e(2048)}  # fmt: skip


def real_layout(with_counters: bool = True) -> dict[str, tuple[int, ...]]:
    """Key -> shape of pt_inception-2015-12-05-6726825d.pth."""
    convs = list(STEM) + [
        (f"{blk}.{name}", *rest) for blk, layers in BLOCKS.items() for name, *rest in layers
    ]
    layout: dict[str, tuple[int, ...]] = {}
    for name, cin, cout, kh, kw in convs:
        layout[f"{name}.conv.weight"] = (cout, cin, kh, kw)
        for stat in ("weight", "bias", "running_mean", "running_var"):
            layout[f"{name}.bn.{stat}"] = (cout,)
        if with_counters:
            layout[f"{name}.bn.num_batches_tracked"] = ()
    layout["fc.weight"], layout["fc.bias"] = (1008, 2048), (1008,)
    return layout


def random_state(layout: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights with that layout, scaled so activations stay O(1) through 94 conv layers."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in layout.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(0)
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(shape, generator=g)
        elif key.endswith("bn.weight"):
            state[key] = 1 + 0.1 * torch.randn(shape, generator=g)
        elif key.endswith("conv.weight") or key == "fc.weight":
            state[key] = torch.randn(shape, generator=g) * (2.0 / np.prod(shape[1:])) ** 0.5
        else:
            state[key] = 0.1 * torch.randn(shape, generator=g)
    return state


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("inception") / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(random_state(real_layout()), path)
    return path


@pytest.fixture(scope="module")
def model(weights_file):
    return load_inception(weights_file)


def test_layout_matches_the_real_weight_file():
    layout = real_layout()
    got = {k: tuple(v.shape) for k, v in FIDInceptionV3().state_dict().items()}
    assert got == layout
    assert len([k for k in layout if k.endswith("conv.weight")]) == 94
    # torchvision's inception_v3 has 27,161,264 parameters; less the auxiliary head (3,326,696),
    # plus 8 more classes (8 * 2049) gives the FID network's 23,850,960.
    n_params = sum(
        int(np.prod(s)) for k, s in layout.items() if "running" not in k and "num_batches" not in k
    )
    assert n_params == 23_850_960 == sum(p.numel() for p in FIDInceptionV3().parameters())


def test_loads_pth_with_and_without_batch_counters(tmp_path, weights_file):
    state = random_state(real_layout(with_counters=False), seed=1)
    path = tmp_path / "no_counters.pth"
    torch.save(state, path)
    model = load_inception(path)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    for key in ("Mixed_6d.branch7x7_2.conv.weight", "fc.weight", "Mixed_7c.branch_pool.bn.running_var"):
        assert torch.equal(model.state_dict()[key], state[key])
    assert torch.equal(
        load_inception(weights_file).state_dict()["fc.bias"],
        torch.load(weights_file, weights_only=True)["fc.bias"],
    )


def test_loads_safetensors(tmp_path):
    from safetensors.torch import save_file

    state = random_state(real_layout(with_counters=False), seed=2)
    save_file(state, str(tmp_path / "w.safetensors"))
    model = load_inception(tmp_path / "w.safetensors")
    assert torch.equal(model.Conv2d_1a_3x3.conv.weight, state["Conv2d_1a_3x3.conv.weight"])


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda s: s.pop("Mixed_6b.branch7x7_3.conv.weight"),
            "missing keys (first Mixed_6b.branch7x7_3.conv.weight)",
        ),
        (
            lambda s: s.__setitem__("AuxLogits.fc.weight", torch.zeros(1000, 768)),
            "unexpected keys (first AuxLogits",
        ),
        (lambda s: s.__setitem__("fc.weight", torch.zeros(1000, 2048)), "fc.weight has shape (1000, 2048)"),
    ],
)
def test_wrong_layout_is_a_clear_error(tmp_path, edit, message):
    state = random_state(real_layout())
    edit(state)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(UserError, match="not the FID Inception") as err:
        load_inception(tmp_path / "bad.pth")
    assert message in str(err.value)


def test_unreadable_or_missing_file_is_a_clear_error(tmp_path):
    assert_junk_and_missing_files_rejected(
        load_inception, tmp_path, ".pth", "cannot read Inception weights", "no Inception weights file"
    )


def test_offline_without_path_asks_for_inception_flag(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(UserError, match="pass --inception PATH"):
        load_inception(None)
    with pytest.raises(UserError, match="pass --inception PATH"):
        load_inception(None, download=False)


def test_cached_file_is_hash_checked(tmp_path, monkeypatch, weights_file):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    cached = inception_weights.cached_weights_path()
    cached.parent.mkdir(parents=True)
    cached.write_bytes(weights_file.read_bytes())  # right layout, but not the published bytes
    with pytest.raises(UserError, match="corrupt"):
        load_inception(None)
    monkeypatch.setattr(
        inception_weights, "FID_WEIGHTS_SHA256_PREFIX", inception_weights.sha256_of(cached)[:8]
    )
    assert isinstance(load_inception(None), FIDInceptionV3)


def test_resize_matches_tf1_half_pixel_free_bilinear():
    x = torch.tensor([[0.0, 10.0], [20.0, 30.0]])[None, None]  # (1, 1, 2, 2)
    y = resize_like_tf1(x, size=4)[0, 0]
    # TF1 samples input position i * 2/4 = 0, 0.5, 1, 1.5 (the last clamped to index 1) on each axis.
    row = torch.tensor([0.0, 5.0, 10.0, 10.0])
    expected = torch.stack([row, row + 10, row + 20, row + 20])
    assert torch.allclose(y, expected)
    z = torch.rand(1, 3, 299, 299)
    assert torch.equal(resize_like_tf1(z), z)


def _identity_pool_branch(block):
    """Make the block's pool branch pass its input channels through unchanged (as its first outputs)."""
    conv = block.branch_pool.conv
    cout, cin = conv.weight.shape[:2]
    n = min(cout, cin)
    with torch.no_grad():
        w = torch.zeros(cout, cin, 1, 1)
        w[torch.arange(n), torch.arange(n)] = 1
        block.branch_pool.conv.weight.copy_(w)
        bn = block.branch_pool.bn
        bn.weight.fill_(1), bn.bias.zero_(), bn.running_mean.zero_(), bn.running_var.fill_(1 - bn.eps)
    return block.eval()


def test_average_pools_ignore_padding_and_last_block_max_pools():
    a = _identity_pool_branch(InceptionA(8, pool_features=4))
    out = a(torch.full((1, 8, 5, 5), 2.0))[:, -4:]  # the pool branch is last
    assert torch.allclose(out, torch.full_like(out, 2.0))  # TF's SAME average pool: no zeros averaged in
    e = _identity_pool_branch(InceptionE(8, pool="max"))
    x = torch.zeros(1, 8, 5, 5)
    x[:, :, 2, 2] = 9.0
    out = e(x)[:, -192:][:, :8]  # the pool branch is the last 192 channels
    assert torch.allclose(out[0, :, 1:4, 1:4], torch.full((8, 3, 3), 9.0))  # an average would give 1
    assert (out[0, :, 0, :] == 0).all()


@pytest.mark.slow
def test_outputs_shapes_and_input_formats(model):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2, 32, 32, 3), generator=g, dtype=torch.uint8)
    with torch.inference_mode():
        out = model(images)
        out_float = model(images.permute(0, 3, 1, 2).float() / 255)
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "pool": (2, 2048),
        "spatial": (2, 2023),
        "logits": (2, 1008),
    }
    for key in out:
        assert torch.isfinite(out[key]).all()
        assert torch.allclose(out[key], out_float[key], rtol=1e-4, atol=1e-4)
    assert torch.allclose(out["logits"], out["pool"] @ model.fc.weight.T, atol=1e-5)  # no bias (IS logits)
    assert not torch.allclose(out["pool"][0], out["pool"][1])


@pytest.mark.slow
def test_spatial_is_mixed_6d_first_7_channels_in_nhwc_order(model):
    seen = {}
    hook = model.Mixed_6d.branch1x1.register_forward_hook(lambda m, i, o: seen.setdefault("x", o))
    with torch.inference_mode():
        out = model(torch.rand(1, 3, 20, 20, generator=torch.Generator().manual_seed(1)))
    hook.remove()
    branch = seen["x"]  # (1, 192, 17, 17), the graph's mixed_6/conv
    assert branch.shape == (1, 192, 17, 17)
    expected = branch[0, :7].permute(1, 2, 0).reshape(-1)  # TF's NHWC flatten: channel fastest
    assert torch.equal(out["spatial"][0], expected)


def test_bad_image_input_is_a_clear_error(model):
    with pytest.raises(UserError, match=r"uint8 images must be \(N, H, W, 3\)"):
        model(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(UserError, match="float images"):
        model(torch.zeros(1, 8, 8, 3))
