"""Entry point of the `ditkit` console script.

Each subcommand lives in its own module under `ditkit.cli` and exposes two functions:
`add_parser(subparsers)` builds its argparse parser (importing nothing heavy), and
`run(args) -> int` does the work by calling library functions. Errors meant for the user
are raised as `UserError`; they print as one line and exit non-zero.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ditkit.errors import UserError

# Subcommand name -> module under ditkit.cli. Order is the order shown in --help.
COMMANDS: dict[str, str] = {
    "models": "ditkit.cli.models",
    "demo": "ditkit.cli.demo",
    "prepare": "ditkit.cli.prepare",
    "train": "ditkit.cli.train",
    "sample": "ditkit.cli.sample",
    "walk": "ditkit.cli.walk",
    "evaluate": "ditkit.cli.evaluate",
    "reference": "ditkit.cli.reference",
    "convert": "ditkit.cli.convert",
    "bench": "ditkit.cli.bench",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ditkit",
        description="Diffusion Transformers (DiT): train, sample, evaluate and convert models.",
    )
    parser.add_argument("--version", action="version", version=_version())
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module_name in COMMANDS.values():
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"ditkit {version('ditkit')}"
    except PackageNotFoundError:
        return "ditkit (not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
