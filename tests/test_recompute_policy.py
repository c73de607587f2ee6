"""Checkpoint policies (full / selective) and the count of activations saved for backward."""

import copy
import dataclasses
import json
import warnings

import pytest
import torch
from helpers import randomise_weights
from torch import nn

from ditkit.bench.activations import activation_memory, measure_row, saved_activation_bytes
from ditkit.bench.train import TrainBenchConfig, bench_train
from ditkit.cli.main import main
from ditkit.errors import UserError
from ditkit.model.attention_kernel import sdpa_backend
from ditkit.model.compilation import compile_blocks
from ditkit.model.dit import DiT, DiTConfig
from ditkit.model.recompute import recompute_block, selective_policy

# DiT-T/2-like: 8x8 latents in 2x2 patches -> N = 16 tokens of width D = 32, 2 heads, 2 blocks.
N, D, HEADS, DEPTH = 16, 32, 2, 2
FP32 = 4


def tiny(policy=None, **kw):
    """A randomised tiny DiT; policy None means no checkpointing, else every block with `policy`."""
    recompute = dict(recompute_blocks=DEPTH, recompute_policy=policy) if policy else {}
    config = DiTConfig(
        input_size=8, patch_size=2, hidden_size=D, depth=DEPTH, num_heads=HEADS, num_classes=10,
        **recompute, **kw,
    )  # fmt: skip
    torch.manual_seed(0)
    model = DiT(config)
    return randomise_weights(model).train()


def loss_and_grads(model, batch=3):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 4, 8, 8, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)
    loss = model(x, t, y, force_drop_ids=torch.zeros(batch)).square().mean()
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


def assert_same(a, b, atol=1e-6, rtol=1e-5):
    (loss_a, grads_a), (loss_b, grads_b) = a, b
    assert torch.allclose(loss_a, loss_b, rtol=0, atol=atol)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        assert torch.allclose(grads_a[name], grads_b[name], rtol=rtol, atol=atol), name


@pytest.mark.parametrize("attention", ["auto", "math"])
@pytest.mark.parametrize("policy", ["full", "selective"])
def test_policies_give_the_loss_and_gradients_of_no_checkpointing(policy, attention):
    with sdpa_backend(attention):  # the fused CPU kernel, or the math path (bmm + softmax)
        reference = loss_and_grads(tiny())
        checkpointed = loss_and_grads(tiny(policy))
    assert_same(checkpointed, reference)


def test_saved_bytes_match_a_hand_count_of_one_block():
    # fp32, per block and batch B, elements kept for backward. Without checkpointing: the block's
    # output, two LayerNorm outputs, two modulate outputs, qkv (3), attention and proj outputs, the
    # residual after attention, fc1 (4) and GELU (4) outputs and the MLP output: 20 x (B, N, D); the
    # LayerNorm mean and rstd (4 x (B, N)); the attention log-sum-exp (heads x (B, N)); SiLU(c), the
    # six adaLN vectors and the two (1 + scale): 9 x (B, D). Full: the block's output only (the next
    # block's input). Selective: the output, qkv, attention (+ log-sum-exp), proj, fc1, fc2 and adaLN.
    b = 3
    hand = {
        None: 20 * b * N * D + 4 * b * N + HEADS * b * N + 9 * b * D,
        "full": b * N * D,
        "selective": 11 * b * N * D + HEADS * b * N + 6 * b * D,
    }
    for policy, elements in hand.items():
        saved = saved_activation_bytes(tiny(policy), b, "fp32")
        assert saved.per_block == [FP32 * elements] * DEPTH, policy
        assert saved.total == saved.other + sum(saved.per_block)


def test_no_checkpointing_count_equals_what_autograd_saves():
    # Independent count: the unique storages autograd's pack hook receives, less the parameters. The
    # hook also sees the input latents x (B, 4, 8, 8) that the patch embedding keeps in fp32, which
    # the count leaves out (they exist before the forward); in bf16 it keeps a bf16 copy made in it.
    model = tiny()
    before = {p.untyped_storage()._cdata for p in model.parameters()}
    seen = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage._cdata not in before:
            seen[storage._cdata] = storage.nbytes()
        return t

    for precision, input_bytes in (("fp32", 2 * 4 * 8 * 8 * FP32), ("bf16", 0)):
        seen.clear()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            counted = saved_activation_bytes(model, 2, precision)
        assert counted.total + input_bytes == sum(seen.values()), precision


def test_selective_saves_less_than_none_and_more_than_full():
    totals = {
        (p, prec): saved_activation_bytes(tiny(p), 2, prec).total
        for p in (None, "full", "selective")
        for prec in ("fp32", "bf16")
    }
    for prec in ("fp32", "bf16"):
        assert totals[(None, prec)] > totals[("selective", prec)] > totals[("full", prec)]


