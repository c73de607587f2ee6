"""The sampling flags of `ditkit sample`, `walk` and `serve`, generated once from `SamplingSettings`.

Each flag is a field of `ditkit.samplers.settings.SamplingSettings` (`--guidance-scale`, also spelled
`--cfg-scale`); a flag left out is absent from the namespace, so the checkpoint's recorded settings
(`pipe.sampling`) and then the objective's defaults fill it in (`DiTPipeline.settings`).
"""

from __future__ import annotations

import argparse
from typing import Any

from ditkit.cli.config_flags import add_config_arguments, given_config_values
from ditkit.samplers.settings import SamplingSettings


def add_sampling_arguments(parser: argparse.ArgumentParser, *, skip: tuple[str, ...] = ()) -> None:
    """Add the `SamplingSettings` flags (but `skip`, e.g. a command's own `--seed`) to `parser`."""
    add_config_arguments(parser, SamplingSettings, skip=skip)


def given_sampling(args: argparse.Namespace) -> dict[str, Any]:
    """The sampling fields the user typed (`pipe.settings(**given)` resolves the rest).

    Checked here, before anything is loaded: a bad value (`--steps 0`) is one UserError line.
    """
    given = given_config_values(args, SamplingSettings)
    SamplingSettings(**given)
    return given
