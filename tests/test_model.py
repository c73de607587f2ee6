"""The DiT model: shapes, identity at init, conditioning, checkpointing, presets and the Gflops table."""

import json
import math

import pytest
import torch
from helpers import random_tiny_dit, randomise_weights, tiny_dit_config

from ditkit.checkpoints import load_checkpoint, save_model
from ditkit.cli.main import main
from ditkit.errors import UserError
from ditkit.model.blocks import BLOCK_DESIGNS
from ditkit.model.cost import dit_cost, model_table
from ditkit.model.dit import DiT, DiTConfig
from ditkit.model.embeddings import sincos_2d, timestep_features
from ditkit.model.flops import count_gflops, count_params
from ditkit.model.presets import PAPER_PRESETS, create_model, get_config


def tiny(**kw):
    return DiT(tiny_dit_config(**kw))


def inputs(b=3, c=4, h=8, w=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(b, c, h, w, generator=g),
        torch.randint(0, 1000, (b,), generator=g),
        torch.tensor([1, 5, 9]),
    )


@pytest.mark.parametrize("block", BLOCK_DESIGNS)
@pytest.mark.parametrize("learn_sigma", [True, False])
def test_output_shape_every_design(block, learn_sigma):
    model = random_tiny_dit(block=block, learn_sigma=learn_sigma)
    x, t, y = inputs()
    out = model(x, t, y)
    assert out.shape == (3, 8 if learn_sigma else 4, 8, 8)
    assert torch.isfinite(out).all()
    out.sum().backward()


@pytest.mark.parametrize("family", ["S", "B", "L", "XL"])
def test_paper_preset_shapes_on_meta(family):
    for patch in (2, 4, 8):
        with torch.device("meta"):
            model = create_model(f"DiT-{family}/{patch}")
            out = model(torch.zeros(2, 4, 32, 32), torch.zeros(2), torch.zeros(2, dtype=torch.long))
        assert out.shape == (2, 8, 32, 32)


def test_adaln_zero_blocks_start_as_identity_and_output_zero():
    model = tiny().eval()
    x, t, y = inputs()
    tokens = torch.randn(3, 16, 32)
    c = torch.randn(3, 32)
    for block in model.blocks:
        assert torch.equal(block(tokens, c, c[:, None]), tokens)
    assert torch.count_nonzero(model(x, t, y)) == 0


@pytest.mark.parametrize("block", BLOCK_DESIGNS)
def test_t_and_y_reach_the_output_through_each_block_design(block):
    model = random_tiny_dit(block=block)
    # With the final layer's modulation at zero, t and y reach the output only through the blocks.
    torch.nn.init.zeros_(model.final_layer.adaLN_modulation[-1].weight)
    torch.nn.init.zeros_(model.final_layer.adaLN_modulation[-1].bias)
    x, t, y = inputs()
    out = model(x, t, y)
    assert (out - model(x, t + 100, y)).abs().amax(dim=(1, 2, 3)).min() > 1e-4  # every sample moves
    assert (out - model(x, t, (y + 1) % 10)).abs().amax(dim=(1, 2, 3)).min() > 1e-4


def _block_outputs(block, tokens, c, context):
    """A block's output for the given conditioning, for other conditioning and without conditioning."""
    return (
        block(tokens, c, context),
        block(tokens, c.flip(0), context.flip(0)),  # each sample gets another sample's t and y
        tokens,
    )


@pytest.mark.parametrize("block", BLOCK_DESIGNS)
def test_initial_blocks_follow_their_design(block):
    model = tiny(block=block).eval()  # the official initialisation
    g = torch.Generator().manual_seed(3)
    tokens, c = torch.randn(3, 16, 32, generator=g), torch.randn(3, 32, generator=g)
    context = torch.randn(3, 2, 32, generator=g)
    for layer in model.blocks:
        out, other, identity = _block_outputs(layer, tokens, c, context)
        if block == "adaln-zero":  # zero-initialised gates: the identity, whatever the conditioning
            assert torch.equal(out, identity) and torch.equal(other, identity)
            continue
        assert not torch.allclose(out, identity, atol=1e-3)  # no gate: attention and MLP act at once
        if block == "in-context":  # a plain ViT block: conditioning enters as tokens, not here
            assert torch.equal(out, other)
        else:  # adaLN regresses shift and scale from c; cross-attention reads the condition tokens
            assert not torch.allclose(out, other, atol=1e-3)
    if block == "cross-attention":  # it attends to the tokens and ignores c itself
        layer = model.blocks[0]
        assert torch.equal(layer(tokens, c, context), layer(tokens, c.flip(0), context))
    x, t, y = inputs()
    assert torch.count_nonzero(model(x, t, y)) == 0  # the zero-initialised final layer, for every design


