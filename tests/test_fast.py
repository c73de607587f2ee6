"""The fast path's pieces: precision contexts, compiled blocks, attention backends, the fast denoiser."""

import copy

import pytest
import torch

from ditkit.bench.correctness import BF16_FORWARD_TOL, perturb_zero_init_, relative_error
from ditkit.errors import UserError
from ditkit.model.attention_kernel import sdpa_backend, sdpa_kernels_used
from ditkit.model.compilation import apply_compile, compile_blocks, default_compile, is_compiled
from ditkit.model.cuda_graphs import fast_denoiser
from ditkit.model.dit import DiT, DiTConfig
from ditkit.model.precision import (
    autocast,
    check_precision,
    default_precision,
    matmul_precision,
    precision_context,
)


def tiny(**kw):
    cfg = dict(input_size=8, patch_size=2, hidden_size=32, depth=2, num_heads=2, num_classes=10)
    cfg.update(kw)
    torch.manual_seed(0)
    return perturb_zero_init_(DiT(DiTConfig(**cfg)))


def inputs(b=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 4, 8, 8, generator=g), torch.tensor([0, 250, 500, 999])[:b], torch.arange(b) % 10


def test_perturbed_model_is_not_trivial():
    # Without the perturbation a fresh DiT outputs exact zeros and every comparison below would pass.
    x, t, y = inputs()
    assert DiT(DiTConfig(input_size=8, hidden_size=32, depth=2, num_heads=2))(x, t, y).abs().max() == 0
    assert tiny().eval()(x, t, y).abs().mean() > 1e-3


def test_bf16_autocast_close_to_fp32_but_not_equal():
    model = tiny().eval()
    x, t, y = inputs()
    with torch.no_grad():
        with precision_context("fp32", "cpu"):
            ref = model(x, t, y)
        with precision_context("bf16", "cpu"):
            out = model(x, t, y)
    assert ref.dtype == torch.float32 and out.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights untouched
    err = relative_error(out.float(), ref)
    assert 0 < err < BF16_FORWARD_TOL


def test_autocast_is_noop_outside_bf16():
    model = tiny().eval()
    x, t, y = inputs()
    with torch.no_grad(), autocast("fp32", "cpu"):
        assert model(x, t, y).dtype == torch.float32


def test_matmul_precision_sets_and_restores_flags():
    before = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    with matmul_precision("tf32"):
        assert torch.get_float32_matmul_precision() == "high" and torch.backends.cudnn.allow_tf32
    with matmul_precision("fp32"):
        assert torch.get_float32_matmul_precision() == "highest" and not torch.backends.cudnn.allow_tf32
    with pytest.raises(RuntimeError), matmul_precision("tf32"):
        raise RuntimeError("restored even on error")
    assert (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32) == before


def test_precision_checks():
    check_precision("bf16", "cpu")
    with pytest.raises(UserError, match="tf32 needs a CUDA"):
        check_precision("tf32", "cpu")
    with pytest.raises(UserError, match="unknown precision"):
        check_precision("fp16", "cpu")
    assert default_precision("cpu") == "fp32" and default_compile("cpu") == "none"


def test_math_attention_matches_fused_kernel():
    model = tiny().eval()
    x, t, y = inputs()
    with torch.no_grad():
        fused = model(x, t, y)
        with sdpa_backend("math"):
            math = model(x, t, y)
    assert relative_error(math, fused) < 1e-5
    with pytest.raises(UserError, match="attention backend"):
        sdpa_backend("xformers")


def test_the_attention_kernel_that_ran_is_reported():
    model = tiny().eval()
    x, t, y = inputs()
    assert sdpa_kernels_used(lambda: model(x, t, y)) == ["flash (CPU)"]  # the fused CPU kernel
    with sdpa_backend("math"):
        assert sdpa_kernels_used(lambda: model(x, t, y)) == ["math"]
    assert sdpa_kernels_used(lambda: torch.ones(2) * 2) == []


@pytest.mark.slow
def test_compiled_blocks_match_eager_forward_and_gradients():
    # aot_eager traces each block with fullgraph=True (no graph breaks) without generating C++.
    torch._dynamo.reset()
    model = tiny(recompute_blocks=1)
    compiled = compile_blocks(copy.deepcopy(model), backend="aot_eager")
    assert list(compiled.state_dict()) == list(model.state_dict())  # keys unchanged
    x, t, y = inputs()
    keep = torch.zeros(4)
    out_e = model(x, t, y, force_drop_ids=keep)
    out_c = compiled(x, t, y, force_drop_ids=keep)
    out_e.square().mean().backward()
    out_c.square().mean().backward()
    assert relative_error(out_c, out_e) < 1e-6
    for (name, pe), pc in zip(model.named_parameters(), compiled.parameters(), strict=True):
        if pe.grad is not None:
            assert relative_error(pc.grad, pe.grad) < 1e-5, name


def test_compiled_blocks_leave_later_hooks_outside_the_graph():
    """A wrapper's hooks on a compiled block (FSDP2 all-gathers there) run eagerly around the
    compiled forward: a hook that dynamo cannot trace does not break the fullgraph compile, and it
    runs at every call. A deep copy stays compiled and runs its own weights."""
    torch._dynamo.reset()
    model = compile_blocks(tiny(), backend="aot_eager", dynamic=False)
    assert is_compiled(model) and not is_compiled(tiny())
    calls = []

    def untraceable_hook(module, args):
        torch._dynamo.graph_break()
        calls.append(module)

    model.blocks[0].register_forward_pre_hook(untraceable_hook)
    x, t, y = inputs()
    with torch.no_grad():
        model(x, t, y)
        model(x, t, y)
        twin = copy.deepcopy(model)
        assert is_compiled(twin) and twin.blocks[1].forward.__self__ is twin.blocks[1]
        with torch.no_grad():
            for p in twin.parameters():
                p.mul_(2)
        assert not torch.equal(twin(x, t, y), model(x, t, y))
    assert calls == [model.blocks[0]] * 2 + [twin.blocks[0], model.blocks[0]]  # the copy kept the hook


def test_apply_compile_choices():
    model = tiny()
    assert apply_compile(model, "none") is model
    with pytest.raises(UserError, match="compile choice"):
        apply_compile(model, "everything")


def test_fast_denoiser_on_cpu_is_the_model_in_its_precision():
    model = tiny().eval()
    x, t, y = inputs()
    denoiser = fast_denoiser(model, "fp32", cuda_graph=True)  # graphs are CUDA-only: plain calls here
    assert denoiser.null_class == model.null_class
    with torch.no_grad():
        torch.testing.assert_close(denoiser(x, t, y), model(x, t, y))
    assert fast_denoiser(model, "bf16")(x, t, y).dtype == torch.float32
    with pytest.raises(UserError, match="training mode"):
        fast_denoiser(model.train())
