"""Class names: ImageNet's 1000 classes with their WordNet synonyms, and name -> label resolution.

A class is asked for by index (207 or "207") or by any of its names, compared case-insensitively
with spaces, underscores and hyphens treated alike ("Golden_Retriever" finds "golden retriever"),
or by the start of a word of one name only ("boot" finds "Ankle boot" when no other class has a
word starting so). A name that matches nothing raises a `UserError` that suggests the closest names.

The ImageNet list is the ILSVRC-2012 synset order (sorted WordNet ids, the label order of every
ImageNet model, DiT's included), shipped as `ditkit/data/imagenet_classes.json`.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources

from ditkit.errors import UserError

IMAGENET_FILE = "imagenet_classes.json"
# Number of ILSVRC-2012 classes (Russakovsky et al. 2015), the classes DiT is trained on.
IMAGENET_NUM_CLASSES = 1000
# How many suggestions a failed look-up offers, and how close (difflib ratio) they must be.
MAX_SUGGESTIONS = 5
SUGGESTION_CUTOFF = 0.6

ClassQuery = int | str


def normalize_name(name: str) -> str:
    """Lower-case; '_' and '-' read as spaces, apostrophes and dots dropped: "Jack-o'-lantern" -> "jack o lantern"."""
    return " ".join(re.sub(r"[_\-]+", " ", re.sub(r"['.]", "", name)).lower().split())


class ClassNames:
    """The names of a model's classes, in label order; each class has one or more synonyms.

    Args:
        synonyms: for each label 0..K-1, its names; the first is the one shown.

    Example:
        >>> names = ClassNames.imagenet()
        >>> names.resolve("Golden Retriever"), names.name(852)
        (207, 'tennis ball')
    """

    def __init__(self, synonyms: Sequence[Sequence[str]]) -> None:
        if not synonyms:
            raise UserError("a class-name list needs at least one class")
        self.synonyms: tuple[tuple[str, ...], ...] = tuple(tuple(str(n) for n in names) for names in synonyms)
        for index, names in enumerate(self.synonyms):
            if not names or not all(n.strip() for n in names):
                raise UserError(f"class {index} has an empty name; every class needs a name")
        # normalised name -> labels whose first name it is / labels having it as any synonym
        self._primary: dict[str, list[int]] = {}
        self._any: dict[str, list[int]] = {}
        for index, names in enumerate(self.synonyms):
            self._primary.setdefault(normalize_name(names[0]), []).append(index)
            for name in dict.fromkeys(normalize_name(n) for n in names):
                self._any.setdefault(name, []).append(index)

    @classmethod
    def imagenet(cls) -> ClassNames:
        """The 1000 ILSVRC-2012 classes with their WordNet synonyms (index 207: golden retriever)."""
        return _imagenet()

    @classmethod
    def from_names(cls, names: Sequence[str] | Mapping[str, int]) -> ClassNames:
        """One name per class: a list in label order, or a mapping {name: label} (a `class_index.json`).

        A name holding commas ("tench, Tinca tinca") lists synonyms.
        """
        if isinstance(names, Mapping):
            labels = sorted(names.values())
            if labels != list(range(len(names))):
                raise UserError("a {name: label} class map must use the labels 0..N-1 exactly once")
            ordered = sorted(names, key=lambda n: names[n])
        else:
            ordered = list(names)
        return cls(
            [[part.strip() for part in str(n).split(",") if part.strip()] or [str(n)] for n in ordered]
        )

    def __len__(self) -> int:
        return len(self.synonyms)

    def name(self, label: int) -> str:
        """The display name (first synonym) of a label."""
        self._check_label(label)
        return self.synonyms[label][0]

    def resolve(self, query: ClassQuery) -> int:
        """The label of a class given by index or by any of its names.

        Raises:
            UserError: unknown or out-of-range index; unknown name (with suggestions); or a name
                shared by several classes that none has as its main name (e.g. "panda").
        """
        if isinstance(query, bool):
            raise UserError(f"a class must be an index or a name, not {query!r}")
        if isinstance(query, int):
            return self._check_label(query)
        text = str(query).strip()
        if re.fullmatch(r"[+-]?\d+", text):
            return self._check_label(int(text))
        key = normalize_name(text)
        matches = self._any.get(key, [])
        if len(matches) > 1:
            matches = self._primary.get(key, matches)
        if len(matches) == 1:
            return matches[0]
        if not matches:
            matches = self.partial_matches(text)  # "t-shirt" -> "T-shirt/top", "boot" -> "Ankle boot"
        if len(matches) == 1:
            return matches[0]
        if matches:
            options = ", ".join(self.describe(i) for i in matches[:MAX_SUGGESTIONS])
            more = f" and {len(matches) - MAX_SUGGESTIONS} more" if len(matches) > MAX_SUGGESTIONS else ""
            raise UserError(f"class name {text!r} is ambiguous: {options}{more}; give the index instead")
        raise UserError(self._unknown_message(text))

    def partial_matches(self, query: str) -> list[int]:
        """Labels with a name in which `query` starts a word ("boot" in "ankle boot", "t shirt" in
        "t shirt/top"), compared like `resolve`; "/" separates words too."""
        key = normalize_name(query).replace("/", " ")
        if not key:
            return []
        pattern = re.compile(rf"(^| ){re.escape(key)}")
        return [
            label
            for label, names in enumerate(self.synonyms)
            if any(pattern.search(normalize_name(n).replace("/", " ")) for n in names)
        ]

    def resolve_all(self, queries: Iterable[ClassQuery]) -> list[int]:
        """`resolve` for each query, in order."""
        return [self.resolve(q) for q in queries]

    def describe(self, label: int) -> str:
        """The display name and the index: "golden retriever (207)"."""
        return f"{self.name(label)} ({label})"

    def suggest(self, query: str, limit: int = MAX_SUGGESTIONS) -> list[int]:
        """Labels with a name containing `query` as whole words, then those with the closest names (difflib)."""
        key = normalize_name(query)
        labels: list[int] = []
        if key:
            pattern = re.compile(rf"\b{re.escape(key)}\b")
            labels += [label for name, ls in self._any.items() if pattern.search(name) for label in ls]
        close = difflib.get_close_matches(key, list(self._any), n=limit * 2, cutoff=SUGGESTION_CUTOFF)
        labels += [label for name in close for label in self._any[name]]
        return list(dict.fromkeys(labels))[:limit]

    def search(self, query: str) -> list[int]:
        """Every label with a name containing `query` (normalised), for listing classes."""
        key = normalize_name(query)
        return [i for i, names in enumerate(self.synonyms) if any(key in normalize_name(n) for n in names)]

    def _unknown_message(self, text: str) -> str:
        suggestions = self.suggest(text)
        if suggestions:
            return (
                f"unknown class {text!r}; did you mean: {', '.join(self.describe(i) for i in suggestions)}?"
            )
        return f"unknown class {text!r}; give an index 0..{len(self) - 1} or a name (`ditkit sample --list-classes`)"

    def _check_label(self, label: int) -> int:
        if not 0 <= label < len(self):
            raise UserError(f"class index {label} is out of range; this model has classes 0..{len(self) - 1}")
        return int(label)


@functools.cache
def _imagenet() -> ClassNames:
    text = resources.files("ditkit.data").joinpath(IMAGENET_FILE).read_text(encoding="utf-8")
    entries = json.loads(text)
    if [e["index"] for e in entries] != list(range(IMAGENET_NUM_CLASSES)):
        raise UserError(f"the packaged {IMAGENET_FILE} is damaged; reinstall ditkit")
    return ClassNames([e["names"] for e in entries])


def imagenet_wnids() -> list[str]:
    """The WordNet ids of the 1000 ImageNet classes in label order ("n01440764", ...)."""
    text = resources.files("ditkit.data").joinpath(IMAGENET_FILE).read_text(encoding="utf-8")
    return [e["wnid"] for e in json.loads(text)]


def resolve_class(query: ClassQuery, class_names: ClassNames | Sequence[str] | None = None) -> int:
    """The label of a class given by index or name; ImageNet's names unless `class_names` is given.

    Example:
        >>> resolve_class("golden retriever"), resolve_class("tennis_ball"), resolve_class("88")
        (207, 852, 88)
    """
    if isinstance(class_names, ClassNames):
        return class_names.resolve(query)
    names = ClassNames.imagenet() if class_names is None else ClassNames.from_names(class_names)
    return names.resolve(query)


def model_class_names(
    names: ClassNames | Sequence[str] | Mapping[str, int] | None, num_classes: int
) -> ClassNames | None:
    """The class names of a model with `num_classes` classes: the given ones (checked against the count), or
    ImageNet's for a 1000-class model, else None."""
    if names is None:
        return ClassNames.imagenet() if num_classes == IMAGENET_NUM_CLASSES else None
    resolved = names if isinstance(names, ClassNames) else ClassNames.from_names(names)
    if len(resolved) != num_classes:
        raise UserError(f"got {len(resolved)} class names for a model with {num_classes} classes")
    return resolved
