"""The sampler-facing denoiser: a model called in its precision without gradients, replayed as one
CUDA graph per input shape on CUDA (no launch overhead per op)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ditkit.errors import UserError
from ditkit.model.precision import check_precision, default_precision, precision_context

# Eager runs before a CUDA graph is captured: the first call may compile or autotune kernels.
GRAPH_WARMUP_CALLS = 3


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
