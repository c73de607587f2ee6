"""The CLI as a newcomer meets it (issue 16): help, flag names, unknown flags, pipes, `ditkit models`."""

from __future__ import annotations

import argparse
import io
import subprocess
import sys

import pytest

from ditkit.cli.formatting import plural, suggest
from ditkit.cli.main import COMMANDS, SIGPIPE_EXIT, build_parser, main


def _leaf_parsers(parser: argparse.ArgumentParser, name: str = "ditkit"):
    """(name, parser) of every command that takes options (`bench train`, not `bench`)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield name, parser
        return
    for sub_name, sub in subs[0].choices.items():
        yield from _leaf_parsers(sub, f"{name} {sub_name}")


def _help(*argv: str) -> str:
    out = io.StringIO()
    try:
        sys.stdout, saved = out, sys.stdout
        with pytest.raises(SystemExit):
            main([*argv, "--help"])
    finally:
        sys.stdout = saved
    return out.getvalue()


@pytest.mark.parametrize("command", list(COMMANDS))
def test_quiet_and_no_progress_are_accepted_by_every_command(command):
    for name, parser in _leaf_parsers(build_parser()):
        if name.split()[1] != command:
            continue
        flags = {f for a in parser._actions for f in a.option_strings}
        assert {"--quiet", "--no-progress"} <= flags, name


def test_help_shows_defaults():
    text = _help("sample")
    assert "(default: 4)" in text and "(default: 0)" in text  # --num-per-class, --seed
    prepare = _help("prepare")
    assert "(default: 4096)" in prepare and "(default: float16)" in prepare
    assert "(default: None)" not in prepare and "(default: False)" not in prepare


def test_the_fashion_mnist_folder_has_one_name_and_the_old_one_still_works(tmp_path):
    for command in ("demo", "prepare", "evaluate", "reference"):
        assert "--data-dir DIR" in _help(command), command
    assert "--data " not in _help("demo") and "--started-at" not in _help("demo")
    args = build_parser().parse_args(["demo", "--data", "/x", "--started-at", "5"])  # hidden, still accepted
    assert args.data_dir == "/x" and args.started_at == 5.0


def test_top_level_help_has_examples():
    text = _help()
    assert "examples:" in text and "ditkit train --model" in text and "ditkit sample runs/x" in text


def test_unknown_flag_is_one_line_with_a_suggestion_and_the_subcommands_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--out", "x", "--steps", "1", "--learning-rate", "1e-3"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "did you mean --lr?" in err and "see `ditkit train --help`" in err
    assert err.count("\n") == 1  # one line, not argparse's usage block before it (issue 28)
    with pytest.raises(SystemExit):
        main(["sample", "ckpt", "--num-per-klass", "2"])
    err = capsys.readouterr().err
    assert "did you mean --num-per-class?" in err and "see `ditkit sample --help`" in err


def test_suggestions_and_plurals():
    known = ["--lr", "--global-batch", "--ema-decay", "--out"]
    assert suggest("--learning-rate", known) == "--lr"
    assert suggest("--batch", known) == "--global-batch"
    assert suggest("--ema_decay=0.9", known) == "--ema-decay"
    assert suggest("--colour", known) is None
    assert (
        plural(1, "image") == "1 image"
        and plural(2, "image") == "2 images"
        and plural(0, "shard") == "0 shards"
    )


def test_evaluate_fashion_mnist_flag_does_not_swallow_the_samples_file():
    """Item 9: `evaluate --fashion-mnist SAMPLES.npz` parses SAMPLES.npz as the samples."""
    args = build_parser().parse_args(["evaluate", "--fashion-mnist", "runs/demo/samples.npz"])
    assert args.samples == "runs/demo/samples.npz" and args.fashion_mnist and args.data_dir is None


class _ClosedPipe(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_closed_pipe_ends_quietly(monkeypatch, capsys):
    """Item 13: `ditkit sample --list-classes | head` must not end in a traceback."""
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    assert main(["sample", "--list-classes"]) == SIGPIPE_EXIT
    assert capsys.readouterr().err == ""


def test_a_reader_that_went_away_gets_no_traceback():
    """The same with a real pipe whose reader is gone before the first write (as `| head` after a line)."""
    command = [sys.executable, "-m", "ditkit", "sample", "--list-classes"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # every write of the child now fails with EPIPE
    err = proc.stderr.read()
    assert proc.wait() == SIGPIPE_EXIT and err == ""


def test_models_is_fast_and_marks_presets_that_do_not_fit():
    """Item 4: closed-form counts (no torch import) and n/a where the patch does not divide the input."""
    code = (
        "import sys\n"
        "from ditkit.cli.main import main\n"
        "code = main(['models', '--all', '--image-size', '28', '--downsample', '1', '--in-channels', '1',"
        " '--num-classes', '10'])\n"
        "print('torch' in sys.modules, code)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = done.stdout.splitlines()
    assert lines[-1] == "False 0"
    s8 = next(line for line in lines if line.startswith("DiT-S/8"))
    s4 = next(line for line in lines if line.startswith("DiT-S/4"))
    assert s8.split()[-3:] == ["n/a", "n/a", "n/a"] and s4.split()[-3] == "49"


@pytest.mark.parametrize(
    "argv",
    [
        ["sample", "no-such-ckpt", "--num-per-class", "0"],
        ["walk", "no-such-ckpt", "--mode", "noise", "--frames", "-2"],
        ["prepare", "fashion-mnist", "--out", "x", "--batch-size", "0"],
        ["demo", "--per-class", "0"],
    ],
)
def test_counts_are_checked_when_parsing_before_anything_loads(argv, capsys):
    """Item 13: a zero or negative count is refused by the parser (usage + one line), not after loading."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "must be at least 1" in err and "does not exist" not in err
