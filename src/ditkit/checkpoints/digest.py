"""A digest of a set of weights: what a run started from (`ditkit train --init`) records."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import torch


def weights_sha256(state_dict: Mapping[str, torch.Tensor]) -> str:
    """The sha256 (hex) of a state dict's tensors: each key, dtype, shape and bytes, in key order.

    The same weights give the same digest whatever file they were read from (a .pt, safetensors, a
    diffusers folder converted to the official keys), so it names the weights, not the file.
    """
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().to("cpu").contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().data)  # a view: no copy
    return digest.hexdigest()
