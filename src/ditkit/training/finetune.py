"""Starting a new run from a checkpoint's weights (`ditkit train --init`).

Any checkpoint the one loader reads (ditkit's, official and SiT .pt files, diffusers folders) can start
a run. Its weights are fitted to the run's model, tensor by tensor:

- loaded: same name and shape;
- resized: the label table for another class count (rows copied as `--init-class-map` says, the null
  row of guidance carried over, other rows drawn as DiT draws them: normal, std 0.02), and the fixed
  sin-cos positions for another grid (recomputed);
- new: tensors the checkpoint lacks keep the fresh model's values (MeanFlow's `h_embedder`, whose
  output layer starts at zero, so the model starts equal to the flow model it came from);
- dropped: tensors the run's model has no place for.

What cannot match (patch size, width, depth, heads, block design, channels) is refused in one line
naming the option that would fit, before the model is built (`check_fits`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ditkit.checkpoints.digest import weights_sha256
from ditkit.checkpoints.layout import RawCheckpoint, StateDict
from ditkit.checkpoints.loader import choose_weights, read_checkpoint, resolve_config
from ditkit.errors import UserError
from ditkit.model.dit import DiT, DiTConfig
from ditkit.training.class_map import class_rows
from ditkit.training.config import TrainConfig

LABEL_TABLE = "y_embedder.embedding_table.weight"
POS_EMBED = "pos_embed"
# The bias of the time embedding's output layer, to which an unconditional run adds the checkpoint's
# null-class row: with adaLN blocks the model then starts as the checkpoint's unguided prediction.
TIME_OUT_BIAS = "t_embedder.mlp.2.bias"
# DiTConfig fields a checkpoint's weights must share with the run's model (shapes, or what they mean:
# heads split the same matrices differently).
FITTING_FIELDS = ("patch_size", "hidden_size", "depth", "num_heads", "mlp_ratio", "block", "learn_sigma")
# How many copied label rows the report lists before "...".
SHOWN_ROWS = 6


@dataclass
class InitSource:
    """A checkpoint read for `--init`: what it is, its config and the chosen weight set.

    Attributes:
        path: the path as given.
        raw: what the loader read (weights are read on demand for folders).
        weights: the weight set chosen ("ema", "model" or "weights" for a file holding one set).
        config: the checkpoint's DiTConfig (stored, or inferred from the tensor shapes).
        notes: what the loader had to assume (e.g. the number of heads).
    """

    path: str
    raw: RawCheckpoint
    weights: str
    config: DiTConfig
    notes: list[str] = field(default_factory=list)

    def state_dict(self) -> StateDict:
        return self.raw.weights[self.weights]()

    def record(self, digest: str) -> dict[str, Any]:
        """Plain data a run started from this checkpoint keeps in its checkpoints' extra ("init")."""
        return {
            "path": self.path,
            "source": self.raw.source,
            "kind": self.raw.kind,
            "weights": self.weights,
            "sha256": digest,
        }


def read_init_source(path: str, which: str) -> InitSource:
    """Read the checkpoint `path` and its config; the weights of a folder are not read yet."""
    raw = read_checkpoint(path)
    name = choose_weights(raw, which)
    if raw.config is not None:
        return InitSource(path, raw, name, raw.config, list(raw.notes))
    config, notes = resolve_config(raw, raw.weights[name](), None)
    return InitSource(path, raw, name, config, raw.notes + notes)


def _fix(name: str, value: Any) -> str:
    if name == "learn_sigma":
        return "--learn-sigma" if value else "--no-learn-sigma"
    return f"--set {name}={value if isinstance(value, str) else json.dumps(value)}"


def _is_preset(config: DiTConfig) -> bool:
    """Whether `config` has its preset's shape (not a preset changed by --set)."""
    from ditkit.model.presets import PRESETS, get_config

    if config.name not in PRESETS:
        return False
    preset = get_config(config.name)
    return all(getattr(preset, n) == getattr(config, n) for n in FITTING_FIELDS if n != "learn_sigma")


def check_fits(source: InitSource, target: DiTConfig, preset: str) -> None:
    """Raise a one-line UserError unless the checkpoint's weights fit a model of `target`.

    Args:
        source: the checkpoint.
        target: the run's model config (before the data is opened: the preset and overrides on the
            checkpoint's input shape, see `preflight`).
        preset: the run's --model, for the message.
    """
    src = source.config
    differ = [n for n in (*FITTING_FIELDS, "in_channels") if getattr(src, n) != getattr(target, n)]
    if not differ:
        return
    what = ", ".join(f"{n} {getattr(src, n)} (this run: {getattr(target, n)})" for n in differ)
    if differ == ["in_channels"]:
        stage = source.raw.extra.get("first_stage") or {}
        named = f" ({stage['source']})" if isinstance(stage, dict) and stage.get("source") else ""
        fix = (
            f"train on the latents of the checkpoint's {src.in_channels}-channel first stage{named}: "
            "--first-stage, or a cache made by `ditkit prepare` with it"
        )
    else:
        sets = " ".join(_fix(n, getattr(src, n)) for n in differ if n != "in_channels")
        fix = f"use {sets}"
        if src.name is not None and src.name != preset and _is_preset(src):
            fix = f"use --model {src.name} (or {sets})"
    raise UserError(f"cannot start from {source.path}: {what}; {fix}")


