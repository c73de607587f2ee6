"""`--optimizer muon`: the Newton-Schulz orthogonalisation, both halves of MuonAdamW against torch's own
optimizers, the parameter split, and the option's errors (exact resume is in test_resume.py)."""

from __future__ import annotations

import pytest
import torch

from ditkit.errors import UserError
from ditkit.model.dit import DiT, DiTConfig
from ditkit.training.config import TrainConfig
from ditkit.training.muon import (
    NEWTON_SCHULZ_COEFFICIENTS,
    NEWTON_SCHULZ_STEPS,
    MuonAdamW,
    muon_parameters,
    orthogonalise,
)
from ditkit.training.setup import build_optimizer


@pytest.mark.parametrize("shape", [(96, 32), (32, 96), (48, 48)])
def test_orthogonalise_flattens_the_singular_values_and_keeps_the_singular_vectors(shape):
    g = torch.Generator().manual_seed(0)
    # A badly conditioned matrix: singular values from 1e-3 to 10.
    u, _ = torch.linalg.qr(torch.randn(shape[0], min(shape), generator=g))
    v, _ = torch.linalg.qr(torch.randn(shape[1], min(shape), generator=g))
    s = torch.logspace(-3, 1, min(shape))
    x = u @ torch.diag(s) @ v.T
    out = orthogonalise(x)
    assert out.shape == x.shape
    # In the basis of x's singular vectors the result is diagonal with entries near 1 (the quintic
    # iteration stops at about 0.7-1.2 by design), except the smallest, still growing from 1e-3.
    inner = u.T @ out @ v
    diagonal = torch.diagonal(inner)
    assert (inner - torch.diag(diagonal)).abs().max() < 1e-3
    assert diagonal[s > 0.05].min() > 0.6 and diagonal.max() < 1.25


@pytest.mark.parametrize("shape", [(24, 80), (80, 24), (24, 40)])
def test_orthogonalise_equals_the_plain_newton_schulz_iteration(shape):
    # Wide matrices iterate on r x r Gram matrices instead of X: the same map, checked in float64.
    a, b, c = NEWTON_SCHULZ_COEFFICIENTS
    x = torch.randn(shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ref = x.T if shape[0] > shape[1] else x
    ref = ref / ref.norm()
    for _ in range(NEWTON_SCHULZ_STEPS):
        gram = ref @ ref.T
        ref = a * ref + (b * gram + c * gram @ gram) @ ref
    ref = ref.T if shape[0] > shape[1] else ref
    torch.testing.assert_close(orthogonalise(x.float()).double(), ref, rtol=0, atol=1e-5)


def test_adamw_half_matches_torch_adamw():
    g = torch.Generator().manual_seed(1)
    ours = torch.nn.Parameter(torch.randn(7, 3, generator=g))
    theirs = torch.nn.Parameter(ours.detach().clone())
    a = MuonAdamW([], [ours], lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    b = torch.optim.AdamW([theirs], lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    for _ in range(6):
        grad = torch.randn(7, 3, generator=g)
        ours.grad, theirs.grad = grad.clone(), grad.clone()
        a.step()
        b.step()
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


def test_muon_half_matches_torch_muon():
    g = torch.Generator().manual_seed(2)
    start = torch.randn(64, 24, generator=g)
    ours = torch.nn.Parameter(start.clone())
    theirs = torch.nn.Parameter(start.clone())
    a = MuonAdamW([ours], [], lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    # torch's Muon orthogonalises in bfloat16, ours in float32: equal to bfloat16's precision.
    b = torch.optim.Muon([theirs], lr=1e-2, weight_decay=0.1, adjust_lr_fn="match_rms_adamw")
    for _ in range(6):
        grad = torch.randn(64, 24, generator=g)
        ours.grad, theirs.grad = grad.clone(), grad.clone()
        a.step()
        b.step()
    moved_ours, moved_theirs = ours.detach() - start, theirs.detach() - start
    assert moved_ours.norm() > 0.1
    assert (moved_ours - moved_theirs).norm() < 0.02 * moved_theirs.norm()


def test_muon_takes_the_blocks_weight_matrices_and_adamw_the_rest():
    model = DiT(
        DiTConfig(
            input_size=8, patch_size=2, in_channels=1, hidden_size=32, depth=2, num_heads=2, num_classes=3
        )
    )
    muon, adamw = muon_parameters(model)
    names = {id(p): n for n, p in model.named_parameters()}
    muon_names = sorted(names[id(p)] for p in muon)
    per_block = [
        "adaLN_modulation.1.weight",
        "attn.proj.weight",
        "attn.qkv.weight",
        "mlp.fc1.weight",
        "mlp.fc2.weight",
    ]
    assert muon_names == sorted(f"blocks.{i}.{n}" for i in range(2) for n in per_block)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for p in adamw} == trainable - {id(p) for p in muon}
    assert all(not names[id(p)].startswith("blocks.") or p.ndim == 1 for p in adamw)

    optimizer = build_optimizer(model, TrainConfig(steps=1, optimizer="muon"), torch.device("cpu"))
    assert isinstance(optimizer, MuonAdamW)
    assert [group["muon"] for group in optimizer.param_groups] == [True, False]


def test_muon_rejects_what_it_cannot_do():
    with pytest.raises(ValueError, match="2-D"):
        MuonAdamW([torch.nn.Parameter(torch.zeros(3))], [], lr=1e-3, betas=(0.9, 0.95))
    with pytest.raises(UserError, match="--parallel ddp or --optimizer adamw"):
        TrainConfig(steps=1, optimizer="muon", parallel="fsdp")
    with pytest.raises(UserError, match="unknown optimizer .sgd.; choose one of adamw, muon"):
        TrainConfig(steps=1, optimizer="sgd")
