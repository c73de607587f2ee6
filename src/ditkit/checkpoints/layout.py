"""The official DiT state-dict layout: recognising it, inferring a config from its shapes, loading it.

The keys are those of facebookresearch/DiT `models.py` (ditkit's `DiT` uses the same names):
`pos_embed`, `x_embedder.proj.*`, `t_embedder.mlp.{0,2}.*`, `y_embedder.embedding_table.weight`,
`blocks.N.{attn.qkv, attn.proj, mlp.fc1, mlp.fc2, adaLN_modulation.1}.*`, `final_layer.*`.
LightningDiT's files (hustvl/LightningDiT `models/lightningdit.py`) use the same names and add
`blocks.N.norm{1,2}.weight` and `final_layer.norm_final.weight` (RMSNorm), `blocks.N.mlp.{w12,w3}.*`
(SwiGLU), `blocks.N.attn.{q,k}_norm.*` (QK-norm) and `feat_rope.freqs_{cos,sin}` (rotary angles).
Everything in a `DiTConfig` can be read from the tensor shapes except the number of attention
heads (and, for a non-square grid, the input's aspect ratio); those come from a hint or an override,
or for the heads from LightningDiT's saved rotary angles, one column per feature of a head.
One layout is ambiguous: a block modulation 4 x hidden wide is DiT's `adaln` design (shift and scale)
or LightningDiT's adaLN-Zero without shift (scale and gate); such a file is refused until the
caller says which (`block` or `adaln_shift`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ditkit.errors import UserError
from ditkit.model.cost import swiglu_hidden
from ditkit.model.dit import DiT, DiTConfig
from ditkit.model.presets import SIZES, is_lightning, preset_of

StateDict = dict[str, torch.Tensor]

# Keys without which a state dict cannot be a DiT (checked before anything else).
REQUIRED_KEYS = (
    "x_embedder.proj.weight",
    "pos_embed",
    "t_embedder.mlp.0.weight",
    "blocks.0.attn.qkv.weight",
    "final_layer.linear.weight",
)
# The first MLP layer's key, one of which must be there: DiT's GELU MLP or LightningDiT's SwiGLU.
MLP_KEYS = {"mlp": "blocks.0.mlp.fc1.weight", "swiglu": "blocks.0.mlp.w12.weight"}
# LightningDiT's saved rotary angles: derived from the config, checked against it and dropped on load.
ROPE_KEYS = ("feat_rope.freqs_cos", "feat_rope.freqs_sin")
# Head width of the paper's S, B and L models (Table 1: hidden size / heads = 64); the fallback
# guess for the number of heads, which no tensor shape records.
DEFAULT_HEAD_DIM = 64
# Prefixes added by DistributedDataParallel and torch.compile around a model's own keys.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# How many offending key names an error message lists before "...".
SHOWN_KEYS = 4

_BLOCK_INDEX = re.compile(r"^blocks\.(\d+)\.")


def _list_keys(keys: list[str]) -> str:
    shown = ", ".join(keys[:SHOWN_KEYS])
    return shown + (f" (+{len(keys) - SHOWN_KEYS} more)" if len(keys) > SHOWN_KEYS else "")


def strip_wrappers(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Remove DDP / torch.compile prefixes ("module.", "_orig_mod.") shared by every key."""
    sd = dict(state_dict)
    for prefix in WRAPPER_PREFIXES:
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix) :]: v for k, v in sd.items()}
    return sd


def check_is_dit(state_dict: Mapping[str, Any], source: str) -> None:
    """Raise a one-line UserError unless `state_dict` holds DiT tensors under the official keys."""
    missing = [k for k in REQUIRED_KEYS if not isinstance(state_dict.get(k), torch.Tensor)]
    if not any(isinstance(state_dict.get(k), torch.Tensor) for k in MLP_KEYS.values()):
        missing.append(" or ".join(MLP_KEYS.values()))
    if missing:
        found = _list_keys(sorted(state_dict)) if state_dict else "nothing"
        raise UserError(
            f"{source} has no DiT weights: missing keys {_list_keys(missing)} (found {found}); "
            "is this a DiT checkpoint?"
        )


