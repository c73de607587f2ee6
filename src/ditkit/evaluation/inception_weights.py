"""Loading the FID Inception weights: a local file, the torch hub cache, or a checked download.

The weights are pytorch-fid's port of TF's 2015-12-05 Inception graph. Their file name carries the
first 8 hex digits of the file's SHA-256 (torch hub's convention); a download is checked against it
before it is renamed into the cache, and so is a file found in the cache.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from ditkit.errors import UserError
from ditkit.evaluation.inception import FIDInceptionV3

# pytorch-fid's release of the ported TF FID weights (the URL its inception.py downloads).
FID_WEIGHTS_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
# The SHA-256 prefix in the file name, checked the way torch.hub checks it.
FID_WEIGHTS_SHA256_PREFIX = "6726825d"
# BatchNorm's step counter: absent from older checkpoints and unused at inference.
_OPTIONAL_SUFFIX = ".num_batches_tracked"


def cached_weights_path() -> Path:
    """Where torch hub keeps the weights (`$TORCH_HOME/hub/checkpoints/`), shared with pytorch-fid."""
    return Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_NAME


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_inception_weights(download: bool = True) -> Path:
    """Return the path of checked weights in the torch hub cache, downloading them if allowed."""
    path = cached_weights_path()
    if path.is_file():
        if not sha256_of(path).startswith(FID_WEIGHTS_SHA256_PREFIX):
            raise UserError(
                f"{path} is corrupt (SHA-256 does not start with {FID_WEIGHTS_SHA256_PREFIX}); delete it"
            )
        return path
    hint = f"pass --inception PATH to a local copy of {FID_WEIGHTS_NAME} ({FID_WEIGHTS_URL})"
    if not download:
        raise UserError(f"no Inception weights at {path}; {hint}")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # Writes to a temporary file and renames it only when the hash prefix matches.
        torch.hub.download_url_to_file(FID_WEIGHTS_URL, str(path), hash_prefix=FID_WEIGHTS_SHA256_PREFIX)
    except (OSError, RuntimeError) as err:
        raise UserError(f"could not download the Inception weights ({err}); {hint}") from err
    return path


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a `.pth` (tensors only, `weights_only=True`) or `.safetensors` state dict."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no Inception weights file at {path}; pass the path of {FID_WEIGHTS_NAME}")
    state: object
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises many types for a bad pickle
        raise UserError(f"cannot read Inception weights {path}: {str(err).splitlines()[0]}") from err
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path} does not hold a state dict of tensors; pass {FID_WEIGHTS_NAME}")
    return state


def check_layout(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Raise a UserError naming the first key that is missing, unexpected or of the wrong shape."""
    expected = {k: v.shape for k, v in model.state_dict().items() if not k.endswith(_OPTIONAL_SUFFIX)}
    given = {k: v.shape for k, v in state.items() if not k.endswith(_OPTIONAL_SUFFIX)}
    hint = f"it is not the FID Inception ({FID_WEIGHTS_NAME})"
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    if missing or unexpected:
        detail = f"{len(missing)} missing keys (first {missing[0]})" if missing else ""
        if unexpected:
            detail += ("; " if detail else "") + f"{len(unexpected)} unexpected keys (first {unexpected[0]})"
        raise UserError(f"{source}: {detail}; {hint}")
    for key, shape in expected.items():
        if given[key] != shape:
            raise UserError(f"{source}: {key} has shape {tuple(given[key])}, expected {tuple(shape)}; {hint}")


def load_inception(
    path: str | os.PathLike[str] | None = None, device: str | torch.device = "cpu", download: bool = True
) -> FIDInceptionV3:
    """Build the FID Inception-v3 and load its weights, in eval mode without gradients.

    Args:
        path: a local `pt_inception-2015-12-05-6726825d.pth` (or the same tensors as .safetensors).
            If None, the torch hub cache is used, downloading (with its hash checked) when allowed.
        device: where to put the network.
        download: allow the download when `path` is None and the cache is empty.

    Returns:
        The network; `model(images)` gives {"pool": (N, 2048), "spatial": (N, 2023), "logits": (N, 1008)}.
    """
    weights = Path(path) if path is not None else fetch_inception_weights(download)
    state = read_state_dict(weights)
    model = FIDInceptionV3()
    check_layout(model, state, str(weights))
    model.load_state_dict(state, strict=False)  # only num_batches_tracked may be absent (checked above)
    return model.to(device).eval().requires_grad_(False)
