"""Muon for the transformer's hidden matrices, AdamW for every other parameter, as one optimizer.

Muon (Jordan et al. 2024, "Muon: An optimizer for hidden layers in neural networks") keeps SGD
momentum for a weight matrix and replaces each update by the nearest semi-orthogonal matrix,
computed by a few Newton-Schulz iterations. It is meant for the 2-D weights inside the network
(here the blocks' attention, MLP and adaLN projections); embeddings, the final layer, biases and the
patch convolution keep AdamW. The update's scale follows Moonshot's "Muon is Scalable for LLM
Training" (Liu et al. 2025): 0.2 * sqrt(max(rows, columns)) matches AdamW's update RMS, so the run's
one learning rate, its schedule and its weight decay serve both halves.

One `torch.optim.Optimizer` holds both kinds of parameter group, so checkpoints, exact resume and
the learning-rate schedule (`set_lr`) treat it like AdamW.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn
from torch.optim.adamw import adamw

# The quintic Newton-Schulz iteration of Muon's reference implementation: coefficients (a, b, c) of
# X <- a X + b (X X^T) X + c (X X^T)^2 X, and five iterations.
NEWTON_SCHULZ_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NEWTON_SCHULZ_STEPS = 5
# Muon's momentum (Nesterov) in the reference implementation.
MUON_MOMENTUM = 0.95
# Scale that gives an orthogonalised update of a (rows x columns) matrix the RMS of an AdamW update
# (Liu et al. 2025, sec. 2.2): 0.2 * sqrt(max(rows, columns)).
MATCH_ADAMW_RMS = 0.2


def orthogonalise(update: torch.Tensor, steps: int = NEWTON_SCHULZ_STEPS) -> torch.Tensor:
    """The semi-orthogonal matrix nearest to `update` (approximately: U V^T of its SVD U S V^T).

    Each iteration maps X to p(X X^T) X for the polynomial p(G) = a + b G + c G^2, so after k of them
    X_k = Q_k X_0 with Q_k an r x r matrix (r: the short side). A wide matrix (r x n, n >= 2r) is
    therefore iterated on Q and the Gram matrix G_k = Q_k G_0 Q_k^T alone, r x r products, and
    multiplied by X_0 once at the end: the same result (to float32 rounding) at about a third of the
    cost of iterating on X for the blocks' 128 x 512 and 128 x 768 matrices.

    Args:
        update: (..., rows, columns) float tensor: one matrix or a stack of same-shaped ones.
        steps: Newton-Schulz iterations (at least 1).
    Returns:
        tensor of `update`'s shape whose singular values lie near 1 (roughly 0.7-1.2 after five
        steps, which is what Muon needs; it is not an exact polar factor).
    """
    a, b, c = NEWTON_SCHULZ_COEFFICIENTS
    x = update.float()
    tall = x.shape[-2] > x.shape[-1]
    if tall:  # iterate on the wide orientation: the Gram matrix is the smaller one
        x = x.mT
    # Spectral norm <= Frobenius norm <= 1: inside the iteration's basin.
    x = x / (torch.linalg.matrix_norm(x, keepdim=True) + 1e-7)
    rows, cols = x.shape[-2:]
    if cols < 2 * rows:
        for _ in range(steps):
            gram = x @ x.mT  # (..., rows, rows)
            x = a * x + (b * gram + c * gram @ gram) @ x
    else:
        gram0 = x @ x.mT  # (..., rows, rows)
        eye = torch.eye(rows, dtype=x.dtype, device=x.device)
        q = a * eye + b * gram0 + c * gram0 @ gram0  # Q_1 = p(G_0)
        for _ in range(steps - 1):
            gram = q @ gram0 @ q.mT  # G_k = Q_k G_0 Q_k^T
            q = (a * eye + b * gram + c * gram @ gram) @ q
        x = q @ x
    return (x.mT if tall else x).to(update.dtype)


def _orthogonalise_all(updates: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """`orthogonalise` of each matrix, same-shaped ones stacked into one batched call."""
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, u in enumerate(updates):
        by_shape.setdefault(tuple(u.shape), []).append(i)
    out: list[torch.Tensor] = [torch.empty(0)] * len(updates)
    for indices in by_shape.values():
        stacked = orthogonalise(torch.stack([updates[i] for i in indices]))
        for i, o in zip(indices, stacked.unbind(), strict=True):
            out[i] = o
    return out


def muon_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Split a DiT's trainable parameters: (Muon's: the blocks' weight matrices, AdamW's: the rest)."""
    matrices: list[nn.Parameter] = []
    others: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        hidden_matrix = param.ndim == 2 and ".blocks." in f".{name}"  # also under DDP's "module."
        (matrices if hidden_matrix else others).append(param)
    return matrices, others