def block_design(
    state_dict: Mapping[str, torch.Tensor], hidden_size: int, overrides: Mapping[str, Any] | None = None
) -> tuple[str, bool]:
    """The conditioning design of the blocks and whether their adaLN has a shift, read from block 0.

    The modulation's width tells 6 (adaLN-Zero) and 2 (adaLN without shift) vectors apart; 4 vectors
    are DiT's `adaln` or LightningDiT's adaLN-Zero without shift, which only `block` or `adaln_shift`
    in `overrides` decides (UserError without either).
    """
    overrides = overrides or {}
    mod = state_dict.get("blocks.0.adaLN_modulation.1.weight")
    if mod is not None:
        vectors = mod.shape[0] // hidden_size
        if vectors == 6:
            return "adaln-zero", True
        if vectors == 2:
            return "adaln", False
        if "block" in overrides:
            return str(overrides["block"]), overrides["block"] != "adaln-zero"
        if "adaln_shift" in overrides:
            shift = bool(overrides["adaln_shift"])
            return ("adaln" if shift else "adaln-zero"), shift
        raise UserError(
            "the blocks regress 4 modulation vectors: DiT's 'adaln' blocks (shift and scale) or "
            "LightningDiT's adaLN-Zero without shift (scale and gate, wo_shift); say which with "
            "--set adaln_shift=false (LightningDiT) or --set block=adaln (in Python "
            "config={'adaln_shift': False} or config={'block': 'adaln'})"
        )
    if "blocks.0.cross_attn.q.weight" in state_dict:
        return "cross-attention", True
    return "in-context", True


def swiglu_ratio(hidden_size: int, swiglu_width: int) -> float:
    """The mlp_ratio of the MLP whose SwiGLU is `swiglu_width` wide (int(2/3 * mlp_hidden) rounds down,
    so a few MLP widths give the same SwiGLU; a whole multiple of hidden_size is preferred)."""
    low = math.ceil(swiglu_width * 3 / 2) - 1
    candidates = [m for m in range(low, low + 4) if swiglu_hidden(m) == swiglu_width]
    whole = [m for m in candidates if m % hidden_size == 0]
    if not candidates:
        raise UserError(f"a SwiGLU {swiglu_width} wide fits no MLP width; pass mlp_ratio (config={{...}})")
    return (whole or candidates)[0] / hidden_size


def block_options(
    state_dict: Mapping[str, torch.Tensor], hidden_size: int, overrides: Mapping[str, Any]
) -> dict[str, Any]:
    """The DiTConfig fields of the blocks read from block 0's keys: design, norm, MLP and LightningDiT's
    options (`block`, `adaln_shift`, `norm`, `mlp`, `mlp_ratio`, `qk_norm`, `rope`)."""
    block, shift = block_design(state_dict, hidden_size, overrides)
    fields: dict[str, Any] = dict(
        block=block,
        adaln_shift=shift,
        norm="rmsnorm" if "blocks.0.norm1.weight" in state_dict else "layernorm",
        qk_norm="blocks.0.attn.q_norm.weight" in state_dict,
        rope=ROPE_KEYS[0] in state_dict,
    )
    if MLP_KEYS["swiglu"] in state_dict:
        fields.update(
            mlp="swiglu", mlp_ratio=swiglu_ratio(hidden_size, state_dict["blocks.0.mlp.w3.weight"].shape[1])
        )
    else:
        fields.update(mlp="mlp", mlp_ratio=state_dict[MLP_KEYS["mlp"]].shape[0] / hidden_size)
    return fields


def guess_num_heads(depth: int, hidden_size: int) -> tuple[int, str]:
    """Heads for a (depth, hidden) pair: the preset's if one matches, else hidden / 64. Also a note."""
    for size, (d, h, heads) in SIZES.items():
        if (d, h) == (depth, hidden_size):
            return (
                heads,
                f"num_heads={heads} taken from the DiT-{size} preset (heads are not stored in the file)",
            )
    if hidden_size % DEFAULT_HEAD_DIM == 0:
        heads = hidden_size // DEFAULT_HEAD_DIM
        return heads, (
            f"num_heads={heads} guessed as hidden/{DEFAULT_HEAD_DIM} (no preset has depth {depth}, hidden "
            f"{hidden_size}); pass num_heads if the model was trained with another value"
        )
    raise UserError(
        f"cannot tell the number of attention heads of a DiT with depth {depth} and hidden size {hidden_size}; "
        "pass it explicitly (--set num_heads=N, or config={'num_heads': N} in Python)"
    )


