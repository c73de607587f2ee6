"""Command-line metadata of config dataclasses, declared on the fields themselves.

A config dataclass (such as `TrainConfig`) is the one source of truth for its options: the CLI builds
its flags from the fields (`ditkit.cli.config_flags`), so names, types, defaults, help and choices
cannot drift. To add an option, add a field:

    objective: str = option("eps", choices=OBJECTIVES, group="diffusion")

and document it in the class docstring's `Attributes:` section; that text is the flag's `--help`
(or pass `help=` to word it differently). Without `option(...)` a plain field still gets a flag
(`--objective`, typed from its annotation, in the "other" group). `option` arguments:

- choices: allowed values (a tuple from `ditkit.choices`); the config's `check()` and argparse both
  enforce them.
- flags: the flag names, first shown (default `--field-name`).
- group: the `--help` section; metavar: the value's placeholder; required: the CLI insists on it.
- cli=False: no flag (set from Python or from another flag).

This module imports nothing heavy: the CLI reads it to build `--help` without loading torch.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import MISSING
from typing import Any, TypeVar

T = TypeVar("T")

# Key of the `OptionSpec` in a dataclass field's metadata.
OPTION_KEY = "ditkit.option"
DEFAULT_GROUP = "other"


@dataclasses.dataclass(frozen=True)
class OptionSpec:
    """How a config field appears on the command line (see the module docstring)."""

    help: str | None = None
    choices: tuple[Any, ...] | None = None
    flags: tuple[str, ...] = ()
    group: str = DEFAULT_GROUP
    metavar: str | tuple[str, ...] | None = None
    required: bool = False
    cli: bool = True


def option(
    default: Any = MISSING,
    *,
    default_factory: Any = MISSING,
    help: str | None = None,  # noqa: A002  # argparse's own word
    choices: tuple[Any, ...] | None = None,
    flags: tuple[str, ...] = (),
    group: str = DEFAULT_GROUP,
    metavar: str | tuple[str, ...] | None = None,
    required: bool = False,
    cli: bool = True,
) -> Any:
    """A dataclass field carrying its command-line metadata (an `OptionSpec`)."""
    spec = OptionSpec(
        help=help,
        choices=tuple(choices) if choices is not None else None,
        flags=tuple(flags),
        group=group,
        metavar=metavar,
        required=required,
        cli=cli,
    )
    return dataclasses.field(default=default, default_factory=default_factory, metadata={OPTION_KEY: spec})


def option_spec(f: dataclasses.Field) -> OptionSpec:
    """The field's `OptionSpec` (defaults for a plain field)."""
    return f.metadata.get(OPTION_KEY) or OptionSpec()


def field_default(f: dataclasses.Field) -> Any:
    """The field's default value (a fresh one for `default_factory` fields); MISSING if it has none."""
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def check_choices(config: Any) -> None:
    """Raise UserError for a field whose value is not among its declared choices."""
    from ditkit.errors import UserError

    for f in dataclasses.fields(config):
        choices = option_spec(f).choices
        value = getattr(config, f.name)
        if choices is not None and value is not None and value not in choices:
            what = f.name.replace("_", " ")
            raise UserError(f"unknown {what} {value!r}; choose one of {', '.join(map(str, choices))}")


def from_record(
    cls: type[T], record: Mapping[str, Any], unknown: str, error: type[Exception] | None = None
) -> T:
    """`cls(**record)` for a config dataclass's `from_dict`, refusing keys that are not its fields.

    Args:
        cls: the dataclass.
        record: a `to_dict` record (e.g. read from a file).
        unknown: what the message calls unknown keys ("unknown DiT config keys").
        error: the exception raised for them (default UserError).
    """
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    extra = sorted(set(record) - fields)
    if extra:
        if error is None:
            from ditkit.errors import UserError

            error = UserError
        raise error(f"{unknown}: {', '.join(extra)}")
    return cls(**record)


# "    name, other: text" in a Google-style `Attributes:` section, continued by deeper-indented lines.
_ENTRY = re.compile(r"^(\s+)([A-Za-z_][\w, ]*):\s(.*)$")


def docstring_help(cls: type) -> dict[str, str]:
    """Field name -> its text in the class docstring's `Attributes:` section (shared by `a, b:` entries)."""
    lines = (cls.__doc__ or "").splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Attributes:")
    except StopIteration:
        return {}
    helps: dict[str, str] = {}
    names: list[str] = []
    indent = None
    for line in lines[start + 1 :]:
        if not line.strip():
            continue
        m = _ENTRY.match(line)
        if m and (indent is None or len(m.group(1)) == indent):
            indent = len(m.group(1))
            names = [n.strip() for n in m.group(2).split(",")]
            for name in names:
                helps[name] = m.group(3).strip()
        elif indent is not None and len(line) - len(line.lstrip()) > indent and names:
            for name in names:
                helps[name] += " " + line.strip()
        else:
            break
    return helps
