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

from ditkit.cli.formatting import HelpFormatter, SubcommandParser, add_progress_flags
from ditkit.cpu_memory import configure_cpu_malloc
from ditkit.errors import UserError

# Subcommand name -> module under ditkit.cli. Order is the order shown in --help.
COMMANDS: dict[str, str] = {
    "models": "ditkit.cli.models",
    "demo": "ditkit.cli.demo",
    "prepare": "ditkit.cli.prepare",
    "train": "ditkit.cli.train",
    "sample": "ditkit.cli.sample",
    "walk": "ditkit.cli.walk",
    "serve": "ditkit.cli.serve",
    "evaluate": "ditkit.cli.evaluate",
    "reference": "ditkit.cli.reference",
    "convert": "ditkit.cli.convert",
    "bench": "ditkit.cli.bench",
    "study": "ditkit.cli.study",
}


EPILOG = """examples:
  ditkit demo --steps 50 --per-class 10 --out runs/smoke    # train, sample and score a tiny DiT (CPU)
  ditkit models --all                                       # presets with parameters and Gflops
  ditkit train --model DiT-XS/4 --data fashion-mnist --image-size 28 --steps 1000 --out runs/x
  ditkit sample runs/x --class sneaker --out samples/       # the run's newest checkpoint
  ditkit evaluate runs/smoke/samples.npz --fashion-mnist    # score the demo's samples (offline)

`ditkit COMMAND --help` shows each command's options and examples.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ditkit",
        description="Diffusion Transformers (DiT): train, sample, evaluate and convert models.",
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=_version())
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=SubcommandParser)
    subparsers.required = True
    for name, module_name in COMMANDS.items():
        importlib.import_module(module_name).add_parser(subparsers)
        add_progress_flags(subparsers.choices[name])
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"ditkit {version('ditkit')}"
    except PackageNotFoundError:
        return "ditkit (not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        configure_cpu_malloc()
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return _closed_pipe()


def _closed_pipe() -> int:
    """The reader went away (`ditkit ... | head`): stop quietly, as Unix tools do.

    stdout is pointed at /dev/null so that Python's own flush at exit does not fail again.
    """
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout without a file descriptor (replaced in tests)
        pass
    return SIGPIPE_EXIT


# Exit status of a process ended by SIGPIPE (128 + 13), what `yes | head` reports for `yes`.
SIGPIPE_EXIT = 141


if __name__ == "__main__":
    sys.exit(main())
