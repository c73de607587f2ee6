"""Command-line flags built from a config dataclass's fields (names, types, defaults, help, choices).

`add_config_arguments(parser, TrainConfig)` adds one flag per field, described by the field's
`ditkit.options.option(...)` metadata and its docstring entry; `given_config_values(args, TrainConfig)`
reads back only the options the user typed (the flags default to "absent"), so the config's own
defaults apply and a resumed run can tell "given again" from "default".
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING
from typing import Any

from ditkit.cli.formatting import add_hidden_alias
from ditkit.options import docstring_help, field_default, option_spec


def flag_name(name: str) -> str:
    """The default flag of a field: `--global-batch` for `global_batch`."""
    return "--" + name.replace("_", "-")


def key_value(text: str) -> tuple[str, Any]:
    """Parse `KEY=VALUE` (VALUE as JSON when it parses, else the string; dashes in KEY become underscores)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.replace("-", "_"), json.loads(value)
    except ValueError:
        return key.replace("-", "_"), value


def add_model_overrides(parser: argparse.ArgumentParser) -> None:
    """`--set KEY=VALUE`, repeatable, into `args.model_overrides` (a list of pairs): DiTConfig fields that
    a checkpoint does not record, as `ditkit train --set` changes those of a preset."""
    parser.add_argument(
        "--set",
        dest="model_overrides",
        action="append",
        type=key_value,
        default=[],
        metavar="KEY=VALUE",
        help="a DiTConfig field the checkpoint does not record, for an official .pt whose shapes do not "
        "tell: num_heads=16, adaln_shift=false (LightningDiT's wo_shift layout); repeatable",
    )


def show_default(value: Any, flags: tuple[str, ...]) -> str | None:
    """How `--help` shows a default: None (not shown) for None/empty, the flag for booleans."""
    if value is MISSING or value is None or value == {} or value == ():
        return None
    if isinstance(value, bool):
        return flags[0] if value else "--no-" + flags[0].removeprefix("--")
    if isinstance(value, tuple):
        return " ".join(map(str, value))
    return str(value)


def _base_type(annotation: Any) -> Any:
    """`int | None` -> int (a config field that may be left unset)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    return annotation


def _kwargs(annotation: Any, spec_choices: tuple[Any, ...] | None) -> dict[str, Any]:
    """argparse keyword arguments for a field of this type."""
    kind = _base_type(annotation)
    origin = typing.get_origin(kind)
    if kind is bool:
        return {"action": argparse.BooleanOptionalAction}
    if origin is dict:
        return {"action": "append", "type": key_value, "metavar": "KEY=VALUE"}
    if origin in (tuple, list):
        args = [a for a in typing.get_args(kind) if a is not Ellipsis]
        fixed = origin is tuple and Ellipsis not in typing.get_args(kind)
        return {"nargs": len(args) if fixed else "+", "type": args[0] if args else str}
    kwargs: dict[str, Any] = {"type": kind if kind in (int, float, str) else str}
    if spec_choices is not None:
        kwargs["choices"] = spec_choices
    return kwargs


def add_config_arguments(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    skip: tuple[str, ...] = (),
    renamed: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Add a flag for every field of the dataclass `cls` (but `skip` and `cli=False` ones).

    Flags default to `argparse.SUPPRESS` (absent from the namespace unless given); `--help` shows the
    config's default. `renamed` maps old field names to new ones: the old flag parses, hidden. Returns
    the argument groups by title, to add more flags to them.
    """
    old_names = {new: old for old, new in (renamed or {}).items()}
    hints = typing.get_type_hints(cls)
    docs = docstring_help(cls)
    groups: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        spec = option_spec(f)
        if not spec.cli or f.name in skip:
            continue
        if spec.group not in groups:
            groups[spec.group] = parser.add_argument_group(spec.group)
        flags = spec.flags or (flag_name(f.name),)
        kwargs = _kwargs(hints[f.name], spec.choices)
        if spec.metavar:
            kwargs["metavar"] = spec.metavar
        text = (spec.help or docs.get(f.name) or "").replace("%", "%%")
        shown = show_default(field_default(f), flags)
        if shown is not None and not spec.required:  # a required flag has no default to show
            text = f"{text} (default: {shown})".lstrip()
        groups[spec.group].add_argument(
            *flags, dest=f.name, default=argparse.SUPPRESS, required=spec.required, help=text, **kwargs
        )
        if f.name in old_names:
            add_hidden_alias(
                parser, flag_name(old_names[f.name]), f.name, default=argparse.SUPPRESS, **kwargs
            )
    return groups


def given_config_values(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The config fields present in `args` (those typed on the command line), as the config wants them."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not hasattr(args, f.name):
            continue
        value = getattr(args, f.name)
        origin = typing.get_origin(_base_type(hints[f.name]))
        if origin is dict:
            value = dict(value)
        elif origin is tuple:
            value = tuple(value)
        values[f.name] = value
    return values
