"""REPA (--repa-encoder): the loss against their formula, where its gradients go, exact resume with a local
TorchScript encoder, and the one-line refusals."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import random_tiny_dit
from test_train_support import assert_state_equal, tiny_config
from torch import nn

from ditkit.errors import UserError
from ditkit.training import train
from ditkit.training.repa import Projector, Repa, match_tokens, repa_loss
from ditkit.training.state import load_training_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


class PatchTokens(nn.Module):
    """A tiny encoder: one token of width 6 per 4 x 4 patch (2 x 2 tokens on 8 x 8 images)."""

    def __init__(self, channels: int = 1) -> None:
        super().__init__()
        self.proj = nn.Conv2d(channels, 6, kernel_size=4, stride=4)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(images).flatten(2).transpose(1, 2)  # (B, N, 6)


def _theirs(zs, zs_tilde):
    """sihyun-yu/REPA loss.py's projection loss, written out: per sample, the mean over tokens of minus the
    cosine of the normalised features; summed over samples and divided by the batch size."""
    total = 0.0
    for z_j, z_tilde_j in zip(zs, zs_tilde, strict=True):
        z_j = z_j / z_j.norm(dim=-1, keepdim=True)
        z_tilde_j = z_tilde_j / z_tilde_j.norm(dim=-1, keepdim=True)
        total += (-(z_j * z_tilde_j).sum(dim=-1)).mean()
    return total / zs.shape[0]


def test_loss_equals_their_formula():
    g = torch.Generator().manual_seed(0)
    z, z_tilde = torch.randn(3, 16, 8, generator=g), torch.randn(3, 16, 8, generator=g)
    ours = repa_loss(z_tilde, z)
    assert ours.shape == (3,)
    torch.testing.assert_close(ours.mean().double(), _theirs(z.double(), z_tilde.double()))
    torch.testing.assert_close(repa_loss(z, 2 * z), -torch.ones(3))  # aligned: the minimum, -1


def test_tokens_kept_or_resized_to_the_dit_grid():
    x = torch.randn(2, 16, 5)
    assert match_tokens(x, (4, 4)) is x
    assert match_tokens(x, (2, 2)).shape == (2, 4, 5)
    constant = torch.ones(1, 4, 3)
    torch.testing.assert_close(match_tokens(constant, (4, 4)), torch.ones(1, 16, 3))
    with pytest.raises(UserError, match="not a square grid"):
        match_tokens(torch.randn(1, 6, 3), (4, 4))


def test_gradients_reach_the_blocks_up_to_depth_and_the_projector_only():
    model = random_tiny_dit(depth=3)
    encoder = PatchTokens(model.config.in_channels).requires_grad_(False).eval()
    projector = Projector(model.config.hidden_size, 16, 6)
    optimizer = torch.optim.AdamW(projector.parameters())
    repa = Repa(encoder, projector, optimizer, model.blocks[1], model.grid_hw, coeff=0.5)
    x = torch.randn(2, model.config.in_channels, *model.config.size_hw)
    targets = repa.targets(x)

    def objective_free():  # the DiT runs, but only the REPA term enters the loss
        model(x, torch.tensor([3, 500]), torch.tensor([1, 2]))
        return {"loss": torch.zeros(2)}

    terms = repa.losses(objective_free, targets)
    terms["loss"].sum().backward()
    torch.testing.assert_close(terms["loss"], 0.5 * terms["repa"])
    assert all(p.grad is None for p in encoder.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in projector.parameters())
    for name, p in model.named_parameters():
        after = name.startswith(("blocks.2.", "final_layer."))
        if after:
            assert p.grad is None or not p.grad.any(), name
    assert model.blocks[1].attn.qkv.weight.grad.abs().sum() > 0
    assert model.x_embedder.proj.weight.grad.abs().sum() > 0


def _options(tmp_path, out, steps, encoder, **more):
    # 2 micro-batches per step, warmup and clipping: the projector's AdamW and the joint clip carry over.
    options = dict(
        out=str(tmp_path / out),
        steps=steps,
        global_batch=16,
        micro_batch=8,
        warmup_steps=2,
        grad_clip=0.5,
        objective="flow",
        repa_encoder=str(encoder),
        repa_depth=1,
        repa_projector_dim=16,
    )
    return tiny_config(tmp_path, **{**options, **more})


def _scripted_encoder(tmp_path):
    path = tmp_path / "encoder.pt"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        torch.jit.script(PatchTokens()).save(str(path))
    return path


def test_training_with_repa_resumes_exactly(tmp_path):
    encoder = _scripted_encoder(tmp_path)
    straight = train(_options(tmp_path, "straight", 4, encoder), progress=False)
    train(_options(tmp_path, "resumed", 2, encoder), progress=False)
    resumed = train(_options(tmp_path, "resumed", 4, encoder), resume=True, progress=False)
    a, b = load_training_checkpoint(straight.checkpoint), load_training_checkpoint(resumed.checkpoint)
    assert_state_equal(a.model, b.model)
    assert_state_equal(a.ema, b.ema)
    assert_state_equal(a.state["optimizer"], b.state["optimizer"])
    assert_state_equal(a.state["repa"], b.state["repa"])
    assert set(a.state["repa"]["projector"]) == {f"{i}.{w}" for i in (0, 2, 4) for w in ("weight", "bias")}
    assert not any("proj" in k and k.startswith("0.") for k in a.model)  # the DiT's weights hold no projector
    records = [json.loads(line) for line in (straight.out / "metrics.jsonl").read_text().splitlines()]
    assert all(-1 <= r["repa"] <= 1 for r in records)
    resumed_records = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [r["loss"] for r in records] == [json.loads(line)["loss"] for line in resumed_records]


def test_bad_options_are_refused_in_one_line(tmp_path, monkeypatch):
    encoder = _scripted_encoder(tmp_path)
    with pytest.raises(UserError, match=r"^--repa-depth 3 is deeper than DiT-T/2's 2 blocks$"):
        train(_options(tmp_path, "deep", 1, encoder, repa_depth=3), progress=False)
    with pytest.raises(
        UserError, match=r"^unknown --repa-encoder 'dinov2-vitb16'; did you mean dinov2-vitb14\?"
    ):
        _options(tmp_path, "x", 1, "dinov2-vitb16")
    with pytest.raises(UserError, match=r"^--repa-coeff apply to REPA only; add --repa-encoder ENCODER$"):
        tiny_config(tmp_path, repa_coeff=1.0)
    with pytest.raises(UserError, match="does not work with --objective meanflow"):
        _options(tmp_path, "x", 1, encoder, objective="meanflow")
    with pytest.raises(UserError, match="no such file"):
        train(_options(tmp_path, "missing", 1, tmp_path / "nothing.pt"), progress=False)

    import ditkit.hub
    import ditkit.training.repa_encoders as encoders

    monkeypatch.setattr(encoders, "hub_cached", lambda name: False)
    monkeypatch.setattr(ditkit.hub, "unreachable_reason", lambda host: "no route to host")
    with pytest.raises(UserError, match=r"out of reach \(no route to host\); give a local encoder") as err:
        train(_options(tmp_path, "hub", 1, "dinov2-vitb14"), progress=False)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "hub").exists()  # refused before anything was built or written