def _input_size(tokens: int, patch: int, overrides: Mapping[str, Any]) -> int | tuple[int, int]:
    if "input_size" in overrides:
        return overrides["input_size"]  # type: ignore[no-any-return]
    side = math.isqrt(tokens)
    if side * side != tokens:
        raise UserError(
            f"the position embedding has {tokens} tokens, not a square grid; pass the input size "
            "(--input-size H W, or config={'input_size': (H, W)})"
        )
    return side * patch


def infer_config(
    state_dict: Mapping[str, torch.Tensor],
    overrides: Mapping[str, Any] | None = None,
    num_heads_hint: int | None = None,
    num_classes_hint: int | None = None,
) -> tuple[DiTConfig, list[str]]:
    """Infer the `DiTConfig` of an official-layout state dict from its tensor shapes.

    Args:
        state_dict: official-layout tensors (`check_is_dit` passed).
        overrides: config fields that win over what is inferred (e.g. num_heads, input_size,
            class_dropout_prob); they must agree with the shapes.
        num_heads_hint: heads known from elsewhere (e.g. the training arguments' model name).
        num_classes_hint: classes known from elsewhere (the training arguments' --num-classes).

    Returns:
        The config and notes saying which fields were guessed.
    """
    overrides = dict(overrides or {})
    hidden, in_channels, patch, patch_w = state_dict["x_embedder.proj.weight"].shape  # (D, C, p, p)
    if patch != patch_w:
        raise UserError(
            f"the patch embedding has non-square {patch}x{patch_w} kernels; DiT patches are square"
        )
    depth = 1 + max(int(m.group(1)) for k in state_dict if (m := _BLOCK_INDEX.match(k)))
    out_channels = state_dict["final_layer.linear.weight"].shape[0] // (patch * patch)
    if out_channels not in (in_channels, 2 * in_channels):
        raise UserError(
            f"the final layer predicts {out_channels} channels for {in_channels} input channels; "
            "a DiT predicts C (fixed sigma) or 2C (learned sigma)"
        )
    table = state_dict.get("y_embedder.embedding_table.weight")
    notes: list[str] = []
    rope_angles = state_dict.get(ROPE_KEYS[0])  # LightningDiT saves them: (tokens, head size)
    if "num_heads" in overrides:
        heads = int(overrides["num_heads"])
    elif num_heads_hint is not None:
        heads = num_heads_hint
    elif rope_angles is not None and rope_angles.ndim == 2 and hidden % rope_angles.shape[-1] == 0:
        heads = hidden // rope_angles.shape[-1]
    else:
        heads, note = guess_num_heads(depth, hidden)
        notes.append(note)
    fields: dict[str, Any] = dict(
        input_size=_input_size(state_dict["pos_embed"].shape[1], patch, overrides),
        patch_size=patch,
        in_channels=in_channels,
        hidden_size=hidden,
        depth=depth,
        num_heads=heads,
        num_classes=0,
        learn_sigma=out_channels == 2 * in_channels,
        interval_embedding="h_embedder.mlp.0.weight" in state_dict,  # MeanFlow's second time embedding
        **block_options(state_dict, hidden, overrides),
    )
    if table is not None:
        classes, null_row, label_note = label_table_classes(
            table.shape[0], overrides.get("num_classes", num_classes_hint)
        )
        fields.update(num_classes=classes, null_class_row=null_row)
        if not null_row:
            fields["class_dropout_prob"] = 0.0  # trained without label dropout: nothing to drop to
        notes += [label_note] if label_note else []
    fields.update(overrides)
    if fields["num_classes"] == 1 and table is not None:
        raise UserError("the label table has 2 rows (1 class + null); ditkit treats 1 class as unconditional")
    try:
        config = DiTConfig(**fields)
    except (TypeError, ValueError) as err:
        raise UserError(f"cannot build a DiT config from this checkpoint: {err}") from None
    if config.name is None:
        config.name = preset_of(
            config.depth,
            config.hidden_size,
            config.num_heads,
            config.patch_size,
            lightning=is_lightning(config),
        )
    return config, notes


