"""The layout of a training run's folder, read without torch (the CLI, the loader and the trainer share it).

    <out>/
        train_config.json          the run's resolved options (`ditkit.training.config.TrainConfig.save`)
        checkpoints/0005000/       one complete checkpoint per folder, named by its zero-padded step
            train_state.pt         what only a resumed run needs (`ditkit.training.state`)
        checkpoints/last           a relative link to the newest checkpoint

Only complete checkpoints count: a folder appears under its final name once its files are written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ditkit.errors import UserError

CHECKPOINTS_DIR = "checkpoints"
TRAIN_STATE_FILE = "train_state.pt"
# The run's resolved options, written once when it starts and read back to resume it.
RUN_CONFIG_FILE = "train_config.json"
# Width of the step in checkpoint folder names, so that they sort by step.
STEP_DIGITS = 7
# <out>/checkpoints/last: a relative link to the newest checkpoint, a stable name for `ditkit sample`.
LAST_LINK = "last"


def checkpoint_path(out: str | os.PathLike[str], step: int) -> Path:
    """<out>/checkpoints/<step, zero-padded>."""
    return Path(out) / CHECKPOINTS_DIR / f"{step:0{STEP_DIGITS}d}"


def list_checkpoints(out: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """Complete training checkpoints under <out>/checkpoints, as (step, path) sorted by step."""
    root = Path(out) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = []
    for entry in root.iterdir():
        if entry.name.isdigit() and (entry / TRAIN_STATE_FILE).is_file():
            found.append((int(entry.name), entry))
    return sorted(found)


def latest_checkpoint(out: str | os.PathLike[str]) -> Path | None:
    """The newest complete checkpoint of a run folder, or None."""
    found = list_checkpoints(out)
    return found[-1][1] if found else None


def link_last(checkpoint: Path) -> None:
    """Point <out>/checkpoints/last at `checkpoint` (replaced atomically; skipped where links are not
    possible: `ditkit sample` also takes the run folder itself)."""
    link = checkpoint.parent / LAST_LINK
    tmp = checkpoint.parent / f".{LAST_LINK}.{os.getpid()}"
    try:
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(checkpoint.name, target_is_directory=True)
        os.replace(tmp, link)
    except (OSError, NotImplementedError):
        tmp.unlink(missing_ok=True)


def resolve_resume(resume: str | os.PathLike[str] | bool | None, out: str | os.PathLike[str]) -> Path | None:
    """The checkpoint to resume from.

    Args:
        resume: False/None (start fresh), True or "latest" (the newest checkpoint in `out`, or None
            when the run there has none yet, so that a run cut before its first checkpoint starts
            again; `check_resume_target` refuses an `out` holding no run), or a checkpoint folder /
            run folder.
    """
    if resume is None or resume is False:
        return None
    if resume is True or resume == "latest":
        return latest_checkpoint(out)
    path = Path(resume)
    if (path / TRAIN_STATE_FILE).is_file():
        return path
    latest = latest_checkpoint(path)
    if latest is None:
        raise UserError(
            f"--resume {path}: no training checkpoint there (a folder with {TRAIN_STATE_FILE}); "
            "pass a checkpoint folder or a run folder holding checkpoints/"
        )
    return latest


def check_resume_target(resume: str | os.PathLike[str] | bool | None, out: str | os.PathLike[str]) -> None:
    """Refuse a bare --resume where `out` holds no run (no train_config.json): a typo'd folder must not
    start a new run. A run cut before its first checkpoint (its options written) starts again."""
    bare = resume is True or resume == "latest"
    if bare and not (Path(out) / RUN_CONFIG_FILE).is_file() and latest_checkpoint(out) is None:
        raise UserError(
            f"--resume: there is no run in {out} to resume (no {RUN_CONFIG_FILE}); check the folder's "
            "name, or drop --resume to start a new run there"
        )


def newest_in_run(path: str | os.PathLike[str]) -> Path | None:
    """The newest checkpoint of a training run, given the run folder or its `checkpoints/` folder."""
    path = Path(path)
    run = path.parent if path.name == CHECKPOINTS_DIR else path
    return latest_checkpoint(run) if (run / CHECKPOINTS_DIR).is_dir() else None


def read_run_config(
    resume: str | os.PathLike[str] | bool | None, out: str | os.PathLike[str]
) -> dict[str, Any] | None:
    """The `train_config.json` of the run `--resume` points to (the run folder, its checkpoints/ folder
    or one checkpoint in it; `out` for a bare --resume), or None when there is none."""
    if resume is None or resume is False:
        return None
    folder = Path(out) if resume is True or resume == "latest" else Path(resume)
    for candidate in (folder, folder.parent, folder.parent.parent):
        path = candidate / RUN_CONFIG_FILE
        if path.is_file():
            try:
                return json.loads(path.read_text())
            except (OSError, ValueError) as err:
                raise UserError(f"cannot read {path} ({err}); fix or delete it to resume") from err
    return None