@dataclass
class InitReport:
    """What `fit_weights` did with each tensor, for the one-screen report."""

    loaded: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    loaded_params: int = 0
    total_params: int = 0

    def lines(self, source: InitSource, digest: str) -> list[str]:
        where = (
            source.path
            if Path(source.path) == Path(source.raw.source)
            else f"{source.path}: {source.raw.source}"
        )
        head = f"starting from {where} ({source.raw.kind}, {source.weights} weights, sha256 {digest[:16]}...)"
        out = [
            head,
            f"  loaded: {len(self.loaded)} tensors ({self.loaded_params:,} of {self.total_params:,} parameters)",
        ]
        out += [f"  resized: {line}" for line in self.resized]
        if self.new:
            out.append(f"  new (initialised as a fresh DiT): {_modules(self.new)}")
        if self.dropped:
            out.append(f"  dropped (no place in this model): {_modules(self.dropped)}")
        out += [f"  note: {note}" for note in source.notes + self.notes]
        return out


def _modules(keys: list[str]) -> str:
    """`h_embedder (4 tensors), y_embedder (1 tensor)`: keys grouped by their top-level module."""
    groups: dict[str, int] = {}
    for key in keys:
        top = key.split(".")[0]
        groups[top] = groups.get(top, 0) + 1
    return ", ".join(f"{top} ({n} tensor{'s' if n > 1 else ''})" for top, n in groups.items())


def fit_weights(
    source: Mapping[str, torch.Tensor],
    source_config: DiTConfig,
    fresh: Mapping[str, torch.Tensor],
    target: DiTConfig,
    rows: dict[int, int] | None = None,
) -> tuple[StateDict, InitReport]:
    """The run's starting state dict: the checkpoint's tensors fitted to a fresh model's.

    Args:
        source: the checkpoint's state dict (official keys).
        source_config: its config.
        fresh: the run's freshly initialised state dict (its new rows and tensors come from here).
        target: the run's model config.
        rows: {new label: source label} for the label table (None: the same labels when the class
            counts agree, else no row copied).

    Returns:
        The state dict to load and the report of what was loaded, resized, new and dropped.
    """
    report = InitReport()
    out: StateDict = {}
    for key, value in fresh.items():
        report.total_params += value.numel()
        src = source.get(key)
        if key == LABEL_TABLE and src is not None:
            out[key] = _label_table(src, source_config, value, target, rows, report)
        elif src is None:
            out[key] = value.clone()
            report.new.append(key)
        elif src.shape != value.shape:
            if key != POS_EMBED:  # check_fits refuses every other mismatch first
                raise UserError(
                    f"{key} has shape {tuple(src.shape)} in the checkpoint, {tuple(value.shape)} in this model"
                )
            out[key] = value.clone()
            h, w = target.size_hw
            report.resized.append(
                f"pos_embed: {src.shape[1]} -> {value.shape[1]} positions, the fixed sin-cos table "
                f"recomputed for {h}x{w} inputs"
            )
        else:
            out[key] = src.detach().to(value.dtype, copy=True)
            report.loaded.append(key)
            report.loaded_params += value.numel()
    report.dropped = [k for k in source if k not in fresh]
    if LABEL_TABLE in source and LABEL_TABLE not in fresh:
        _fold_null_row(source[LABEL_TABLE], source_config, out, target, report)
    if LABEL_TABLE in fresh and LABEL_TABLE not in source:
        report.notes.append("the checkpoint is unconditional: the label table starts as a fresh DiT's")
    return out, report


def _label_table(
    src: torch.Tensor,
    source_config: DiTConfig,
    fresh: torch.Tensor,
    target: DiTConfig,
    rows: dict[int, int] | None,
    report: InitReport,
) -> torch.Tensor:
    """The new label table (classes + null row): mapped rows copied, the null row carried over, the
    rest the fresh model's (DiT.initialize_weights: normal, std 0.02)."""
    n_src, n_new = source_config.num_classes, target.num_classes
    same = rows is None and n_src == n_new
    mapping = {i: i for i in range(n_new)} if same else dict(rows or {})
    table = fresh.clone()
    for new, old in mapping.items():
        table[new] = src[old]
    src_null = source_config.null_class_row and src.shape[0] == n_src + 1
    new_null = target.null_class_row
    if new_null and src_null:
        table[n_new] = src[n_src]
    if same and new_null == src_null:
        report.loaded.append(LABEL_TABLE)
        report.loaded_params += table.numel()
        return table
    shown = ", ".join(f"{new}<-{old}" for new, old in list(mapping.items())[:SHOWN_ROWS])
    shown += ", ..." if len(mapping) > SHOWN_ROWS else ""
    null = (
        "the null row carried over"
        if new_null and src_null
        else "a new null row (the checkpoint has none: guidance starts untrained)"
        if new_null
        else "no null row"
    )
    report.resized.append(
        f"{LABEL_TABLE}: {src.shape[0]} -> {table.shape[0]} rows: {len(mapping)} copied"
        + (f" ({shown})" if mapping else "")
        + f", {n_new - len(mapping)} new (normal, std 0.02), {null}"
    )
    return table


