"""`ditkit train`'s flags are built from TrainConfig's fields: defaults, types, choices and help cannot drift."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
from dataclasses import dataclass

import pytest

from ditkit import choices
from ditkit.cli.config_flags import add_config_arguments, flag_name, given_config_values
from ditkit.cli.formatting import SubcommandParser
from ditkit.cli.main import build_parser
from ditkit.cli.train import config_from_args
from ditkit.options import docstring_help, field_default, option, option_spec
from ditkit.training.config import TrainConfig


def _train_parser() -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["train"]


def _actions_by_dest(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions if a.help != argparse.SUPPRESS}


def test_every_config_field_has_a_documented_flag():
    actions = _actions_by_dest(_train_parser())
    for f in dataclasses.fields(TrainConfig):
        assert f.name in actions, f"TrainConfig.{f.name} has no `ditkit train` flag"
        assert actions[f.name].help.strip() and not actions[f.name].help.startswith("(default"), (
            f"TrainConfig.{f.name}: document it in the class docstring's Attributes or pass option(help=...)"
        )


def test_cli_defaults_are_the_config_defaults(tmp_path):
    """Parsing only the required flags gives exactly TrainConfig's defaults, field by field."""
    out = str(tmp_path / "run")
    args = build_parser().parse_args(["train", "--out", out, "--steps", "3"])
    assert config_from_args(args) == TrainConfig(out=out, steps=3)
    assert given_config_values(args, TrainConfig) == {"out": out, "steps": 3}


def test_help_shows_each_config_default_and_choice():
    actions = _actions_by_dest(_train_parser())
    for f in dataclasses.fields(TrainConfig):
        default, action = field_default(f), actions[f.name]
        if option_spec(f).required:  # `--out`: the user gives it, so no default is shown
            assert "(default" not in action.help, f.name
        elif isinstance(default, bool):
            assert f"(default: --{'' if default else 'no-'}{f.name.replace('_', '-')})" in action.help
        elif isinstance(default, int | float | str):
            assert f"(default: {default})" in action.help, f.name
        spec_choices = option_spec(f).choices
        assert action.choices == spec_choices, f.name
    assert actions["precision"].choices == choices.PRECISION_MODES
    assert actions["noise_schedule"].choices == choices.NOISE_SCHEDULES
    assert actions["recompute_policy"].choices == choices.RECOMPUTE_POLICIES
    steps = next(f for f in dataclasses.fields(TrainConfig) if f.name == "diffusion_steps")
    assert field_default(steps) == choices.DEFAULT_DIFFUSION_STEPS


def test_typed_values_round_trip_into_the_config(tmp_path):
    args = build_parser().parse_args(
        [
            "train",
            "--out",
            str(tmp_path),
            "--epochs",
            "0.5",
            "--betas",
            "0.8",
            "0.95",
            "--set",
            "depth=3",
            "--set",
            "block=in-context",
            "--no-learn-sigma",
            "--ema-warmup",
            "--precision",
            "bf16",
            "--grad-clip",
            "1",
        ]
    )
    config = config_from_args(args)
    assert config.epochs == 0.5 and config.betas == (0.8, 0.95) and config.grad_clip == 1.0
    assert config.model_overrides == {"depth": 3, "block": "in-context"}
    assert config.learn_sigma is False and config.ema_warmup is True and config.precision == "bf16"


def test_a_bad_choice_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--out", "x", "--steps", "1", "--noise-schedule", "quadratic"])
    assert "invalid choice: 'quadratic'" in capsys.readouterr().err


def test_a_new_field_gets_its_flag_without_cli_edits():
    """What another module adding a field gets: a typed flag, choices, second spellings, help from the docstring."""

    @dataclass
    class Config:
        """A config.

        Attributes:
            objective: what the network predicts,
                eps or v.
            weight: loss weight.
            plain: a field without option(...).
        """

        objective: str = option("eps", choices=("eps", "v"), group="diffusion")
        weight: float | None = option(None, flags=("--loss-weight", "--lw"))
        plain: int = 3

    parser = SubcommandParser(prog="x")
    add_config_arguments(parser, Config)
    args = parser.parse_args(["--objective", "v", "--lw", "0.5"])
    assert given_config_values(args, Config) == {"objective": "v", "weight": 0.5}
    assert parser.parse_args(["--plain", "7"]).plain == 7
    text = parser.format_help()
    assert "what the network predicts, eps or v. (default: eps)" in text
    assert "--loss-weight WEIGHT, --lw WEIGHT" in text and "{eps,v}" in text
    assert "a field without option(...). (default: 3)" in text
    assert docstring_help(Config)["objective"] == "what the network predicts, eps or v."
    assert flag_name("global_batch") == "--global-batch"


def test_shared_docstring_entries_apply_to_each_name():
    @dataclass
    class Config:
        """Doc.

        Attributes:
            a, b: both of these.
        """

        a: int = 0
        b: int = 1

    assert docstring_help(Config) == {"a": "both of these.", "b": "both of these."}


def test_help_and_parsers_do_not_import_torch():
    """Building every parser and printing `train --help` must stay torch-free (fast `--help`)."""
    code = (
        "import sys, contextlib, io\n"
        "from ditkit.cli.main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try: main(['train', '--help'])\n"
        "    except SystemExit: pass\n"
        "from ditkit.cli.train import config_from_args\n"
        "from ditkit.cli.main import build_parser\n"
        "config_from_args(build_parser().parse_args(['train', '--out', 'x', '--steps', '1']))\n"
        "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
