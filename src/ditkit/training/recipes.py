"""Named training recipes (`ditkit train --recipe NAME`): published runs' options as plain data.

A recipe is a dict of `TrainConfig` fields; options given with it take over, and `--set` fields merge with
the recipe's `model_overrides`. The resolved options are what `train_config.json` records.
"""

from __future__ import annotations

from typing import Any

from ditkit.errors import UserError

# LightningDiT (Yao et al. 2025, "Reconstruction vs. Generation", arXiv 2501.01423), the training part of
# hustvl/LightningDiT's configs/lightningdit_xl_vavae_f16d32.yaml and its train.py. Their sampling (Euler,
# 250 steps, timestep shift 0.3, guidance interval from 0.125) is the sampler's business, not training's.
LIGHTNINGDIT_RECIPE: dict[str, Any] = {
    "model": "LightningDiT-XL/1",  # model.model_type (on VA-VAE f16d32 latents: 16 x 16 x 32)
    # model: use_rmsnorm, use_swiglu, use_rope true; use_qknorm false; wo_shift false (the shift is kept).
    # Given again here so that another --model keeps LightningDiT's block.
    "model_overrides": {
        "norm": "rmsnorm",
        "mlp": "swiglu",
        "rope": True,
        "qk_norm": False,
        "adaln_shift": True,
    },
    "learn_sigma": False,  # their velocity output has the input's channels (transport.py asserts it)
    "objective": "flow",  # transport: path_type Linear, prediction velocity (SiT's, kept)
    "time_sampling": "logit-normal",  # transport.use_lognorm: true (lognorm_mu 0, lognorm_sigma 1: ours)
    "cosine_loss": True,  # transport.use_cosine_loss: true, added to the MSE with weight 1 (train.py)
    "lr": 2e-4,  # optimizer.lr
    "betas": (0.9, 0.95),  # train.py: betas=(0.9, optimizer.beta2), beta2 0.95
    "weight_decay": 0.0,  # train.py: weight_decay=0
    "global_batch": 1024,  # train.global_batch_size
    "ema_decay": 0.9999,  # train.py: update_ema's default decay
    "grad_clip": None,  # no optimizer.max_grad_norm in the config: train.py does not clip
    "warmup_steps": 0,  # train.py: a constant learning rate from the first step
    "class_dropout": 0.1,  # LightningDiT's class_dropout_prob (DiT's)
}

TRAIN_RECIPES: dict[str, dict[str, Any]] = {"lightningdit": LIGHTNINGDIT_RECIPE}


def recipe_options(name: str, given: dict[str, Any]) -> dict[str, Any]:
    """The options of recipe `name` with those `given` taking over (`model_overrides` merged, the given
    fields winning)."""
    if name not in TRAIN_RECIPES:
        raise UserError(f"unknown recipe {name!r}; choose one of {', '.join(TRAIN_RECIPES)}")
    recipe = TRAIN_RECIPES[name]
    overrides = {**recipe.get("model_overrides", {}), **given.get("model_overrides", {})}
    return {**recipe, **given, "model_overrides": overrides}
