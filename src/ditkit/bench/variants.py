"""Whose training steps the benchmarks time, and the variants `ditkit bench cpu-compare` puts side by
side (names only: importing this costs no torch import)."""

from __future__ import annotations

# Whose step: the trainer's (`ditkit.training.step.TrainStep`) or the official script's, as rebuilt in
# `ditkit.bench.official` (the reference every ditkit row is compared with).
RECIPES = ("ditkit", "official")
# name -> (whose step, precision, compile); "float" is float32 with the device's matmul mode (TF32 on
# CUDA, as the official script sets it) and "auto" the trainer's default for the device.
VARIANTS: dict[str, tuple[str, str, str]] = {
    "official": ("official", "float", "none"),
    "official-bf16": ("official", "bf16", "none"),
    "ditkit": ("ditkit", "auto", "auto"),
    "ditkit-fp32": ("ditkit", "float", "none"),
    "ditkit-bf16": ("ditkit", "bf16", "none"),
    "ditkit-compiled": ("ditkit", "float", "blocks"),
    "ditkit-bf16-compiled": ("ditkit", "bf16", "blocks"),
}
DEFAULT_VARIANTS = ("official", "official-bf16", "ditkit", "ditkit-bf16")
