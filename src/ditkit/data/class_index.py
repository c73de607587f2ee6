"""The class-index file: a JSON object {"class name": label}, written next to results.

It records which integer label the model learnt for which folder name, so samples can be asked
for by name later and a run can be checked against the dataset it was trained on.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from ditkit.atomic import atomic_write_text
from ditkit.errors import UserError

CLASS_INDEX_FILENAME = "class_index.json"


def write_class_index(path: str | os.PathLike[str], classes: Sequence[str]) -> Path:
    """Write {"name": index} for `classes` (in label order) to `path` atomically.

    If `path` is a folder, the file is `path/class_index.json`. Returns the file written.
    """
    target = Path(path)
    if target.is_dir():
        target = target / CLASS_INDEX_FILENAME
    mapping = {name: index for index, name in enumerate(classes)}
    if len(mapping) != len(classes):
        raise UserError(f"class names are not unique: {list(classes)}; rename the duplicate folders")
    atomic_write_text(target, json.dumps(mapping, indent=2, ensure_ascii=False) + "\n")
    return target


def read_class_index(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """Read a class-index file (or folder holding one) back into class names in label order."""
    source = Path(path)
    if source.is_dir():
        source = source / CLASS_INDEX_FILENAME
    try:
        mapping = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read class index {source}: {err}") from err
    if not isinstance(mapping, dict) or sorted(mapping.values()) != list(range(len(mapping))):
        raise UserError(f"{source} is not a class index (expected {{name: 0..N-1}})")
    return tuple(sorted(mapping, key=mapping.__getitem__))
