"""Moving a run's state between the (possibly sharded) live objects and full CPU state dicts.

The same functions serve one process, DDP and FSDP: torch's distributed state-dict API gathers
FSDP shards into full tensors (a collective: every process calls these) and strips DDP's
`module.` prefix, so a checkpoint does not depend on how many processes wrote or read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ditkit import distributed as D
from ditkit.model.dit import DiT, DiTConfig
from ditkit.training.ema import EMA


def gather_state(
    model: nn.Module, raw: nn.Module, optimizer: torch.optim.Optimizer, ema: EMA
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, Any]]:
    """Full model, EMA and optimizer state on the CPU (complete on rank 0).

    Args:
        model: the wrapped model (DDP, FSDP or plain) the optimizer was built on.
        raw: the DiT inside it.
        optimizer: the optimizer.
        ema: the EMA of `raw`.
    """
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_sd: dict[str, torch.Tensor] = get_model_state_dict(model, options=options)  # type: ignore[assignment]
    optim_sd: dict[str, Any] = get_optimizer_state_dict(model, optimizer, options=options)  # type: ignore[assignment]
    ema_sd = {k: v.cpu() for k, v in ema.weights(raw).items()}
    return model_sd, ema_sd, optim_sd


def restore_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer, saved: Mapping[str, Any]) -> None:
    """Load a full optimizer state saved by `gather_state` (sharding it under FSDP).

    The kernel choice (fused / foreach) stays this run's: a checkpoint may move between CPU, GPU
    and FSDP, which support different kernels.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    kernels: list[dict[str, Any]] = [
        {k: g[k] for k in ("fused", "foreach") if k in g} for g in optimizer.param_groups
    ]
    set_optimizer_state_dict(
        model, optimizer, optim_state_dict=dict(saved), options=StateDictOptions(full_state_dict=True)
    )
    for group, chosen in zip(optimizer.param_groups, kernels, strict=True):
        group.update(chosen)


def weights_holder(raw: DiT, config: DiTConfig, model_sd: Mapping[str, torch.Tensor], sharded: bool) -> DiT:
    """A DiT holding the full weights for `save_model`: the live model, or under FSDP a CPU copy."""
    if not sharded:
        return raw
    holder = DiT(config)
    holder.load_state_dict(dict(model_sd))
    return holder


def weights_finite(raw: nn.Module, device: torch.device) -> bool:
    """True if every parameter on every process is finite (all processes call this)."""
    shards = [p.to_local() if hasattr(p, "to_local") else p for p in raw.parameters()]  # FSDP: own shard
    local = all(bool(torch.isfinite(t).all()) for t in shards)
    return not D.any_process(not local, device)
