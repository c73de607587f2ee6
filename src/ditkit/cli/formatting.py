"""What every subcommand shares: its parser, the help formatter, progress flags, plurals."""

from __future__ import annotations

import argparse
import difflib
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NoReturn

from ditkit.errors import plural as plural  # counted words live beside UserError, for every layer


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the epilog's examples as written and shows each option's default.

    A help text that already names its default (the word "default") is left alone.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if not action.option_strings or text == argparse.SUPPRESS or re.search(r"\bdefault\b", text):
            return text
        unset = action.default in (None, argparse.SUPPRESS) or action.default is False  # "(default: None)"
        if isinstance(action, argparse._StoreConstAction):  # a switch (--no-cuda-graph): its name says it
            return text
        if unset or (isinstance(action.default, list | tuple) and not action.default):  # says nothing
            return text
        if isinstance(action.default, list | tuple):
            return f"{text} (default: {' '.join(map(str, action.default))})".lstrip()
        return f"{text} (default: %(default)s)".lstrip()


class SubcommandParser(argparse.ArgumentParser):
    """A subcommand's parser: an unknown option is reported with a close match, and every parse error
    in one line that points to *this* command's --help (not argparse's usage block before it)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}; see `{self.prog} --help`\n")

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        namespace, extras = super().parse_known_args(args, namespace)
        assert namespace is not None  # argparse makes one when none is given
        if extras:
            self.error(unrecognized_message(extras, visible_flags(self)))
        return namespace, extras


def add_command(
    subparsers: argparse._SubParsersAction,
    name: str,
    run: Callable[[argparse.Namespace], int],
    summary: str,
    description: str,
    epilog: str,
) -> argparse.ArgumentParser:
    """The parser of subcommand `name`, the one preamble every `ditkit.cli` module shares.

    Args:
        subparsers: `ditkit`'s subcommands (`ditkit bench`'s for its own).
        name: the subcommand.
        run: what it does, called with the parsed arguments (`args.func`).
        summary: its line in `ditkit --help`.
        description: the paragraph atop its own `--help`.
        epilog: its examples, shown as written below the options.
    """
    parser = subparsers.add_parser(
        name, help=summary, description=description, epilog=epilog, formatter_class=HelpFormatter
    )
    parser.set_defaults(func=run)
    return parser


def visible_flags(parser: argparse.ArgumentParser) -> list[str]:
    """The long options `--help` shows (hidden aliases left out)."""
    return [
        flag
        for action in parser._actions
        if action.help != argparse.SUPPRESS
        for flag in action.option_strings
        if flag.startswith("--")
    ]


def suggest(flag: str, known: Iterable[str]) -> str | None:
    """The known option closest to `flag`: by spelling, or by initials (`--learning-rate` -> `--lr`)."""
    flag = flag.split("=", 1)[0]
    known = list(known)
    words = [w for w in flag.lstrip("-").split("-") if w]
    initials = "--" + "".join(w[0] for w in words)
    if len(words) > 1 and initials in known:  # an abbreviation spelled out: --learning-rate -> --lr
        return initials
    bare = {k.lstrip("-"): k for k in known}  # compare names without their dashes, which all share
    close = difflib.get_close_matches(flag.lstrip("-"), list(bare), n=1, cutoff=0.6)
    if close:
        return bare[close[0]]
    for word in sorted(words, key=len, reverse=True):
        hits = [k for k in known if len(word) > 3 and word in k]
        if len(hits) == 1:
            return hits[0]
    return None


def unrecognized_message(extras: Sequence[str], known: Iterable[str]) -> str:
    """`unrecognized arguments: ...`, with "did you mean" for the first unknown option."""
    message = f"unrecognized arguments: {' '.join(extras)}"
    first = next((e for e in extras if e.startswith("-")), None)
    match = suggest(first, known) if first else None
    return f"{message} (did you mean {match}?)" if match else message


def add_progress_flags(parser: argparse.ArgumentParser) -> None:
    """`--quiet` and `--no-progress` (one option, two names): no progress bars. Sets `args.no_progress`.

    Added to every leaf command (`ditkit bench train`, not `ditkit bench`), so both names work everywhere.
    """
    nested = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if nested:
        for sub in {id(p): p for p in nested[0].choices.values()}.values():
            add_progress_flags(sub)
        return
    parser.add_argument(
        "--quiet", "--no-progress", dest="no_progress", action="store_true", help="no progress bars"
    )


def add_hidden_alias(parser: argparse.ArgumentParser, flag: str, dest: str, **kwargs: Any) -> None:
    """Accept an old spelling of an option without showing it in `--help`."""
    parser.add_argument(flag, dest=dest, help=argparse.SUPPRESS, **kwargs)


def add_data_dir_flag(parser: argparse.ArgumentParser, *old: str) -> None:
    """`--data-dir DIR`, the Fashion-MNIST folder in every command (as in `ditkit train`); `old` names stay
    accepted, hidden."""
    parser.add_argument(
        "--data-dir", metavar="DIR", help="folder of the Fashion-MNIST IDX files (default: Debian's location)"
    )
    for flag in old:
        add_hidden_alias(parser, flag, "data_dir")


def positive_int(text: str) -> int:
    """An argparse type for counts: refused at parse time, before anything is loaded."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value