def _fold_null_row(
    src: torch.Tensor, source_config: DiTConfig, out: StateDict, target: DiTConfig, report: InitReport
) -> None:
    """An unconditional run keeps the checkpoint's null-class row as its only "class": added to the time
    embedding's output bias, where every adaLN block reads t + y."""
    n_src = source_config.num_classes
    if not (source_config.null_class_row and src.shape[0] == n_src + 1):
        report.notes.append("the checkpoint has no null row (trained without label dropout) to keep")
        return
    out[TIME_OUT_BIAS] = out[TIME_OUT_BIAS] + src[n_src].to(out[TIME_OUT_BIAS].dtype)
    report.loaded.remove(TIME_OUT_BIAS)  # counted as resized instead
    report.loaded_params -= out[TIME_OUT_BIAS].numel()
    exact = "" if target.block in ("adaln-zero", "adaln") else " (exact for adaLN blocks only)"
    report.resized.append(
        f"{TIME_OUT_BIAS}: the null-class row added, so the unconditional model starts as the "
        f"checkpoint's unguided one{exact}"
    )


@dataclass
class InitPlan:
    """What a new run takes from its --init checkpoint, checked against the run's model and data.

    Attributes:
        source: the checkpoint.
        rows: the label rows `--init-class-map` copies ({new label: source label}), or None.
        weights: the checkpoint's chosen weight set (released once loaded into the model).
        digest: their sha256 (`weights_sha256`).
    """

    source: InitSource
    rows: dict[int, int] | None
    weights: StateDict
    digest: str
    notes: list[str] = field(default_factory=list)

    def start(
        self, model: DiT, config: TrainConfig, echo: Callable[[str], None]
    ) -> tuple[dict[str, Any], list[str]]:
        """Load the fitted weights into the fresh `model`, record their sha256 in `config.init_digest`
        and echo the report; returns the checkpoints' "init" record and the names of the new tensors."""
        fitted, report = fit_weights(
            self.weights, self.source.config, model.state_dict(), model.config, self.rows
        )
        model.load_state_dict(fitted)
        self.weights = {}  # the model holds them now
        report.notes += self.notes
        config.init_digest = self.digest
        theirs = self.source.raw.extra.get("objective")
        if isinstance(theirs, str) and theirs != config.objective:
            report.notes.append(
                f"the checkpoint was trained with --objective {theirs}, this run: {config.objective}"
            )
        for line in report.lines(self.source, self.digest):
            echo(line)
        return self.source.record(self.digest), report.new


def plan_init(
    source: InitSource, target: DiTConfig, config: TrainConfig, class_names: Sequence[str]
) -> InitPlan:
    """Refuse, before the model is built, a checkpoint that cannot fit the run's model (now that the
    data set its channels), a class map that cannot work, or weights whose sha256 is not the
    `--init-digest` given; reads the weights."""
    check_fits(source, target, config.model)
    rows = class_rows(config.init_class_map, class_names, source.config, source.raw.extra, source.path)
    weights = source.state_dict()
    digest = weights_sha256(weights)
    expected = config.init_digest
    if expected is not None and digest != expected:
        raise UserError(
            f"the weights of {source.path} have sha256 {digest[:16]}..., not the {expected[:16]}... that "
            "--init-digest (or the run's train_config.json) expects: the checkpoint changed; start from the "
            "one that has them, or a new run without --init-digest"
        )
    return InitPlan(source, rows, weights, digest, _renamed_classes(source, target, config, class_names))


def _renamed_classes(
    source: InitSource, target: DiTConfig, config: TrainConfig, class_names: Sequence[str]
) -> list[str]:
    """A note when the label table is copied row by row (same class count, no map) although the
    checkpoint names its classes otherwise: Sandal would start from T-shirt's row."""
    theirs = source.raw.extra.get("class_names")
    if config.init_class_map is not None or source.config.num_classes != target.num_classes:
        return []
    if not isinstance(theirs, list) or list(theirs) == list(class_names) or not target.conditional:
        return []
    return [
        f"the label table is copied row by row, but the checkpoint's classes are named otherwise "
        f"({class_names[0]!r} starts from {theirs[0]!r}); to start them fresh pass --init-class-map "
        "with a file holding {}, or map them by name"
    ]


def recorded_init(checkpoint: str | Path, config: TrainConfig) -> dict[str, Any] | None:
    """The "init" record of a run's checkpoint (where the run started), or None; a config without
    the weights' digest (options given again in Python) takes the recorded one."""
    from ditkit.checkpoints.native import CONFIG_FILE

    try:
        header = json.loads((Path(checkpoint) / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    record = header.get("extra", {}).get("init") if isinstance(header, dict) else None
    if not isinstance(record, dict):
        return None
    if config.init_digest is None:
        config.init_digest = record.get("sha256")
    return record