def _grads(params: list[torch.Tensor]) -> list[torch.Tensor]:
    return [p.grad for p in params if p.grad is not None]


class MuonAdamW(torch.optim.Optimizer):
    """Muon on the parameter group marked `muon=True`, AdamW on the others.

    Args:
        muon_params: 2-D weight matrices.
        adamw_params: every other trainable parameter.
        lr: learning rate of both (Muon's is scaled to match AdamW's update size, see the module).
        betas, eps: AdamW's.
        weight_decay: decoupled weight decay of both (p <- p * (1 - lr * weight_decay)).
        momentum: Muon's Nesterov momentum.
        fused: run AdamW's fused kernel (CPU or CUDA float tensors).
    """

    def __init__(
        self,
        muon_params: Iterable[nn.Parameter],
        adamw_params: Iterable[nn.Parameter],
        lr: float,
        betas: tuple[float, float],
        weight_decay: float = 0.0,
        momentum: float = MUON_MOMENTUM,
        eps: float = 1e-8,
        fused: bool = False,
    ) -> None:
        groups: list[dict[str, Any]] = [
            {"params": list(muon_params), "muon": True},
            {"params": list(adamw_params), "muon": False},
        ]
        for group in groups:
            if group["muon"] and any(p.ndim != 2 for p in group["params"]):
                raise ValueError("Muon takes 2-D weight matrices only")
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay, "momentum": momentum}
        super().__init__([g for g in groups if g["params"]], defaults)
        self.fused = fused

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[no-untyped-def, override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                (self._muon_step if group["muon"] else self._adamw_step)(params, group)
        return loss

    def _muon_step(self, params: list[torch.Tensor], group: dict[str, Any]) -> None:
        grads = _grads(params)
        for p in params:
            if not self.state[p]:
                self.state[p]["momentum_buffer"] = torch.zeros_like(p)
        buffers = [self.state[p]["momentum_buffer"] for p in params]
        torch._foreach_lerp_(buffers, grads, 1 - group["momentum"])
        nesterov = torch._foreach_lerp(grads, buffers, group["momentum"])
        torch._foreach_mul_(params, 1 - group["lr"] * group["weight_decay"])
        for param, update in zip(params, _orthogonalise_all(nesterov), strict=True):
            param.add_(update, alpha=-group["lr"] * MATCH_ADAMW_RMS * math.sqrt(max(param.shape)))

    def _adamw_step(self, params: list[torch.Tensor], group: dict[str, Any]) -> None:
        for p in params:
            if not self.state[p]:
                self.state[p]["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                self.state[p]["exp_avg"] = torch.zeros_like(p)
                self.state[p]["exp_avg_sq"] = torch.zeros_like(p)
        states = [self.state[p] for p in params]
        beta1, beta2 = group["betas"]
        # torch's AdamW kernel (fused on CPU and CUDA) over the state this optimizer keeps.
        adamw(
            params,
            _grads(params),
            [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states],
            [],
            [s["step"] for s in states],
            fused=self.fused or None,
            amsgrad=False,
            beta1=beta1,
            beta2=beta2,
            lr=group["lr"],
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=False,
        )