def test_labels_change_the_output_and_null_class_is_last_row():
    model = random_tiny_dit()
    x, t, y = inputs()
    assert model.null_class == 10
    assert model.y_embedder.embedding_table.weight.shape == (11, 32)
    out_y = model(x, t, y)
    out_null = model(x, t, torch.full_like(y, 10))
    assert not torch.allclose(out_y, out_null)
    assert torch.equal(model(x, t, None), out_null)
    forced = model(x, t, y, force_drop_ids=torch.ones(3))
    assert torch.equal(forced, out_null)


def test_class_dropout_in_training_mode():
    model = randomise_weights(tiny(class_dropout_prob=1.0))
    x, t, y = inputs()
    model.train()
    out_train = model(x, t, y)
    model.eval()
    assert torch.allclose(out_train, model(x, t, None))


@pytest.mark.parametrize("num_classes", [0, 1])
def test_unconditional_model_ignores_labels(num_classes):
    model = random_tiny_dit(num_classes=num_classes)
    x, t, y = inputs()
    assert model.null_class is None and not hasattr(model, "y_embedder")
    assert torch.equal(model(x, t, y), model(x, t))


def test_non_square_inputs_and_other_channels():
    model = random_tiny_dit(input_size=(8, 12), in_channels=1)
    x = torch.randn(2, 1, 8, 12)
    assert model(x, torch.tensor([3, 7]), torch.tensor([0, 1])).shape == (2, 2, 8, 12)
    with pytest.raises(ValueError, match="expects inputs of size"):
        model(torch.randn(2, 1, 8, 8), torch.tensor([3, 7]))


def test_unpatchify_inverts_patch_layout():
    model = tiny(learn_sigma=False, input_size=(4, 6))
    img = torch.randn(2, 4, 4, 6)
    p = 2
    # Tokens as the final layer lays them out: row-major patches, each (p, p, C) flattened.
    tokens = img.reshape(2, 4, 2, p, 3, p).permute(0, 2, 4, 3, 5, 1).reshape(2, 6, p * p * 4)
    assert torch.equal(model.unpatchify(tokens), img)


def test_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    a = randomise_weights(tiny())
    b = randomise_weights(tiny(recompute_blocks=2))
    x, t, y = inputs()
    for m in (a, b):
        m.train()
        m(x, t, y, force_drop_ids=torch.zeros(3)).square().mean().backward()
    for (n, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        if pa.grad is not None:
            assert torch.allclose(pa.grad, pb.grad, atol=1e-6), n


def test_timestep_features_are_cos_then_sin():
    f = timestep_features(torch.tensor([0.0, 10.0]), 8)
    assert torch.allclose(f[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    freqs = torch.exp(-torch.log(torch.tensor(10000.0)) * torch.arange(4) / 4)
    assert torch.allclose(f[1], torch.cat([torch.cos(10 * freqs), torch.sin(10 * freqs)]))


def test_sincos_2d_layout():
    emb = sincos_2d(8, 2, 3)  # 2 rows, 3 columns
    assert emb.shape == (6, 8)
    # First half encodes the column: patches in the same column share it.
    assert (emb[1, :4] == emb[4, :4]).all() and (emb[0, 4:] == emb[2, 4:]).all()
    assert not (emb[0, :4] == emb[1, :4]).all()


# Table 4 of the paper: Gflops at 256x256.
PAPER_GFLOPS = {
    "DiT-S/8": 0.36, "DiT-S/4": 1.41, "DiT-S/2": 6.06,
    "DiT-B/8": 1.42, "DiT-B/4": 5.56, "DiT-B/2": 23.01,
    "DiT-L/8": 5.01, "DiT-L/4": 19.70, "DiT-L/2": 80.71,
    "DiT-XL/8": 7.39, "DiT-XL/4": 29.05, "DiT-XL/2": 118.64,
}  # fmt: skip
PAPER_PARAMS_M = {"S": 33, "B": 130, "L": 458, "XL": 675}


def test_gflops_and_params_match_the_paper():
    rows = {r["name"]: r for r in model_table()}
    assert set(rows) == set(PAPER_PRESETS)
    for name, gflops in PAPER_GFLOPS.items():
        assert rows[name]["gflops"] == pytest.approx(gflops, rel=0.01), name
        size = name[4:].split("/")[0]
        assert rows[name]["params"] / 1e6 == pytest.approx(PAPER_PARAMS_M[size], rel=0.01), name


def test_gflops_of_block_designs_and_512():
    # Paper, Fig. 5 legend (XL/2 at 256) and Table 4 (XL/2 at 512).
    expected = {"adaln-zero": 118.64, "adaln": 118.56, "cross-attention": 137.62, "in-context": 119.37}
    for block, gflops in expected.items():
        with torch.device("meta"):
            model = create_model("DiT-XL/2", block=block)
        assert count_gflops(model) == pytest.approx(gflops, rel=0.01), block
    with torch.device("meta"):
        model = create_model("DiT-XL/2", input_size=64)
    assert count_gflops(model) == pytest.approx(524.6, rel=0.01)
    assert count_params(model) > 675e6


@pytest.mark.parametrize("block", ["adaln-zero", "adaln", "cross-attention", "in-context"])
@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"num_classes": 0, "learn_sigma": False},
        {"num_classes": 10, "null_class_row": False, "class_dropout_prob": 0.0},
        {"input_size": (8, 16), "patch_size": 4, "in_channels": 1, "num_classes": 10, "mlp_ratio": 2.5},
    ],
)
def test_closed_form_cost_matches_the_flop_counter(block, overrides):
    """`ditkit models` counts in closed form; torch's FLOP counter on a real (meta) model must agree."""
    with torch.device("meta"):
        model = create_model("DiT-S/2", block=block, **overrides)
    params, macs = dit_cost(**model.config.to_dict())
    assert params == count_params(model)
    assert macs / 1e9 == pytest.approx(count_gflops(model), rel=1e-12, abs=0)


