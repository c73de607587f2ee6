"""Recomputing DiT blocks in backward (activation checkpointing): whole blocks, or op-level selective.

A checkpointed block keeps only its inputs for backward and recomputes the rest when the gradient
reaches it. Two policies decide how much of the rest it keeps:
- "full": nothing; the whole block (matmuls included) runs again in backward, about one extra
  forward per checkpointed block.
- "selective": the outputs of the expensive ops (the matmuls and fused attention) are kept, and
  only the cheap elementwise ops between them (LayerNorm, modulate, GELU, gates, residual adds,
  autocast copies) are recomputed. Memory sits between none and full; the recompute costs a few
  percent of a forward instead of a whole one.

Selective checkpointing uses `torch.utils.checkpoint.create_selective_checkpoint_contexts`
(torch >= 2.4), which intercepts the ops the block dispatches to ATen. The checkpoint is taken
inside `DiTBlock.forward`, so under torch.compile (`compile_blocks` or `compile_model`) it is part of
the compiled graph: the compiler sees the ATen ops, applies the policy, and its partitioner decides
what else to recompute. Gradients are the same as eager under both policies.
`ditkit.bench.activations` counts what eager keeps; it does not count compiled graphs.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

from ditkit.choices import RECOMPUTE_POLICIES

# ATen ops whose outputs selective checkpointing keeps. `aten.linear` and `aten.matmul` decompose
# before dispatch (into t/view + addmm, mm or bmm), so the matmul kernels themselves are listed; the
# math attention path decomposes into bmm + softmax, so its two bmm outputs are kept and the softmax
# is recomputed from the saved scores. Names missing from an older torch are skipped.
_SAVED_OP_NAMES = (
    "mm",
    "addmm",
    "bmm",
    "baddbmm",
    "linear",  # only reaches dispatch on backends that register a fused kernel for it
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention",
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_fused_attention_overrideable",
)


def _default_overloads(names: tuple[str, ...]) -> frozenset[Any]:
    ops = []
    for name in names:
        try:
            ops.append(getattr(torch.ops.aten, name).default)
        except (AttributeError, RuntimeError):  # an op this torch version does not have
            continue
    return frozenset(ops)


SAVED_OPS: frozenset[Any] = _default_overloads(_SAVED_OP_NAMES)
_SAVED_PACKETS = frozenset(op.overloadpacket for op in SAVED_OPS)


def selective_policy(ctx: Any, op: Any, *args: Any, **kwargs: Any) -> CheckpointPolicy:
    """The selective policy: keep the outputs of `SAVED_OPS`, recompute every other op.

    Called by `torch.utils.checkpoint` for each ATen op of a checkpointed block (ctx is its
    `SelectiveCheckpointContext`, unused: the decision depends on the op alone, so the forward and
    the recompute agree on every torch version). `MUST_SAVE` keeps the choice under torch.compile's
    partitioner; `PREFER_RECOMPUTE` lets it save a cheap op's output if that is better.
    """
    if op in SAVED_OPS:
        return CheckpointPolicy.MUST_SAVE
    if getattr(op, "overloadpacket", None) in _SAVED_PACKETS:  # e.g. aten.addmm.out from compiled code
        warnings.warn(
            f"selective checkpointing cannot keep the output of {op} (compiled code called from "
            "outside the checkpoint); it is recomputed as under the 'full' policy",
            stacklevel=2,
        )
    return CheckpointPolicy.PREFER_RECOMPUTE


# A fresh pair of caching contexts (and so a fresh cache) for every checkpointed call.
_selective_contexts = functools.partial(create_selective_checkpoint_contexts, selective_policy)


def check_policy(policy: str) -> None:
    """Raise ValueError unless `policy` is one of `RECOMPUTE_POLICIES`."""
    if policy not in RECOMPUTE_POLICIES:
        raise ValueError(
            f"unknown recompute policy {policy!r}; choose one of {', '.join(RECOMPUTE_POLICIES)}"
        )


def recompute_block(block: Callable[..., Any], *args: Any, policy: str = "full") -> Any:
    """Call `block(*args)` under activation checkpointing with `policy` ("full" or "selective").

    Non-reentrant checkpointing (`use_reentrant=False`): gradients flow to every input and to the
    block's parameters exactly as without checkpointing; only the memory/compute trade changes.

    Args:
        block: what to run, e.g. a DiTBlock's `_forward` (called from its compiled or eager forward).
        *args: its inputs, e.g. tokens (B, N, D), c (B, D), context (B, 2, D).
        policy: "full" keeps only the inputs; "selective" also keeps matmul and attention outputs.

    Returns:
        What `block(*args)` returns, e.g. tokens (B, N, D).
    """
    check_policy(policy)
    if policy == "full":
        return checkpoint(block, *args, use_reentrant=False)
    return checkpoint(block, *args, use_reentrant=False, context_fn=_selective_contexts)
