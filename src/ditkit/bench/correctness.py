"""Numerical checks of the fast path against float32 eager: forward, one training step, sampling, compile.

A freshly initialised DiT outputs exactly zero (adaLN-Zero and a zero final layer), which would
make every comparison pass; `perturb_zero_init_` gives those layers small random weights first.
Errors are relative L2 errors ||a - b|| / ||b|| against the float32 reference, computed in float64.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from ditkit.bench.trainer_step import BenchStep
from ditkit.model.compilation import apply_compile
from ditkit.model.cuda_graphs import fast_denoiser
from ditkit.model.dit import DiT
from ditkit.model.precision import matmul_precision, precision_context
from ditkit.training.randomness import StepDraws
from ditkit.training.step import forward_backward, loss_terms

M = TypeVar("M", bound=nn.Module)

# Scale of the random weights given to the zero-initialised layers (that of the embedding init).
PERTURB_STD = 0.02
# Documented bf16 tolerances, relative L2 error against float32. bfloat16 keeps 8 significant bits
# (unit roundoff 2^-8 = 3.9e-3); activations rounded at every matmul give a few times that.
BF16_FORWARD_TOL = 3e-2
BF16_LOSS_TOL = 1e-2
BF16_GRAD_TOL = 5e-2
BF16_SAMPLE_TOL = 5e-2
# TF32 keeps 11 significant bits (unit roundoff 2^-11 = 4.9e-4).
TF32_FORWARD_TOL = 5e-3
# Compiled against eager in the same precision: only the order of float operations differs.
COMPILE_FP32_TOL = 1e-4
COMPILE_BF16_TOL = 2e-2


@dataclass
class Check:
    """One comparison: `value` (a relative error) must not exceed `tolerance`."""

    name: str
    value: float
    tolerance: float

    @property
    def passed(self) -> bool:
        return self.value <= self.tolerance  # NaN fails

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def relative_error(a: Tensor, b: Tensor) -> float:
    """||a - b|| / ||b|| in float64 (b the reference)."""
    a64, b64 = a.detach().double(), b.detach().double()
    return float((a64 - b64).norm() / b64.norm().clamp_min(1e-30))


@torch.no_grad()
def perturb_zero_init_(model: M, seed: int = 0, std: float = PERTURB_STD) -> M:
    """Give every all-zero trainable weight or bias small normal values, so the model is not the identity."""
    g = torch.Generator("cpu").manual_seed(seed)
    for p in model.parameters():
        if p.requires_grad and not p.any():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def example_inputs(model: DiT, batch: int, seed: int = 0) -> tuple[Tensor, Tensor, Tensor | None]:
    """x (B, C, H, W) normal, t (B,) spread over 0..999, y (B,) labels (None if unconditional)."""
    device = next(model.parameters()).device
    g = torch.Generator("cpu").manual_seed(seed)
    h, w = model.config.size_hw
    x = torch.randn(batch, model.in_channels, h, w, generator=g).to(device)
    t = torch.linspace(0, 999, batch).long().to(device)
    y = torch.randint(0, model.num_classes, (batch,), generator=g).to(device) if model.num_classes else None
    return x, t, y


def _forward(model: nn.Module, precision: str, x: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
    with torch.no_grad(), precision_context(precision, x.device):
        return model(x, t, y).float()


def forward_error(model: DiT, precision: str, batch: int, seed: int = 0) -> float:
    """Relative error of `model`'s forward in `precision` against itself in fp32 (eager, eval mode)."""
    x, t, y = example_inputs(model, batch, seed)
    model.eval()
    return relative_error(_forward(model, precision, x, t, y), _forward(model, "fp32", x, t, y))


def compile_errors(
    model: DiT, precision: str, batch: int, compile: str = "blocks", backend: str = "inductor", seed: int = 0
) -> dict[str, float]:
    """Forward of a compiled copy of `model` in `precision`, against eager in the same precision
    ("vs_eager") and against eager fp32 ("vs_fp32")."""
    x, t, y = example_inputs(model, batch, seed)
    model.eval()
    fast = apply_compile(copy.deepcopy(model), compile, backend=backend)
    out = _forward(fast, precision, x, t, y)
    return {
        "vs_eager": relative_error(out, _forward(model, precision, x, t, y)),
        "vs_fp32": relative_error(out, _forward(model, "fp32", x, t, y)),
    }


