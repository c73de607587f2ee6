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
from ditkit.cli.streams import SIGPIPE_EXIT, pipe_safe_streams
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
  ditkit demo --steps 50 --num-per-class 10 --out runs/smoke # train, sample and score a tiny DiT (CPU)
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
    with pipe_safe_streams() as streams:
        code = _main(argv)
    if code == 0 and any(stream.lost for stream in streams):
        return SIGPIPE_EXIT  # the work is done and saved; the reader saw only part of what it said
    return code


def _main(argv: Sequence[str] | None) -> int:
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


if __name__ == "__main__":
    sys.exit(main())
