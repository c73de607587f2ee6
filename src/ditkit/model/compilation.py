"""torch.compile for a DiT, in place: every block (one shared graph) or the whole forward.

Compiled blocks fuse LayerNorm, modulate, gate and GELU into the matmul epilogues. Parameters and
state-dict keys are unchanged, so checkpoints, EMA and FSDP see the same model.
"""

from __future__ import annotations

import types

import torch
from torch import nn

from ditkit.choices import COMPILE_CHOICES
from ditkit.errors import UserError


def default_compile(device: torch.device | str) -> str:
    """Compile the blocks on CUDA; on the CPU the compile time rarely pays for itself in short runs."""
    return "blocks" if torch.device(device).type == "cuda" else "none"


def _blocks(model: nn.Module) -> nn.ModuleList:
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.ModuleList):
        raise UserError("compile_blocks expects a DiT (a model with a `blocks` ModuleList)")
    return blocks


def compile_blocks(
    model: nn.Module,
    mode: str | None = None,
    backend: str = "inductor",
    fullgraph: bool = True,
    dynamic: bool | None = None,
) -> nn.Module:
    """Compile every transformer block of `model` in place; returns the same model.

    All blocks share one compiled function, `DiTBlock.forward` (their code and shapes are the
    same), so the compile time does not grow with depth. Each block's `forward` is replaced, not
    its `__call__`: hooks that a wrapper puts on the blocks later (FSDP2's all-gather before the
    forward and reshard after it) run eagerly around the compiled graph instead of breaking it.
    Parameters and state-dict keys are untouched, activation checkpointing keeps working, a deep
    copy is compiled too, and the embeddings and final layer stay eager.

    Args:
        model: a DiT.
        mode: torch.compile mode (None, "max-autotune-no-cudagraphs", ...).
        backend: torch.compile backend; "aot_eager" checks tracing without generating code.
        fullgraph: fail rather than fall back to eager on a graph break.
        dynamic: False specialises each batch size (one graph per size: what a benchmark wants);
            None lets torch.compile turn dynamic after a second size.
    """
    blocks = _blocks(model)
    if not len(blocks):
        return model
    forward = torch.compile(
        type(blocks[0]).forward, mode=mode, backend=backend, fullgraph=fullgraph, dynamic=dynamic
    )
    for block in blocks:
        # A bound method: copy.deepcopy rebinds it to the copied block.
        block.forward = types.MethodType(forward, block)  # type: ignore[method-assign]
    return model


def is_compiled(model: nn.Module) -> bool:
    """Whether `compile_blocks` or `compile_model` compiled `model`."""
    blocks = getattr(model, "blocks", None) or []
    return getattr(model, "_compiled_call_impl", None) is not None or any(
        "forward" in vars(b) for b in blocks
    )


def compile_model(
    model: nn.Module, mode: str | None = None, backend: str = "inductor", fullgraph: bool = True
) -> nn.Module:
    """Compile the whole forward of `model` in place (longer compile, fuses embeddings and output too)."""
    model.compile(mode=mode, backend=backend, fullgraph=fullgraph)
    return model


def apply_compile(
    model: nn.Module,
    how: str,
    mode: str | None = None,
    backend: str = "inductor",
    dynamic: bool | None = None,
) -> nn.Module:
    """Compile `model` as `how` says: "none", "blocks" (`compile_blocks`, with `dynamic`) or "model"
    (`compile_model`)."""
    if how not in COMPILE_CHOICES:
        raise UserError(f"unknown compile choice {how!r}; choose one of {', '.join(COMPILE_CHOICES)}")
    if how == "blocks":
        return compile_blocks(model, mode=mode, backend=backend, dynamic=dynamic)
    if how == "model":
        return compile_model(model, mode=mode, backend=backend)
    return model
