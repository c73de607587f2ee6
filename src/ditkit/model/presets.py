"""Named DiT configurations: the paper's twelve (Table 1), small ones for tests and CPU runs, and
LightningDiT's nine (hustvl/LightningDiT `models/lightningdit.py`, named as there: "LightningDiT-XL/1")."""

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

# LightningDiT's sizes (depth, hidden size, heads): DiT's B, L and XL and two larger ones, 1.0B and 1.6B.
LIGHTNING_SIZES: dict[str, tuple[int, int, int]] = {
    "B": SIZES["B"],
    "L": SIZES["L"],
    "XL": SIZES["XL"],
    "1p0B": (24, 1536, 24),
    "1p6B": (28, 1792, 28),
}
LIGHTNING_PREFIX = "LightningDiT-"
LIGHTNING_PRESETS: dict[str, tuple[str, int]] = {
    f"{LIGHTNING_PREFIX}{size}/{patch}": (size, patch)
    for size, patches in (("B", (1, 2)), ("L", (2,)), ("XL", (1, 2)), ("1p0B", (1, 2)), ("1p6B", (1, 2)))
    for patch in patches
}
# What a LightningDiT preset builds unless overridden: the architecture of their released models on
# VA-VAE f16d32 latents of 256x256 images (configs/reproductions/lightningdit_xl_vavae_f16d32_800ep_cfg.yaml:
# use_swiglu, use_rope, use_rmsnorm on, use_qknorm and wo_shift off, in_chans 32, learn_sigma off).
LIGHTNING_DEFAULTS: dict[str, Any] = dict(
    input_size=16, in_channels=32, learn_sigma=False, norm="rmsnorm", mlp="swiglu", rope=True
)


def is_lightning(config: DiTConfig) -> bool:
    """Whether a config uses any of LightningDiT's block options (for naming its preset)."""
    return bool(config.lightning_options())


def _canonical(name: str) -> str:
    """Accept 'DiT-XL/2', 'dit-xl/2', 'XL/2' and 'DiT-XL-2' for the same preset; 'lightningdit-xl-1' and
    'LightningDiT-1P0B/2' for LightningDiT's."""
    key = name.strip()
    if key.lower().startswith(LIGHTNING_PREFIX.lower()):
        body = key[len(LIGHTNING_PREFIX) :].replace("-", "/")
        by_upper = {size.upper(): size for size in LIGHTNING_SIZES}
        size, _, patch = body.partition("/")
        return f"{LIGHTNING_PREFIX}{by_upper.get(size.upper(), size)}/{patch}"
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
    if key not in PRESETS and key not in LIGHTNING_PRESETS:
        close = difflib.get_close_matches(key, [*PRESETS, *LIGHTNING_PRESETS], n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise UserError(f"unknown model {name!r}; {hint}`ditkit models --all` lists every preset")
    from ditkit.model.dit import DiTConfig

    lightning = key in LIGHTNING_PRESETS
    size, patch = LIGHTNING_PRESETS[key] if lightning else PRESETS[key]
    depth, hidden, heads = (LIGHTNING_SIZES if lightning else SIZES)[size]
    fields: dict[str, Any] = dict(LIGHTNING_DEFAULTS) if lightning else {}
    fields.update(depth=depth, hidden_size=hidden, num_heads=heads, patch_size=patch, name=key)
    fields.update(overrides)
    return DiTConfig(**fields)


def preset_of(
    depth: int, hidden_size: int, num_heads: int, patch_size: int, lightning: bool = False
) -> str | None:
    """The preset with this shape ("DiT-XL/2", or "LightningDiT-XL/2" with `lightning`), or None."""
    presets, sizes = (LIGHTNING_PRESETS, LIGHTNING_SIZES) if lightning else (PRESETS, SIZES)
    for name, (size, patch) in presets.items():
        if sizes[size] == (depth, hidden_size, num_heads) and patch == patch_size:
            return name
    return None


def create_model(name: str, **overrides: Any) -> DiT:
    """Build a freshly initialised DiT from a preset name, e.g. `create_model("DiT-XL/2")`."""
    from ditkit.model.dit import DiT

    return DiT(get_config(name, **overrides))
