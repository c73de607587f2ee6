"""`--init-class-map`: which rows of a checkpoint's label table start a fine-tuning run's classes."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ditkit.errors import UserError
from ditkit.model.dit import DiTConfig


def class_rows(
    map_file: str | None,
    class_names: Sequence[str],
    source: DiTConfig,
    extra: Mapping[str, Any],
    where: str,
) -> dict[int, int] | None:
    """The label rows `--init-class-map` copies ({new label: source label}), or None without a map.

    Keys name the run's classes (a name of the data's, or a label index); values the checkpoint's (a
    label index, or a name: the checkpoint's recorded class names, ImageNet's for a 1000-class model).

    Args:
        map_file: the JSON file, or None.
        class_names: the run's classes, in label order.
        source, extra, where: the checkpoint's config, its extra data and its path (for messages).
    """
    from ditkit.generation.class_names import ClassNames, model_class_names

    if map_file is None:
        return None
    try:
        given = json.loads(Path(map_file).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UserError(f"--init-class-map {map_file}: cannot read it as JSON ({err})") from None
    if not isinstance(given, dict) or not all(isinstance(v, str | int) for v in given.values()):
        raise UserError(f'--init-class-map {map_file} must hold one object {{"new class": source class}}')
    if not source.conditional:
        raise UserError(f"--init-class-map: {where} is unconditional and has no classes to map from")
    ours = ClassNames.from_names(list(class_names))
    names = extra.get("class_names")
    theirs = model_class_names(names if isinstance(names, list) else None, source.num_classes)
    rows: dict[int, int] = {}
    for new, old in given.items():
        if theirs is None and not str(old).lstrip("-").isdigit():
            raise UserError(
                f"--init-class-map {map_file}: {where} records no class names; give its label "
                f"index instead of {old!r}"
            )
        try:
            key = ours.resolve(new)
            value = int(old) if theirs is None else theirs.resolve(str(old))
        except UserError as err:
            raise UserError(f"--init-class-map {map_file}: {err}") from None
        if not 0 <= value < source.num_classes:
            raise UserError(
                f"--init-class-map {map_file}: {old!r} is no class of {where} ({source.num_classes} classes)"
            )
        rows[key] = value
    return rows
