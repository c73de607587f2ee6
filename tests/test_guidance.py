"""Classifier-free guidance: the wrapper's algebra, one batched forward, `first3`, and the interval."""

from __future__ import annotations

import pytest
import torch

from ditkit.errors import UserError
from ditkit.objectives.sampling import sample
from ditkit.samplers.guidance import ClassifierFreeGuidance, classifier_free_guidance

C, NULL = 4, 10


class LabelledModel:
    """Output depends on x, t and y; records its calls. Returns (B, 2C, H, W)."""

    def __init__(self) -> None:
        self.calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = []
        self.null_class = NULL

    def __call__(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        self.calls.append((x, t, y))
        label = (y if y is not None else torch.full((x.shape[0],), NULL)).double().view(-1, 1, 1, 1)
        channel = torch.arange(2 * C, dtype=torch.float64).view(1, -1, 1, 1)
        scale = (1 + t.double().view(-1, 1, 1, 1) / 1000) * (1 + 0.1 * label)
        return torch.sin(torch.cat([x, x], dim=1) * scale + channel * label)


def _inputs(batch: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = torch.randn(batch, C, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return x, torch.full((batch,), 500), torch.tensor([0, 3, 7][:batch])


def test_scale_one_is_the_conditional_model_and_zero_the_unconditional() -> None:
    model = LabelledModel()
    x, t, y = _inputs()
    torch.testing.assert_close(classifier_free_guidance(model, 1.0, NULL)(x, t, y), model(x, t, y))
    unconditional = model(x, t, torch.full_like(y, NULL))
    guided = classifier_free_guidance(model, 0.0, NULL)(x, t, y)
    torch.testing.assert_close(guided[:, :C], unconditional[:, :C])
    torch.testing.assert_close(guided[:, C:], model(x, t, y)[:, C:])  # variance from the conditional branch


def test_guided_eps_formula_and_single_batched_forward() -> None:
    model = LabelledModel()
    x, t, y = _inputs()
    guided = ClassifierFreeGuidance(model, 4.0, NULL)(x, t, y)
    assert len(model.calls) == 1
    bx, bt, by = model.calls[0]
    assert bx.shape[0] == 6 and by is not None and by.tolist() == [0, 3, 7, NULL, NULL, NULL]
    assert torch.equal(bx[:3], x) and torch.equal(bx[3:], x) and torch.equal(bt, torch.cat([t, t]))
    cond, uncond = model(x, t, y), model(x, t, torch.full_like(y, NULL))
    torch.testing.assert_close(guided[:, :C], uncond[:, :C] + 4.0 * (cond[:, :C] - uncond[:, :C]))
    torch.testing.assert_close(guided[:, C:], cond[:, C:])


def _official_forward_with_cfg(
    model: LabelledModel, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, s: float
):
    """The official DiT procedure, written out: a doubled batch [x; x] with [y; null], eps channels
    0..2 guided and written into both halves, everything else passed through; keep the first half."""
    doubled = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, torch.full_like(y, NULL)]))
    eps, rest = doubled[:, :3], doubled[:, 3:]
    cond_eps, uncond_eps = torch.split(eps, len(eps) // 2, dim=0)
    half = uncond_eps + s * (cond_eps - uncond_eps)
    return torch.cat([torch.cat([half, half]), rest], dim=1)[: len(x)]


def test_first3_reproduces_the_official_implementation() -> None:
    model = LabelledModel()
    x, t, y = _inputs()
    official = _official_forward_with_cfg(model, x, t, y, 4.0)
    first3 = ClassifierFreeGuidance(model, 4.0, NULL, guided_channels="first3")(x, t, y)
    torch.testing.assert_close(first3, official, rtol=0, atol=0)
    cond = model(x, t, y)
    torch.testing.assert_close(first3[:, 3], cond[:, 3])  # latent channel 3 is left unguided
    assert not torch.allclose(first3, ClassifierFreeGuidance(model, 4.0, NULL)(x, t, y))


def test_guidance_interval() -> None:
    model = LabelledModel()
    x, _, y = _inputs()
    guided = ClassifierFreeGuidance(model, 4.0, NULL, interval=(200, 700))
    always = ClassifierFreeGuidance(model, 4.0, NULL)
    t = torch.tensor([100, 500, 900])  # outside, inside, outside
    out = guided(x, t, y)
    torch.testing.assert_close(out[1], always(x, t, y)[1])
    torch.testing.assert_close(out[[0, 2]], model(x, t, y)[[0, 2]])
    model.calls.clear()
    outside = torch.full((3,), 950)
    torch.testing.assert_close(guided(x, outside, y), model(x, outside, y))
    assert model.calls[0][0].shape[0] == 3  # no unconditional pass where nothing is guided


def test_errors() -> None:
    model = LabelledModel()
    x, t, _ = _inputs()
    with pytest.raises(UserError):
        ClassifierFreeGuidance(model, 4.0, NULL)(x, t, None)
    with pytest.raises(UserError):
        ClassifierFreeGuidance(model, 4.0, NULL, guided_channels="first4")  # type: ignore[arg-type]
    with pytest.raises(UserError):
        ClassifierFreeGuidance(model, 4.0, NULL, interval=(700, 200))


def test_sample_with_scale_one_equals_unguided_and_uses_model_null_class() -> None:
    model = LabelledModel()
    kwargs = dict(labels=[1, 2], sampler="ddim", steps=5, progress=False)
    plain = sample(lambda x, t, y: model(x, t, y).float(), (2, C, 2, 2), **kwargs)
    guided_one = sample(
        lambda x, t, y: ClassifierFreeGuidance(model, 1.0, NULL)(x, t, y).float(), (2, C, 2, 2), **kwargs
    )
    torch.testing.assert_close(guided_one, plain, rtol=1e-5, atol=1e-5)
    model.calls.clear()
    sample(model, (2, C, 2, 2), cfg_scale=3.0, **kwargs)
    labels = model.calls[0][2]
    assert labels is not None and labels.tolist() == [1, 2, NULL, NULL] and len(model.calls) == 5
