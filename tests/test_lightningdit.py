"""LightningDiT's block options and checkpoints, against tiny models built by LightningDiT's own code.

The files in tests/data/lightningdit/ come from `scripts/lightningdit_fixture.py` run on a checkout of
hustvl/LightningDiT: random tiny models with every weight moved off its initial value, saved in their two
forms (a plain state dict; the training dict with "model" and "ema"), their outputs on fixed inputs, and
the parameter counts of their presets.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ditkit.checkpoints.diffusers_keys import check_exportable
from ditkit.checkpoints.loader import load_checkpoint
from ditkit.checkpoints.native import save_model
from ditkit.errors import UserError
from ditkit.model.cost import dit_cost
from ditkit.model.dit import DiT, DiTConfig
from ditkit.model.flops import count_gflops, count_params
from ditkit.model.presets import LIGHTNING_PRESETS, get_config
from ditkit.samplers.guidance import ClassifierFreeGuidance
from ditkit.transport.sit_sampler import shift_times

DATA = Path(__file__).parent / "data" / "lightningdit"
# Their inference config's guidance (configs/reproductions/*_800ep_cfg.yaml), as the fixture used it.
CFG_SCALE = 6.7
CFG_INTERVAL = (0.125, 1.0)
TINY = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=2, num_classes=10)


@pytest.fixture(scope="module")
def recorded() -> dict[str, torch.Tensor]:
    return torch.load(DATA / "outputs.pt", weights_only=True)


def test_all_options_file_loads_and_equals_their_forward(recorded):
    loaded = load_checkpoint(DATA / "all_options.pt")
    cfg = loaded.config
    assert (cfg.norm, cfg.mlp, cfg.rope, cfg.qk_norm, cfg.adaln_shift) == (
        "rmsnorm",
        "swiglu",
        True,
        True,
        True,
    )
    assert not cfg.learn_sigma and cfg.mlp_ratio == 4.0 and loaded.weights == "weights"
    with torch.no_grad():
        out = loaded.model(recorded["x"], recorded["t"], recorded["y"])
    torch.testing.assert_close(out, recorded["all_options"], atol=1e-5, rtol=0)


def test_wo_shift_layout_is_refused_until_told_then_equals_their_forward(recorded):
    with pytest.raises(UserError, match=r"4 modulation vectors.*adaln_shift': False"):
        load_checkpoint(DATA / "wo_shift.pt")
    loaded = load_checkpoint(DATA / "wo_shift.pt", config={"adaln_shift": False})
    assert loaded.weights == "ema" and set(loaded.available) == {"ema", "model"}
    assert loaded.config.block == "adaln-zero" and loaded.config.qk_norm and loaded.config.norm == "layernorm"
    with torch.no_grad():
        out = loaded.model(recorded["x"], recorded["t"], recorded["y"])
    # learn_sigma: their forward returns the first C channels, ditkit all 2C
    torch.testing.assert_close(out[:, :4], recorded["wo_shift"], atol=1e-5, rtol=0)
    # told the other way, the same tensors build DiT's `adaln` blocks, a different function
    other = load_checkpoint(DATA / "wo_shift.pt", config={"block": "adaln"}).model
    with torch.no_grad():
        assert not torch.allclose(
            other(recorded["x"], recorded["t"], recorded["y"])[:, :4], recorded["wo_shift"]
        )


@pytest.mark.parametrize("name", ["all_options", "wo_shift"])
def test_guidance_first3_with_interval_equals_their_forward_with_cfg(recorded, name):
    model = load_checkpoint(
        DATA / f"{name}.pt", config={"adaln_shift": False} if name == "wo_shift" else None
    ).model
    guided = ClassifierFreeGuidance(model, CFG_SCALE, model.null_class, "first3", CFG_INTERVAL)
    y = recorded["y"].clamp(max=TINY["num_classes"] - 1)
    for i, t in enumerate(recorded["t"].tolist()):
        with torch.no_grad():
            out = guided(recorded["x"], torch.full((3,), t), y)[:, :4]
        torch.testing.assert_close(out, recorded[f"{name}_cfg_{i}"], atol=1e-5, rtol=0)


def test_presets_match_their_parameter_counts():
    theirs = json.loads((DATA / "presets.json").read_text())
    assert set(theirs) == set(LIGHTNING_PRESETS)
    for name, count in theirs.items():
        params, _ = dit_cost(**get_config(name).to_dict())
        assert params == count, name
    cfg = get_config("lightningdit-1p0b-2")
    assert cfg.name == "LightningDiT-1p0B/2" and (cfg.in_channels, cfg.input_size, cfg.learn_sigma) == (
        32,
        16,
        False,
    )


@pytest.mark.parametrize(
    "options",
    [
        dict(norm="rmsnorm", mlp="swiglu", rope=True, qk_norm=True),
        dict(qk_norm=True, adaln_shift=False),
        dict(block="adaln", adaln_shift=False, norm="rmsnorm"),
        dict(block="cross-attention", norm="rmsnorm", qk_norm=True, rope=True, mlp="swiglu"),
    ],
)
def test_closed_form_cost_matches_the_model(options):
    """Parameters exactly; multiply-accumulates as what the options add to DiT's block of the same design."""
    model = DiT(DiTConfig(**TINY, **options))
    base = DiT(DiTConfig(**TINY, block=options.get("block", "adaln-zero")))
    params, macs = dit_cost(**model.config.to_dict())
    _, base_macs = dit_cost(**base.config.to_dict())
    assert params == count_params(model)
    counted = (count_gflops(model) - count_gflops(base)) * 1e9
    assert macs - base_macs == pytest.approx(counted, abs=0.5)