def test_model_table_marks_presets_that_do_not_fit():
    rows = {
        r["name"]: r for r in model_table(input_size=28, in_channels=1, num_classes=10, include_small=True)
    }
    assert rows["DiT-S/8"]["params"] is None and rows["DiT-S/8"]["gflops"] is None
    assert rows["DiT-S/4"]["tokens"] == 49 and rows["DiT-S/4"]["params"] > 0


def test_preset_names_and_overrides():
    cfg = get_config("xl/2", input_size=64, num_classes=10)
    assert (cfg.depth, cfg.hidden_size, cfg.num_heads, cfg.patch_size) == (28, 1152, 16, 2)
    assert cfg.input_size == 64 and cfg.num_classes == 10 and cfg.name == "DiT-XL/2"
    assert get_config("DiT-B-4").patch_size == 4
    with pytest.raises(UserError, match="ditkit models"):
        get_config("DiT-XXL/2")
    with pytest.raises(UserError, match=r"did you mean DiT-T/2\? `ditkit models --all`"):
        get_config("DiT-T2")


def test_config_round_trip_and_validation():
    cfg = DiTConfig(input_size=(8, 12), patch_size=4, hidden_size=32, depth=2, num_heads=2, block="adaln")
    again = DiTConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    with pytest.raises(ValueError, match="multiple of the patch size"):
        DiTConfig(input_size=10, patch_size=4)
    with pytest.raises(ValueError, match="block design"):
        DiTConfig(block="film")
    with pytest.raises(ValueError, match="unknown activation 'relu'"):
        DiTConfig(activation="relu")
    with pytest.raises(ValueError, match="unknown DiT config keys"):
        DiTConfig.from_dict({"hidden": 3})


def test_exact_gelu_is_the_erf_gelu_and_survives_a_round_trip(tmp_path):
    """activation="gelu" puts the exact GELU in every block's MLP; the default stays DiT's tanh form."""
    exact, tanh = random_tiny_dit(activation="gelu"), random_tiny_dit()
    z = torch.linspace(-4, 4, 101, dtype=torch.float64)
    erf_gelu = 0.5 * z * (1 + torch.erf(z / math.sqrt(2)))
    tanh_gelu = 0.5 * z * (1 + torch.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z**3)))
    for block in exact.blocks:
        torch.testing.assert_close(block.mlp.act(z), erf_gelu)
    torch.testing.assert_close(tanh.blocks[0].mlp.act(z), tanh_gelu)
    assert (erf_gelu - tanh_gelu).abs().max() > 1e-4  # the two forms are told apart
    x, t, y = torch.randn(2, 4, 8, 8), torch.tensor([10.0, 500.0]), torch.tensor([1, 2])
    with torch.no_grad():
        assert (exact(x, t, y) - tanh(x, t, y)).abs().max() > 1e-5  # same weights, other function
    path = save_model(exact, tmp_path / "ckpt")
    loaded = load_checkpoint(path)
    assert loaded.config.activation == "gelu"
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x, t, y), exact(x, t, y), rtol=0, atol=0)


def test_models_cli_json(capsys):
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list(PAPER_PRESETS)
    assert {"name", "params", "gflops"} <= set(rows[0])
    assert main(["models", "--image-size", "512"]) == 0
    assert "524.5" in capsys.readouterr().out


def test_models_cli_bad_image_size(capsys):
    assert main(["models", "--image-size", "250"]) == 2
    assert "multiple" in capsys.readouterr().err
