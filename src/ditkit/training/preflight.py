"""Checks that cost nothing, run before a model is built, a VAE loaded or the network touched.

A wrong preset name or a checkpoint made with other options fails here, in a fraction of a second,
with one line that says what to change. The data and the sizes are checked next, by `build_data`,
before it loads the first stage.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ditkit.atomic import check_output_folder
from ditkit.errors import UserError
from ditkit.training.config import TrainConfig, check_resumable


def preflight(config: TrainConfig, resume: str | os.PathLike[str] | bool | None) -> None:
    """Raise UserError for a bad preset, model override, logger or resume target, without building anything."""
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
    check_resume_options(config, resume)


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
