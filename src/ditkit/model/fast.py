"""The fast path of a DiT, kept numerically honest: precision, fused attention, compilation, CUDA graphs.

Every piece is an option with a default per device (`default_precision`, `default_compile`):
- precision "bf16": autocast to bfloat16 for the forward; weights, gradients, optimizer state and
  EMA stay float32 (master weights). "tf32": float32 tensors, TensorFloat-32 matmuls on CUDA.
  "fp32": strict IEEE float32 everywhere.
- attention goes through SDPA (flash / memory-efficient kernels); `sdpa_backend` pins one.
- `compile_blocks` compiles each DiTBlock in place (LayerNorm, modulate, gate and GELU fuse into
  the matmul epilogues); `compile_model` compiles the whole forward. State-dict keys are unchanged.
- `CudaGraphDenoiser` replays the inference forward as one CUDA graph (no launch overhead per op).

None of these changes what the model computes beyond the rounding of the chosen precision.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from ditkit.choices import COMPILE_CHOICES, PRECISIONS
from ditkit.errors import UserError

SDPA_BACKENDS = ("auto", "flash", "efficient", "cudnn", "math")
# Eager runs before a CUDA graph is captured: the first call may compile or autotune kernels.
GRAPH_WARMUP_CALLS = 3


def check_precision(precision: str, device: torch.device | str) -> None:
    """Raise UserError unless `precision` is known and runs on `device`."""
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "tf32" and torch.device(device).type != "cuda":
        raise UserError("precision tf32 needs a CUDA device; use fp32 or bf16 on the CPU")


def default_precision(device: torch.device | str) -> str:
    """bf16 on CUDA devices that support it, else fp32.

    On the CPU results stay exactly float32 by default; bf16 autocast is opt-in there (it is faster
    on CPUs with AMX tiles, slower on many others: see bench/RESULTS.md).
    """
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def default_compile(device: torch.device | str) -> str:
    """Compile the blocks on CUDA; on the CPU the compile time rarely pays for itself in short runs."""
    return "blocks" if torch.device(device).type == "cuda" else "none"


@contextlib.contextmanager
def matmul_precision(precision: str) -> Iterator[None]:
    """Set float32 matmuls to strict IEEE ("fp32") or TF32 ("tf32") inside; restore the flags on exit.

    The flags are process-wide, so enter this around the whole training step (backward included).
    "bf16" leaves them alone: under autocast the matmuls are bfloat16 anyway. Uses
    `torch.set_float32_matmul_precision` and the cuDNN flag, which torch >= 2.9 keeps consistent
    with its newer `fp32_precision` settings (setting those directly breaks reads of the old ones).
    """
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "bf16":
        yield
        return
    saved = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    on = precision == "tf32"
    try:
        torch.set_float32_matmul_precision("high" if on else "highest")
        torch.backends.cudnn.allow_tf32 = on
        yield
    finally:
        torch.set_float32_matmul_precision(saved[0])
        torch.backends.cudnn.allow_tf32 = saved[1]


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """bfloat16 autocast for "bf16" (enter around the forward and the loss), a no-op otherwise.

    Autocast's cache of bfloat16 weight copies is off: a DiT uses each weight once per forward, so
    it would save nothing, and one autocast state everywhere lets compiled graphs be reused and
    CUDA graphs be captured.
    """
    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, cache_enabled=False)


@contextlib.contextmanager
def precision_context(precision: str, device: torch.device | str) -> Iterator[None]:
    """Both `matmul_precision` and `autocast`: what an inference call needs.

    Example:
        >>> with precision_context("bf16", "cuda"), torch.no_grad():
        ...     out = model(x, t, y)  # (B, 2C, H, W) in bfloat16
    """
    check_precision(precision, device)
    with matmul_precision(precision), autocast(precision, device):
        yield


def sdpa_backend(name: str = "auto") -> contextlib.AbstractContextManager:
    """Restrict scaled_dot_product_attention to one kernel ("flash", "efficient", "cudnn", "math").

    "auto" lets PyTorch pick (flash or memory-efficient on CUDA, the fused CPU kernel on the CPU);
    "math" is the unfused reference (softmax(q k^T / sqrt(d)) v with the full score matrix).
    """
    if name not in SDPA_BACKENDS:
        raise UserError(f"unknown attention backend {name!r}; choose one of {', '.join(SDPA_BACKENDS)}")
    if name == "auto":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = {
        "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "cudnn": SDPBackend.CUDNN_ATTENTION,
        "math": SDPBackend.MATH,
    }[name]
    return sdpa_kernel(backend)


def _blocks(model: nn.Module) -> nn.ModuleList:
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.ModuleList):
        raise UserError("compile_blocks expects a DiT (a model with a `blocks` ModuleList)")
    return blocks


def compile_blocks(
    model: nn.Module, mode: str | None = None, backend: str = "inductor", fullgraph: bool = True
) -> nn.Module:
    """Compile every transformer block of `model` in place; returns the same model.

    All blocks share one compiled graph (their code and shapes are the same), so the compile
    time does not grow with depth. Parameters and state-dict keys are untouched, activation
    checkpointing keeps working, and the embeddings and final layer stay eager.

    Args:
        model: a DiT.
        mode: torch.compile mode (None, "max-autotune-no-cudagraphs", ...).
        backend: torch.compile backend; "aot_eager" checks tracing without generating code.
        fullgraph: fail rather than fall back to eager on a graph break.
    """
    for block in _blocks(model):
        block.compile(mode=mode, backend=backend, fullgraph=fullgraph)
    return model


def compile_model(
    model: nn.Module, mode: str | None = None, backend: str = "inductor", fullgraph: bool = True
) -> nn.Module:
    """Compile the whole forward of `model` in place (longer compile, fuses embeddings and output too)."""
    model.compile(mode=mode, backend=backend, fullgraph=fullgraph)
    return model


def apply_compile(
    model: nn.Module, how: str, mode: str | None = None, backend: str = "inductor"
) -> nn.Module:
    """Compile `model` as `how` says: "none", "blocks" (`compile_blocks`) or "model" (`compile_model`)."""
    if how not in COMPILE_CHOICES:
        raise UserError(f"unknown compile choice {how!r}; choose one of {', '.join(COMPILE_CHOICES)}")
    if how == "blocks":
        return compile_blocks(model, mode=mode, backend=backend)
    if how == "model":
        return compile_model(model, mode=mode, backend=backend)
    return model


class CudaGraphDenoiser:
    """An inference callable model(x, t, y) replayed as one CUDA graph per input shape.

    The forward runs under `precision` without gradients. Inputs are copied into static buffers,
    the graph replays, and the output (float32) is returned as a fresh tensor. A new shape
    captures a new graph. On devices other than CUDA it simply calls the model.

    Args:
        model: the denoiser, in eval mode; its parameters must not be replaced afterwards (in-place
            updates such as loading new weights are seen by the graph).
        precision: "fp32", "tf32" or "bf16".
        use_graph: capture CUDA graphs (ignored off CUDA).
    """

    def __init__(self, model: nn.Module, precision: str, use_graph: bool = True) -> None:
        self.model = model
        self.precision = precision
        self.device = next(model.parameters()).device
        check_precision(precision, self.device)
        self.use_graph = use_graph and self.device.type == "cuda"
        self.null_class = getattr(model, "null_class", None)
        self._graphs: dict[tuple[Any, ...], tuple[Any, list[Tensor | None], Tensor]] = {}

    def _eager(self, x: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
        with torch.no_grad(), precision_context(self.precision, self.device):
            return self.model(x, t, y).float()

    def _capture(self, x: Tensor, t: Tensor, y: Tensor | None) -> tuple[Any, list[Tensor | None], Tensor]:
        sx, st, sy = x.clone(), t.clone(), None if y is None else y.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm up (compile, autotune) off the capture
            for _ in range(GRAPH_WARMUP_CALLS):
                self._eager(sx, st, sy)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = self._eager(sx, st, sy)
        return graph, [sx, st, sy], out

    def __call__(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """(B, C, H, W), (B,), (B,) or None -> (B, out_channels, H, W) float32."""
        if not self.use_graph:
            return self._eager(x, t, y)
        key = (tuple(x.shape), x.dtype, tuple(t.shape), t.dtype, None if y is None else tuple(y.shape))
        if key not in self._graphs:
            self._graphs[key] = self._capture(x, t, y)
        graph, static, out = self._graphs[key]
        for buffer, value in zip(static, (x, t, y), strict=True):
            if buffer is not None and value is not None:
                buffer.copy_(value)
        graph.replay()
        return out.clone()


def fast_denoiser(
    model: nn.Module, precision: str | None = None, cuda_graph: bool = True
) -> Callable[..., Tensor]:
    """The sampler-facing callable for `model`: chosen precision, no gradients, CUDA graphs on CUDA.

    Args:
        model: a DiT in eval mode (compile it first with `apply_compile` if wanted).
        precision: default `default_precision(device)`.
        cuda_graph: replay the forward as a CUDA graph (CUDA only).

    Returns:
        A callable (x, t, y) -> float32 output with a `null_class` attribute, usable by
        `ditkit.samplers.sample`.
    """
    if model.training:
        raise UserError(
            "the model is in training mode (it would drop labels at random); call model.eval() first"
        )
    device = next(model.parameters()).device
    return CudaGraphDenoiser(model, precision or default_precision(device), use_graph=cuda_graph)
