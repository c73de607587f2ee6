"""Checks that cost nothing, run before a model is built, a VAE loaded or the network touched.

A wrong preset name or a checkpoint made with other options fails here, in a fraction of a second,
with one line that says what to change. The data and the sizes are checked next, by `build_data`,
before it loads the first stage.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ditkit.atomic import check_output_folder
from ditkit.errors import UserError
from ditkit.training.config import TrainConfig, check_resumable

if TYPE_CHECKING:
    from ditkit.training.finetune import InitSource


def preflight(config: TrainConfig, resume: str | os.PathLike[str] | bool | None) -> InitSource | None:
    """Raise UserError for a bad preset, model override, logger, resume target or --init checkpoint,
    without building anything; returns the --init checkpoint read (None without one, or on resume)."""
    from ditkit.model.dit import DiTConfig
    from ditkit.model.presets import get_config
    from ditkit.training.metrics import check_logger

    check_output_folder(config.out)
    get_config(config.model)  # an unknown preset names itself and `ditkit models`
    fields = {f for f in DiTConfig.__dataclass_fields__ if f != "name"}
    unknown = sorted(set(config.model_overrides) - fields)
    if unknown:
        raise UserError(
            f"invalid model options for {config.model}: unknown field(s) {', '.join(unknown)}; "
            f"choose from {', '.join(sorted(fields))}"
        )
    check_logger(config.logger)  # a missing extra is named now, not after the model is built
    if config.repa_encoder is not None:
        check_repa(config)
    check_resume_options(config, resume)
    return check_init(config, resume)


def check_init(config: TrainConfig, resume: str | os.PathLike[str] | bool | None) -> InitSource | None:
    """Read the --init checkpoint's config (a folder's weights wait) and refuse one whose weights
    cannot fit the run's model, before the data is opened. None without --init, and when the run
    continues from a checkpoint of its own (the --init weights are then in it)."""
    from ditkit.run_folder import resolve_resume
    from ditkit.training.finetune import check_fits, read_init_source
    from ditkit.training.setup import dit_config

    if config.init is None or resolve_resume(resume, config.out) is not None:
        return None
    source = read_init_source(config.init, config.init_weights)
    src = source.config
    # The run's model on the checkpoint's input shape and classes: what the data will set may differ
    # (positions and label table are refitted); everything else must agree.
    planned = dit_config(config, (src.in_channels, *src.size_hw), src.num_classes)
    check_fits(source, planned, config.model)
    return source


def check_repa(config: TrainConfig) -> None:
    """REPA's depth within the model's blocks, and its encoder at hand (a local file, or torch.hub cached
    or reachable), before the data is opened or anything downloaded."""
    from ditkit.model.presets import get_config
    from ditkit.training.repa_encoders import check_repa_encoder

    depth = config.model_overrides.get("depth", get_config(config.model).depth)
    if config.repa_depth > depth:
        raise UserError(f"--repa-depth {config.repa_depth} is deeper than {config.model}'s {depth} blocks")
    assert config.repa_encoder is not None
    check_repa_encoder(config.repa_encoder)


def check_resume_options(config: TrainConfig, resume: str | os.PathLike[str] | bool | None) -> None:
    """Compare the options recorded in the checkpoint to resume (its config.json) with `config`: the one
    check of a resumed run's options, made before anything is built."""
    from ditkit.checkpoints.native import CONFIG_FILE
    from ditkit.run_folder import check_resume_target, resolve_resume

    check_resume_target(resume, config.out)
    path = resolve_resume(resume, config.out)
    if path is None or not (path / CONFIG_FILE).is_file():
        return
    try:
        header = json.loads((Path(path) / CONFIG_FILE).read_text(encoding="utf-8"))
        saved = header["extra"]["train"]["config"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(
            f"{path} does not record the options it was trained with ({err}); start a new --out"
        ) from err
    check_resumable(saved, config, path)
