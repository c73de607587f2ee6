"""REPA: representation alignment of a DiT's hidden tokens with a frozen vision encoder's patch tokens.

Yu et al. 2025, "Representation Alignment for Generation: Training Diffusion Transformers Is Easier Than
You Think" (arXiv 2410.06940; code: sihyun-yu/REPA). The tokens after block `depth` go through a small
MLP, the projector, and each projected token is pulled towards the encoder's token at its position:

    repa = -mean over tokens of cos(projector(h_n), z_n)        (their loss.py, per sample)
    loss = objective's loss + coeff * repa                      (their train.py, --proj-coeff)

It is an auxiliary term, independent of the objective: the trainer's step wraps the objective's loss
(`Repa.losses`). The DiT's forward is unchanged; a forward hook on block `depth` reads its tokens. The
projector is trained (its own AdamW, at the run's learning rate and betas) and kept in the training
checkpoint's `train_state.pt`, not in the model's weights: sampling never uses it, and the EMA leaves it
out. The encoder is frozen (eval mode, no gradients) and runs once per micro-batch under no_grad.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ditkit import distributed as D
from ditkit.errors import UserError


class Projector(nn.Sequential):
    """REPA's projector (their models/sit.py `build_mlp`): Linear, SiLU, Linear, SiLU, Linear, from the
    DiT's width to the encoder's, with `hidden` (2048) in between; xavier-uniform weights and zero biases,
    as SiT's `initialize_weights` gives every Linear."""

    def __init__(self, width: int, hidden: int, features: int) -> None:
        super().__init__(
            nn.Linear(width, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, features),
        )
        for layer in self:
            if isinstance(layer, nn.Linear):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)


def repa_loss(projected: Tensor, features: Tensor) -> Tensor:
    """REPA's alignment loss (their loss.py): minus the cosine similarity of each projected token with the
    encoder's token at its position, averaged over the tokens.

    Args:
        projected: (B, N, D) projector outputs.
        features: (B, N, D) the encoder's patch tokens.

    Returns:
        (B,) float32, in [-1, 1].
    """
    p = F.normalize(projected.float(), dim=-1)
    z = F.normalize(features.float(), dim=-1)
    return -(p * z).sum(dim=-1).mean(dim=1)


def match_tokens(features: Tensor, grid_hw: tuple[int, int]) -> Tensor:
    """The encoder's tokens on the DiT's token grid: as they are when the counts agree (REPA pairs DINOv2's
    16 x 16 tokens at 224 px with DiT-XL/2's 16 x 16 at 256 px), else the square grid resized bilinearly
    (antialiased when shrinking).

    Args:
        features: (B, M, D) patch tokens in raster order.
        grid_hw: (h, w) of the DiT's tokens.

    Returns:
        (B, h * w, D).
    """
    b, m, d = features.shape
    h, w = grid_hw
    if m == h * w:
        return features
    side = math.isqrt(m)
    if side * side != m:
        raise UserError(
            f"the REPA encoder returned {m} tokens, not a square grid, and the DiT has {h} x {w}; "
            "return one token per patch of a square grid"
        )
    grid = features.transpose(1, 2).reshape(b, d, side, side).float()  # (B, D, side, side)
    resized = F.interpolate(grid, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    return resized.flatten(2).transpose(1, 2)  # (B, h * w, D)


class Repa:
    """The REPA term of a run: the frozen encoder, the projector and its optimizer, and the hook.

    Args:
        encoder: images (B, C, H, W) in [-1, 1] -> patch tokens (B, M, D) (`ditkit.training.repa_encoders`).
        projector: the trained MLP (on the model's device).
        optimizer: steps the projector.
        block: the DiT block whose output tokens are aligned (block `depth`, counted from 1).
        grid_hw: (h, w) of the DiT's image tokens (in-context conditioning tokens after them are dropped).
        coeff: the term's weight in the loss.
    """

    def __init__(
        self,
        encoder: nn.Module,
        projector: nn.Module,
        optimizer: torch.optim.Optimizer,
        block: nn.Module,
        grid_hw: tuple[int, int],
        coeff: float,
    ) -> None:
        self.encoder, self.projector, self.optimizer = encoder, projector, optimizer
        self.block, self.grid_hw, self.coeff = block, grid_hw, coeff

    def parameters(self) -> Iterator[nn.Parameter]:
        return self.projector.parameters()

    @torch.no_grad()
    def targets(self, images: Tensor) -> Tensor:
        """The encoder's tokens (B, h * w, D) float32 for images (B, C, H, W) in [-1, 1], on the DiT's grid."""
        features = self.encoder(images)
        if features.ndim != 3 or features.shape[0] != images.shape[0]:
            raise UserError(
                f"the REPA encoder must return patch tokens (B, N, D); it returned {tuple(features.shape)} "
                f"for {images.shape[0]} images"
            )
        return match_tokens(features.float(), self.grid_hw)

    def losses(self, compute: Callable[[], dict[str, Tensor]], targets: Tensor) -> dict[str, Tensor]:
        """The objective's per-sample terms (`compute()`, which runs the DiT once) with "repa" (B,) added,
        and `coeff * repa` added to "loss"."""
        seen: list[Tensor] = []

        def keep_first(module: nn.Module, args: Any, out: Tensor) -> None:
            if not seen:  # the forward's own call (activation recompute may call it again in backward)
                seen.append(out)

        handle = self.block.register_forward_hook(keep_first)
        try:
            terms = compute()
        finally:
            handle.remove()
        if not seen:
            raise RuntimeError("the REPA hook saw no forward pass of its block")
        hidden = seen[0][:, : self.grid_hw[0] * self.grid_hw[1]]  # (B, N, D): image tokens only
        repa = repa_loss(self.projector(hidden), targets)
        return {**terms, "repa": repa, "loss": terms["loss"] + self.coeff * repa}

    def sync_gradients(self) -> None:
        """Average the projector's gradients over processes (DDP does this for the DiT); once per step."""
        if not D.is_distributed():
            return
        for p in self.projector.parameters():
            if p.grad is not None:
                p.grad.copy_(D.all_reduce_mean(p.grad))

    def state_dict(self) -> dict[str, Any]:
        """The projector's weights and its optimizer's state (tensors and plain data, on the CPU)."""
        return {
            "projector": {k: v.detach().cpu() for k, v in self.projector.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.projector.load_state_dict(state["projector"])
        kernels: list[dict[str, Any]] = [
            {k: g[k] for k in ("fused", "foreach") if k in g} for g in self.optimizer.param_groups
        ]
        self.optimizer.load_state_dict(state["optimizer"])
        for group, chosen in zip(self.optimizer.param_groups, kernels, strict=True):
            group.update(chosen)  # the kernel stays this run's (a checkpoint may move between devices)
