"""REPA's frozen vision encoders: DINOv2 from torch.hub, or a local module, each mapping images to patch tokens.

Every encoder here is called on images (B, C, H, W) in [-1, 1] (ditkit's pixel range) and returns
patch tokens (B, N, D):

- a torch.hub name (`ditkit.choices.REPA_HUB_ENCODERS`, e.g. "dinov2-vitb14"): REPA's own preprocessing
  (their train.py `preprocess_raw_image`): scale to [0, 1], normalise with ImageNet's mean and std,
  bicubic resize to 224, and DINOv2's `x_norm_patchtokens` (16 x 16 = 256 tokens at patch 14);
  one-channel images are repeated to three.
- a TorchScript file (`torch.jit.save`; no pickled Python objects) or a `package.module:callable` that
  returns an `nn.Module`: called on images in [0, 1] at the training size, with the data's channels; it
  does its own resizing and normalisation and returns (B, N, D).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ditkit.errors import UserError
from ditkit.training.config import repa_encoder_kind

# Where torch.hub finds DINOv2 (REPA's utils.py `load_encoders`).
DINOV2_HUB_REPO = "facebookresearch/dinov2"
# Where its weights come from (DINOv2's hubconf), probed before a download is tried.
DINOV2_WEIGHTS_HOST = "https://dl.fbaipublicfiles.com"
GITHUB = "https://github.com"
# REPA's train.py `preprocess_raw_image` for DINOv2: ImageNet's mean and std (timm's
# IMAGENET_DEFAULT_MEAN / STD), then a bicubic resize to 224.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DINOV2_INPUT_SIZE = 224


class DinoV2Tokens(nn.Module):
    """A torch.hub DINOv2 behind REPA's preprocessing; returns its normalised patch tokens (B, N, D)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.mean: Tensor
        self.std: Tensor
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        x = (images + 1) / 2  # [-1, 1] -> [0, 1], their x / 255
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        # Normalised first, resized second, as their preprocess_raw_image does.
        x = F.interpolate(x, size=DINOV2_INPUT_SIZE, mode="bicubic")
        tokens: Tensor = self.model.forward_features(x)["x_norm_patchtokens"]  # type: ignore[operator]
        return tokens  # (B, 256, D)


class UnitRange(nn.Module):
    """A local encoder called on images in [0, 1] (see the module docstring)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, images: Tensor) -> Tensor:
        return self.module((images + 1) / 2)


def hub_entry(name: str) -> str:
    """DINOv2's torch.hub entry point of a ditkit name: "dinov2-vitb14-reg" -> "dinov2_vitb14_reg"."""
    return name.replace("-", "_")


def hub_cached(name: str) -> bool:
    """Whether torch.hub already holds DINOv2's code and these weights (then no network is needed)."""
    hub = Path(torch.hub.get_dir())
    entry = hub_entry(name)
    weights = entry.replace("_reg", "_reg4") + "_pretrain.pth"  # DINOv2's file names
    code = any(hub.glob("facebookresearch_dinov2_*/hubconf.py"))
    return code and (hub / "checkpoints" / weights).is_file()


def check_repa_encoder(spec: str) -> None:
    """Raise UserError, in one line and before anything is built, for an encoder that cannot be had: a
    missing local file, or a torch.hub model neither cached nor reachable."""
    kind = repa_encoder_kind(spec)
    if kind == "torchscript" and not Path(spec).is_file():
        raise UserError(f"--repa-encoder {spec}: no such file")
    if kind != "hub" or hub_cached(spec):
        return
    from ditkit.hub import unreachable_reason

    for host in (GITHUB, DINOV2_WEIGHTS_HOST):
        why = unreachable_reason(host)
        if why is not None:
            raise UserError(
                f"--repa-encoder {spec} downloads DINOv2 through torch.hub, which is out of reach ({why}); "
                "give a local encoder instead: a TorchScript file (.pt) or package.module:callable"
            )


def load_repa_encoder(spec: str, device: torch.device) -> nn.Module:
    """The frozen encoder `spec` names (eval mode, no gradients), on `device`."""
    kind = repa_encoder_kind(spec)
    if kind == "hub":
        model = torch.hub.load(DINOV2_HUB_REPO, hub_entry(spec), trust_repo=True)
        encoder: nn.Module = DinoV2Tokens(model)
    elif kind == "torchscript":
        try:
            module = torch.jit.load(spec, map_location="cpu")
        except (RuntimeError, ValueError) as err:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise UserError(f"--repa-encoder {spec} is not a TorchScript file: {first}") from err
        encoder = UnitRange(module)
    else:
        encoder = UnitRange(_from_callable(spec))
    return encoder.to(device).eval().requires_grad_(False)


def _from_callable(spec: str) -> nn.Module:
    module_name, _, attr = spec.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as err:
        raise UserError(f"--repa-encoder {spec}: {err}") from err
    module = target()
    if not isinstance(module, nn.Module):
        raise UserError(f"--repa-encoder {spec} returned a {type(module).__name__}, not a torch nn.Module")
    return module
