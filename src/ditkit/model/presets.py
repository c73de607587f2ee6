"""Named DiT configurations: the paper's twelve (Table 1) and small ones for tests and CPU runs."""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any

from ditkit.errors import UserError

if TYPE_CHECKING:  # the preset table itself stays torch-free, for `ditkit models`
    from ditkit.model.dit import DiT, DiTConfig

# (depth, hidden size, heads) per model size: Table 1 of the paper, plus small CPU/test sizes.
SIZES: dict[str, tuple[int, int, int]] = {
    "S": (12, 384, 6),
    "B": (12, 768, 12),
    "L": (24, 1024, 16),
    "XL": (28, 1152, 16),
    # Not in the paper: for CPU training (e.g. the Fashion-MNIST demo) and for tests.
    "XS": (6, 192, 3),
    "T": (2, 32, 2),
}
PAPER_SIZES = ("S", "B", "L", "XL")
PAPER_PATCHES = (8, 4, 2)
SMALL_PATCHES = (1, 2, 4)

PRESETS: dict[str, tuple[str, int]] = {
    f"DiT-{size}/{patch}": (size, patch)
    for size in SIZES
    for patch in (PAPER_PATCHES if size in PAPER_SIZES else SMALL_PATCHES)
}
PAPER_PRESETS = tuple(f"DiT-{s}/{p}" for s in PAPER_SIZES for p in PAPER_PATCHES)


def _canonical(name: str) -> str:
    """Accept 'DiT-XL/2', 'dit-xl/2', 'XL/2' and 'DiT-XL-2' for the same preset."""
    key = name.strip()
    if not key.lower().startswith("dit-"):
        key = "DiT-" + key
    body = key[4:].replace("-", "/").upper()
    return "DiT-" + body


def get_config(name: str, **overrides: Any) -> DiTConfig:
    """The config of a named preset, with any field overridden (input_size, num_classes, ...).

    Defaults are those of the paper's ImageNet 256 models: 32x32x4 latents, 1000 classes,
    learned sigma, adaLN-Zero blocks.
    """
    key = _canonical(name)
    if key not in PRESETS:
        close = difflib.get_close_matches(key, PRESETS, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise UserError(f"unknown model {name!r}; {hint}`ditkit models --all` lists every preset")
    from ditkit.model.dit import DiTConfig

    size, patch = PRESETS[key]
    depth, hidden, heads = SIZES[size]
    fields: dict[str, Any] = dict(
        depth=depth, hidden_size=hidden, num_heads=heads, patch_size=patch, name=key
    )
    fields.update(overrides)
    return DiTConfig(**fields)


def preset_of(depth: int, hidden_size: int, num_heads: int, patch_size: int) -> str | None:
    """The preset with this shape ("DiT-XL/2"), or None."""
    for name, (size, patch) in PRESETS.items():
        if SIZES[size] == (depth, hidden_size, num_heads) and patch == patch_size:
            return name
    return None


def create_model(name: str, **overrides: Any) -> DiT:
    """Build a freshly initialised DiT from a preset name, e.g. `create_model("DiT-XL/2")`."""
    from ditkit.model.dit import DiT

    return DiT(get_config(name, **overrides))
