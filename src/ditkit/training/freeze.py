"""Which parameters a fine-tuning run leaves untouched (`ditkit train --freeze`).

Frozen parameters get `requires_grad=False` before the model is wrapped, so DDP and the optimizer
never see them: they keep their loaded values bit for bit, and the optimizer holds no state for them.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

import torch
from torch import nn

from ditkit.choices import FREEZE_PRESETS
from ditkit.errors import UserError
from ditkit.model.dit import DiT, DiTConfig

# What `all-but-adaln` trains: the blocks' adaLN modulations and the final layer (its own modulation
# and the output projection); everything else keeps the checkpoint's values.
ADALN_TRAINED = ("blocks.*.adaLN_modulation.*", "final_layer.*")


def _matches(name: str, pattern: str) -> bool:
    """A parameter matches a module pattern when the name, or one of its dotted prefixes, does."""
    parts = name.split(".")
    return any(fnmatch.fnmatchcase(".".join(parts[:i]), pattern) for i in range(1, len(parts) + 1))


def frozen_names(names: Iterable[str], spec: str) -> list[str]:
    """The parameter names `spec` freezes (see `TrainConfig.freeze`), in the given order.

    Raises:
        UserError: a part of `spec` that names no parameter, or a preset the model cannot follow.
    """
    names = list(names)
    frozen: set[str] = set()
    for part in (p.strip() for p in spec.split(",")):
        if part == "all-but-adaln":
            trained = {n for n in names if any(fnmatch.fnmatchcase(n, p) for p in ADALN_TRAINED)}
            if not any(".adaLN_modulation." in n for n in trained):
                raise UserError(
                    "--freeze all-but-adaln trains the blocks' adaLN modulations, and this model's blocks "
                    "have none (block design in-context or cross-attention); name the modules to freeze"
                )
            frozen |= set(names) - trained
            continue
        hit = {n for n in names if _matches(n, part)}
        if not hit:
            tops = sorted({n.split(".")[0] for n in names})
            raise UserError(
                f"--freeze {part}: no parameter is named so; name modules such as {', '.join(tops)}, "
                f"blocks.0 or blocks.*.attn, or use {' or '.join(FREEZE_PRESETS)}"
            )
        frozen |= hit
    return [n for n in names if n in frozen]


def apply_freeze(model: nn.Module, spec: str | None) -> tuple[int, int]:
    """Freeze the parameters `spec` names (none for None); returns (trainable, total) parameter counts."""
    if spec is not None:
        frozen = set(frozen_names((n for n, _ in model.named_parameters()), spec))
        for name, param in model.named_parameters():
            if name in frozen:
                param.requires_grad_(False)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


def frozen_count(config: DiTConfig, spec: str | None) -> int:
    """How many parameters `spec` takes out of training in a model of `config` (the fixed positions,
    never trained, are not counted), before the model is built (on the meta device: no memory, no
    initialisation work).

    Raises:
        UserError: a --freeze that names nothing in such a model (see `frozen_names`).
    """
    if spec is None:
        return 0
    with torch.device("meta"):
        params = dict(DiT(config).named_parameters())
    return sum(params[name].numel() for name in frozen_names(params, spec) if params[name].requires_grad)


def check_freeze(config: DiTConfig, spec: str | None) -> None:
    """Refuse a --freeze that names nothing in a model of `config`, before the model is built."""
    frozen_count(config, spec)


def freeze_lines(model: nn.Module, spec: str | None, fresh: Iterable[str] = ()) -> list[str]:
    """Freeze what `spec` names; the report's lines: what trains, and fresh tensors left frozen."""
    if spec is None:
        return []
    trainable, total = apply_freeze(model, spec)
    lines = [f"training {trainable:,} of {total:,} parameters (--freeze {spec})"]
    params = dict(model.named_parameters())
    stuck = [name for name in fresh if name in params and not params[name].requires_grad]
    if stuck:
        lines.append(f"warning: --freeze keeps newly initialised {', '.join(stuck)} at their initial values")
    return lines