def test_defaults_build_dits_block_and_options_are_checked():
    assert DiTConfig().lightning_options() == {}
    keys = set(DiT(DiTConfig(**TINY)).state_dict())
    assert not any("norm" in k or "w12" in k or "rope" in k for k in keys)
    with pytest.raises(ValueError, match="unknown norm"):
        DiTConfig(norm="batchnorm")
    with pytest.raises(ValueError, match="unknown mlp"):
        DiTConfig(mlp="moe")
    with pytest.raises(ValueError, match="adaln_shift=False needs adaLN"):
        DiTConfig(**TINY, block="in-context", adaln_shift=False)
    with pytest.raises(ValueError, match="divisible by 4"):
        DiTConfig(input_size=8, hidden_size=36, num_heads=6, rope=True)
    with pytest.raises(UserError, match="none of LightningDiT's block options; this model has rope=True"):
        check_exportable(DiTConfig(**TINY, rope=True))


def test_native_round_trip_keeps_the_options(tmp_path):
    torch.manual_seed(0)
    cfg = DiTConfig(**TINY, norm="rmsnorm", mlp="swiglu", rope=True, qk_norm=True, adaln_shift=False)
    model = DiT(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_model(model, tmp_path / "ckpt")
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded.config == cfg
    x, t, y = torch.randn(2, 4, 8, 8), torch.rand(2), torch.tensor([1, 3])
    with torch.no_grad():
        assert torch.equal(loaded.model(x, t, y), model(x, t, y))


def test_recompute_matches_plain_gradients():
    torch.manual_seed(0)
    options = dict(**TINY, norm="rmsnorm", mlp="swiglu", rope=True, qk_norm=True, adaln_shift=False)
    plain, recomputed = DiT(DiTConfig(**options)), DiT(DiTConfig(**options, recompute_blocks=2))
    recomputed.load_state_dict(plain.state_dict())
    x, t, y = torch.randn(2, 4, 8, 8), torch.rand(2), torch.tensor([1, 3])
    grads = []
    for model in (plain, recomputed):
        model.train()
        model(x, t, y, force_drop_ids=torch.zeros(2)).square().sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1])


def test_timestep_shift_is_their_closed_form():
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    for s in (0.3, 1.0, 3.0):
        expected = torch.tensor([s * v / (1 + (s - 1) * v) for v in t.tolist()], dtype=torch.float64)
        torch.testing.assert_close(shift_times(t, s), expected)
    shifted = shift_times(t, 0.3)
    assert shifted[0] == 0 and shifted[-1] == pytest.approx(1.0) and (shifted.diff() > 0).all()
    assert shifted.diff()[0] < shifted.diff()[-1]  # s < 1: small steps near the noise (t = 0)
