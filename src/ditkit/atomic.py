"""Atomic writes of files and folders: build under a temporary name beside the target, then rename.

A crash, an interrupt or a power cut never leaves a partial or corrupt file under the final name:
the new content is flushed to disk (`fsync`) before the rename, and the folder holding it is flushed
after, so the rename itself survives too. Every file and folder ditkit writes goes through here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from ditkit.errors import UserError


def fsync_path(path: str | os.PathLike[str]) -> None:
    """Flush a file's or a folder's content and metadata to disk (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except (IsADirectoryError, PermissionError):  # folders cannot be opened on some platforms
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file and folder under `root`, then `root` itself (children first)."""
    for folder, _, files in os.walk(root, topdown=False):
        for name in files:
            fsync_path(Path(folder) / name)
        fsync_path(folder)


def _temporary_name(target: Path, suffix: str = "tmp") -> Path:
    return target.parent / f".{target.name}.{uuid.uuid4().hex[:12]}.{suffix}"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is flushed and renamed to `path`, else removed.

    Example:
        with atomic_path("out/model.safetensors") as tmp:
            safetensors.torch.save_file(tensors, tmp)
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_name(target)
    # Created here (exclusively) with the usual permissions: 0o666 less the umask, like open() gives.
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(target.parent)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write `text` to `path` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; on success it becomes `path`, else it is removed.

    If `path` already exists it is swapped out and deleted after the new folder is in place
    (the caller decides beforehand whether replacing it is allowed).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_name(target)
    tmp.mkdir()  # mode 0o777 minus the umask, like any folder the user creates
    try:
        yield tmp
        fsync_tree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():
        old = _temporary_name(target, "old")
        os.replace(target, old)
        os.replace(tmp, target)
        fsync_path(target.parent)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)
        fsync_path(target.parent)


def check_output_folder(path: str | os.PathLike[str], flag: str = "--out") -> None:
    """Refuse, before any work, an output folder that cannot be one: `path` or a folder above it is
    a file. A missing folder is fine (it is created when the results are written).

    Raises:
        UserError: naming `flag`, the file in the way, and what to do.
    """
    target = Path(path)
    for place in (target, *target.parents):
        if place.is_dir():
            return
        if place.exists():
            where = "is a file" if place == target else f"is inside {place}, which is a file"
            raise UserError(f"{flag} {target} {where}; name a folder (a new one is created)")