def test_fixed_bytes_are_the_bf16_weight_copies():
    model = tiny()
    fp32 = measure_row(model, "fp32", (1, 3), project=256)
    assert fp32.fixed == 0 and fp32.projected == 256 * fp32.per_image
    # Autocast keeps a bfloat16 copy of every matmul / convolution weight for backward, except the
    # first timestep-MLP layer's: its input (sinusoidal features) needs no gradient.
    layers = [m for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    copies = sum(2 * m.weight.numel() for m in layers if m is not model.t_embedder.mlp[0])
    bf16 = measure_row(model, "bf16", (1, 3), project=256)
    assert bf16.fixed == copies and bf16.policy == "none"


def test_unknown_policy_is_an_error():
    with pytest.raises(ValueError, match="unknown recompute policy 'some'"):
        DiTConfig(recompute_policy="some")
    with pytest.raises(ValueError, match="recompute policy"):
        recompute_block(nn.Identity(), torch.zeros(1), policy="every-other")
    with pytest.raises(UserError, match="recompute policy"):
        bench_train(TrainBenchConfig(model="DiT-T/2", input_size=8, device="cpu", recompute_policy="x"))
    with pytest.raises(UserError, match="policy"):
        activation_memory(model="DiT-T/2", input_size=8, policies=["none", "half"])


def test_config_dicts_without_the_policy_still_load():
    config = DiTConfig(depth=2, hidden_size=32, num_heads=2, recompute_blocks=1, recompute_policy="selective")
    assert DiTConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    old = config.to_dict()
    del old["recompute_policy"]  # a config.json written before the field existed
    assert DiTConfig.from_dict(old).recompute_policy == "full"


def test_policy_warns_when_a_compiled_matmul_cannot_be_kept():
    aten = torch.ops.aten
    assert selective_policy(None, aten.addmm.default).name == "MUST_SAVE"
    assert selective_policy(None, aten.gelu.default).name == "PREFER_RECOMPUTE"
    with pytest.warns(UserWarning, match="cannot keep the output of aten.addmm.out"):
        assert selective_policy(None, aten.addmm.out).name == "PREFER_RECOMPUTE"


@pytest.mark.slow
def test_blocks_compiled_in_place_keep_the_gradients_under_both_policies():
    reference = loss_and_grads(tiny())
    for policy in ("full", "selective"):
        torch._dynamo.reset()
        compiled = compile_blocks(tiny(policy), backend="aot_eager")
        assert_same(loss_and_grads(compiled), reference)


@pytest.mark.slow
@pytest.mark.parametrize("policy", [None, "selective"])
def test_inductor_compiled_blocks_give_eager_gradients(policy):
    """Blocks compiled by inductor match eager (this caught wrong gradients for the strided token
    tensor the patch embedding makes). Under selective checkpointing the policy lives inside the
    compiled graph, so it sees ATen ops, never generated code's `aten.addmm.out` (it could not keep)."""
    reference = loss_and_grads(tiny())
    torch._dynamo.reset()
    compiled = compile_blocks(tiny(policy))
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="selective checkpointing cannot keep")
        assert_same(loss_and_grads(compiled), reference, atol=1e-5, rtol=1e-4)


def test_counting_refuses_a_compiled_model():
    model = compile_blocks(copy.deepcopy(tiny()), backend="aot_eager")  # compiles lazily: nothing runs
    with pytest.raises(UserError, match="eager model"):
        saved_activation_bytes(model, 1)


def test_bench_train_reports_the_policy():
    cfg = TrainBenchConfig(
        model="DiT-T/2", input_size=8, num_classes=10, device="cpu", batch=2, precision="fp32",
        recompute_blocks=-1, recompute_policy="selective", steps=1, warmup=0, measure_peak=False,
    )  # fmt: skip
    r = bench_train(cfg)
    assert r["recompute_policy"] == "selective" and r["recompute_blocks"] == DEPTH


def test_bench_memory_cli(capsys, tmp_path):
    argv = ["bench", "memory", "--model", "DiT-T/2", "--input-size", "8", "--num-classes", "10"]
    out = tmp_path / "memory.json"
    assert main([*argv, "--precision", "fp32", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "activations only" in text and "GiB at batch 256" in text
    rows = {r["policy"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows.keys() == {"none", "full", "selective"}
    assert rows["none"]["per_image"] > rows["selective"]["per_image"] > rows["full"]["per_image"]
    # DiT-T/2's blocks in fp32, per image: the hand counts above with B = 1.
    assert rows["full"]["per_block_image"] == FP32 * N * D
    assert main([*argv, "--batches", "2"]) == 2  # two batch sizes are needed
    assert "two batch sizes" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--recompute-policy", "--checkpoint-policy"])  # the new name and the old
def test_bench_train_cli_rejects_an_unknown_policy(capsys, flag):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "train", flag, "half"])
    assert exit_info.value.code == 2
    assert flag in capsys.readouterr().err


def test_config_replace_keeps_validation():
    with pytest.raises(ValueError, match="recompute policy"):
        dataclasses.replace(DiTConfig(), recompute_policy="partial")