def train_step_errors(
    model: DiT, precision: str, batch: int, compile: str = "none", backend: str = "inductor", seed: int = 0
) -> dict[str, float]:
    """One training step in `precision` (compiled as asked) against fp32 eager from identical copies.

    The copies run in training mode on the same x, t, noise and y with no label dropped; the
    reference copy is freed before the other is made, so peak memory is that of one training model.

    Returns:
        Relative errors of the loss before the step ("loss"), the gradient ("grad") and the loss
        after one AdamW step, evaluated in fp32 ("loss_after").
    """
    x, t, y = example_inputs(model, batch, seed)
    noise = torch.randn(x.shape, generator=torch.Generator("cpu").manual_seed(seed + 1)).to(x.device)
    draws = StepDraws(t, noise, torch.zeros(batch, dtype=torch.bool, device=x.device))  # no label dropped
    results = []
    for prec, how in (("fp32", "none"), (precision, compile)):
        trained = apply_compile(copy.deepcopy(model).train(), how, backend=backend)
        step = BenchStep(trained, prec).step  # the trainer's step: its diffusion and optimizer
        with matmul_precision(prec):  # as TrainStep enters it
            terms = forward_backward(trained, step.objective, x, y, draws, 1.0 / batch, prec)
        grad = torch.cat([p.grad.flatten() for p in trained.parameters() if p.grad is not None])
        step.optimizer.step()
        with torch.no_grad(), matmul_precision("fp32"):
            after = loss_terms(trained, step.objective, x, y, draws)["loss"].mean()
        results.append((terms["loss"].mean(), grad, after))
        del step, trained
        if x.device.type == "cuda":
            torch.cuda.empty_cache()
    (l0, g0, a0), (l1, g1, a1) = results
    return {
        "loss": relative_error(l1, l0),
        "grad": relative_error(g1, g0),
        "loss_after": relative_error(a1, a0),
    }


def sample_error(
    model: DiT,
    precision: str,
    batch: int,
    steps: int,
    guidance_scale: float,
    compile: str = "none",
    backend: str = "inductor",
    cuda_graph: bool = True,
) -> float:
    """Relative error of a `steps`-step guided DDPM chain run by the fast denoiser against fp32 eager."""
    from ditkit.objectives.sampling import sample

    model.eval()
    h, w = model.config.size_hw
    shape = (batch, model.in_channels, h, w)
    labels = torch.arange(batch) % max(model.num_classes, 1)
    outs = []
    for prec, how, graph in (("fp32", "none", False), (precision, compile, cuda_graph)):
        m = apply_compile(copy.deepcopy(model), how, backend=backend)
        denoiser = fast_denoiser(m, prec, cuda_graph=graph)
        device = next(m.parameters()).device
        outs.append(
            sample(
                denoiser,
                shape,
                labels=labels.to(device),
                steps=steps,
                guidance_scale=guidance_scale,
                null_label=model.null_class,
                progress=False,
                device=device,
            )
        )
    return relative_error(outs[1], outs[0])


@dataclass
class PlannedCheck:
    """A check to run: `run()` gives one relative error or several by key; `seconds` is a rough cost."""

    name: str
    run: Callable[[], dict[str, float] | float]
    tolerances: dict[str, float]
    seconds: float

    def evaluate(self, value: dict[str, float] | float) -> list[Check]:
        """The Check of each returned value against its tolerance."""
        values = value if isinstance(value, dict) else {"": value}
        return [
            Check(f"{self.name} {key}".strip(), v, self.tolerances.get(key, self.tolerances.get("", 0.0)))
            for key, v in values.items()
        ]