def label_table_classes(rows: int, num_classes: int | None) -> tuple[int, bool, str | None]:
    """Classes of a label table with `rows` rows, whether it has the null-class row, and a note.

    The official code builds `nn.Embedding(num_classes + (dropout > 0), D)`: the null-class row of
    guidance exists only when the model was trained with label dropout. With the class count known
    (training arguments, --num-classes) the table says which; without it, the row is assumed, as in
    every released DiT, and the note says so.
    """
    if num_classes is not None:
        num_classes = int(num_classes)
        if rows in (num_classes, num_classes + 1):
            return num_classes, rows == num_classes + 1, None
        raise UserError(
            f"the label table has {rows} rows, neither {num_classes} classes nor {num_classes} + the null "
            f"class; pass the right class count (--num-classes, config={{'num_classes': N}})"
        )
    note = (
        f"assumed the last of the {rows} label rows is the null class (as when trained with label dropout): "
        f"{rows - 1} classes; for a model trained without dropout pass --num-classes {rows} "
        f"(config={{'num_classes': {rows}}})"
    )
    return rows - 1, True, note


def build_model(config: DiTConfig, state_dict: Mapping[str, torch.Tensor], source: str) -> DiT:
    """A DiT of `config` holding `state_dict` (strict: every key and shape must match), in eval mode."""
    try:
        model = DiT(config)
    except ValueError as err:
        raise UserError(f"invalid DiT config for {source}: {err}") from None
    state_dict = _without_rope_angles(model, state_dict, source)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {_list_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_list_keys(unexpected)}")
    if wrong:
        problems.append(f"wrong shapes {_list_keys(wrong)} (file vs config)")
    if problems:
        raise UserError(f"{source} does not fit a {_describe(config)}: {'; '.join(problems)}")
    model.load_state_dict(dict(state_dict), strict=True)
    return model.eval()


def _without_rope_angles(
    model: DiT, state_dict: Mapping[str, torch.Tensor], source: str
) -> Mapping[str, torch.Tensor]:
    """`state_dict` without LightningDiT's saved rotary angles, once they are checked against the model's."""
    if not any(k in state_dict for k in ROPE_KEYS) or not model.config.rope:
        return state_dict
    ours = model.feat_rope()
    for key, mine in zip(ROPE_KEYS, ours, strict=True):
        theirs = state_dict.get(key)
        if (
            theirs is None
            or theirs.shape != mine.shape
            or not torch.allclose(theirs.float(), mine, atol=1e-5)
        ):
            raise UserError(
                f"{source}: the stored rotary angles {key} are not those of a {model.grid_hw[0]}x{model.grid_hw[1]} "
                f"grid with head size {mine.shape[-1]}; check input_size, patch_size and num_heads"
            )
    return {k: v for k, v in state_dict.items() if k not in ROPE_KEYS}


def _describe(config: DiTConfig) -> str:
    h, w = config.size_hw
    return (
        f"DiT (depth {config.depth}, hidden {config.hidden_size}, patch {config.patch_size}, "
        f"input {h}x{w}x{config.in_channels}, {config.num_classes} classes, {config.block})"
    )


@dataclass
class RawCheckpoint:
    """What a reader found in a checkpoint, before a model is built.

    Attributes:
        kind: "ditkit", "official" or "diffusers".
        source: the path, for messages.
        weights: weight-set name ("ema", "model" or "weights" for an unnamed single set) -> a
            function that reads that set's official-layout state dict (sets are read on demand).
        config: the stored config, or None when it must be inferred from the tensor shapes.
        extra: plain data stored beside the weights (first stage, diffusion settings, class names...).
        notes: what the reader had to assume or could not carry over, for the user to see.
        num_heads_hint: heads known from the file's metadata when the config is inferred.
        num_classes_hint: classes known from the file's metadata (official training arguments).
    """

    kind: str
    source: str
    weights: dict[str, Callable[[], StateDict]]
    config: DiTConfig | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    num_heads_hint: int | None = None
    num_classes_hint: int | None = None


def in_memory(state_dict: StateDict) -> Callable[[], StateDict]:
    """A weight-set reader for tensors already in memory."""
    return lambda: state_dict