def check_plan(
    model: DiT,
    batch: int,
    compile: str = "blocks",
    backend: str = "inductor",
    small_batch: int = 8,
    sample_steps: int = 10,
    guidance_scale: float = 4.0,
) -> list[PlannedCheck]:
    """The fast path's checks on `model` (perturb it first).

    With compilation, first one fp32 training step compiled against eager at `small_batch`
    (exact arithmetic on both sides: compiled blocks once gave wrong gradients on the CPU). Then
    bf16 (and on CUDA tf32) forward at `small_batch`; one bf16 training step eager at
    `small_batch` and compiled at `batch`; the compiled bf16 forward at 2 x `batch` (the guided
    sampling batch); a `sample_steps`-step guided DDPM chain through the compiled bf16
    denoiser (CUDA-graphed on CUDA) at `batch`, each against float32 eager.
    """
    device = next(model.parameters()).device
    train_tol = {"loss": BF16_LOSS_TOL, "grad": BF16_GRAD_TOL, "loss_after": BF16_LOSS_TOL}
    plan = []
    if compile != "none":  # first: compiled blocks once gave wrong gradients on the CPU
        plan.append(
            PlannedCheck(  # exact arithmetic on both sides: a wrong gradient cannot hide in bf16 noise
                f"train step fp32 compiled ({compile}) vs eager",
                lambda: train_step_errors(model, "fp32", small_batch, compile=compile, backend=backend),
                {"": COMPILE_FP32_TOL},
                120,
            )
        )
    plan.append(
        PlannedCheck(
            "forward bf16 vs fp32",
            lambda: forward_error(model, "bf16", small_batch),
            {"": BF16_FORWARD_TOL},
            20,
        )
    )
    if device.type == "cuda":
        plan.append(
            PlannedCheck(
                "forward tf32 vs fp32",
                lambda: forward_error(model, "tf32", small_batch),
                {"": TF32_FORWARD_TOL},
                20,
            )
        )
    plan.append(
        PlannedCheck(
            "train step bf16 vs fp32", lambda: train_step_errors(model, "bf16", small_batch), train_tol, 30
        )
    )
    if compile != "none":
        plan += [
            PlannedCheck(
                f"train step bf16 compiled ({compile}) vs fp32",
                lambda: train_step_errors(model, "bf16", batch, compile=compile, backend=backend),
                train_tol,
                150,
            ),
            PlannedCheck(
                f"forward bf16 compiled ({compile})",
                lambda: compile_errors(model, "bf16", 2 * batch, compile=compile, backend=backend),
                {"vs_eager": COMPILE_BF16_TOL, "vs_fp32": BF16_FORWARD_TOL},
                120,
            ),
        ]
    graph = " + CUDA graph" if device.type == "cuda" else ""
    plan.append(
        PlannedCheck(
            f"{sample_steps}-step guided DDPM, bf16{' compiled' if compile != 'none' else ''}{graph} vs fp32",
            lambda: sample_error(
                model, "bf16", batch, sample_steps, guidance_scale, compile=compile, backend=backend
            ),
            {"": BF16_SAMPLE_TOL},
            60,
        )
    )
    return plan


def run_checks(
    model: str,
    input_size: int,
    num_classes: int,
    batch: int,
    compile: str = "none",
    backend: str = "inductor",
    sample_steps: int = 10,
    device: str = "auto",
    seed: int = 0,
) -> dict[str, Any]:
    """Build a perturbed preset and run `check_plan` on it.

    Returns:
        {"model", "device", "checks": [Check.as_dict()...], "passed": all passed}.
    """
    from ditkit.bench.train import build_model
    from ditkit.distributed import pick_device

    dev = pick_device(device, local_rank=None)
    torch.manual_seed(seed)  # DiT's own initialisation draws from the global generator
    dit = perturb_zero_init_(build_model(model, input_size, num_classes, dev), seed)
    small = min(batch, 8)
    checks = []
    for planned in check_plan(dit, batch, compile, backend, small_batch=small, sample_steps=sample_steps):
        checks += [c.as_dict() for c in planned.evaluate(planned.run())]
    return {"model": model, "device": str(dev), "checks": checks, "passed": all(c["passed"] for c in checks)}
