"""Transformer blocks of DiT, one per conditioning design compared in the paper (Sec. 3.2, Fig. 5).

Every block maps tokens x (B, N, D) and conditioning (c (B, D), tokens (B, 2, D)) to (B, N, D).
- `adaln-zero`: adaptive LayerNorm whose shift/scale and a residual gate are regressed from c,
  the regression zero-initialised so that the block starts as the identity (the default).
- `adaln`: the same without the gate.
- `cross-attention`: t and y embeddings as a two-token sequence, attended to after self-attention.
- `in-context`: t and y appended as two tokens to the sequence (handled by the model), plain ViT block.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ditkit.choices import ACTIVATIONS, BLOCK_DESIGNS
from ditkit.model.recompute import recompute_block

# LayerNorm epsilon of the official implementation.
NORM_EPS = 1e-6


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation: x (B, N, D), shift/scale (B, D) -> x * (1 + scale) + shift."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def _norm(hidden_size: int) -> nn.LayerNorm:
    return nn.LayerNorm(hidden_size, elementwise_affine=False, eps=NORM_EPS)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (with bias), through SDPA."""

    def __init__(self, hidden_size: int, num_heads: int) -> None:
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden size {hidden_size} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size, bias=True)
        self.proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, nh, N, hs)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, nh, N, hs)
        return self.proj(out.transpose(1, 2).reshape(B, N, D))


class CrossAttention(nn.Module):
    """Multi-head attention from the image tokens to a short conditioning sequence."""

    def __init__(self, hidden_size: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(hidden_size, hidden_size, bias=True)
        self.kv = nn.Linear(hidden_size, 2 * hidden_size, bias=True)
        self.proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        hs = D // self.num_heads
        q = self.q(x).reshape(B, N, self.num_heads, hs).transpose(1, 2)  # (B, nh, N, hs)
        kv = self.kv(context).reshape(B, context.shape[1], 2, self.num_heads, hs).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, kv[0], kv[1])  # (B, nh, N, hs)
        return self.proj(out.transpose(1, 2).reshape(B, N, D))


class Mlp(nn.Module):
    """Pointwise feed-forward: Linear, GELU (DiT's tanh approximation, or exact), Linear."""

    def __init__(self, hidden_size: int, mlp_hidden: int, activation: str = "gelu-tanh") -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}")
        self.fc1 = nn.Linear(hidden_size, mlp_hidden)
        self.act = nn.GELU(approximate="tanh" if activation == "gelu-tanh" else "none")
        self.fc2 = nn.Linear(mlp_hidden, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class DiTBlock(nn.Module):
    """A DiT block; `design` picks how the conditioning enters (see the module docstring)."""

    def __init__(
        self, hidden_size: int, num_heads: int, mlp_ratio: float, design: str, activation: str = "gelu-tanh"
    ) -> None:
        super().__init__()
        if design not in BLOCK_DESIGNS:
            raise ValueError(f"unknown block design {design!r}; choose one of {', '.join(BLOCK_DESIGNS)}")
        self.design = design
        self.norm1 = _norm(hidden_size)
        self.attn = Attention(hidden_size, num_heads)
        self.norm2 = _norm(hidden_size)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio), activation)
        if design in ("adaln-zero", "adaln"):
            n_mod = 6 if design == "adaln-zero" else 4  # shift, scale (, gate) for attention and MLP
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, n_mod * hidden_size))
        if design == "cross-attention":
            self.norm_cross = _norm(hidden_size)
            self.cross_attn = CrossAttention(hidden_size, num_heads)

    def forward(
        self, x: torch.Tensor, c: torch.Tensor, context: torch.Tensor, recompute_policy: str | None = None
    ) -> torch.Tensor:
        """(B, N, D) tokens, (B, D) conditioning, (B, 1 or 2, D) condition tokens -> (B, N, D).

        With `recompute_policy` ("full" or "selective", see `ditkit.model.recompute`) the block
        recomputes activations in backward. The checkpoint sits inside this method so that a block
        compiled in place (`ditkit.model.compilation.compile_blocks`) has it inside its graph, where the
        compiler applies the policy to the ops it sees.
        """
        if recompute_policy is not None and torch.is_grad_enabled():
            return recompute_block(self._forward, x, c, context, policy=recompute_policy)
        return self._forward(x, c, context)

    def _forward(self, x: torch.Tensor, c: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        if self.design == "adaln-zero":
            shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(c).chunk(6, dim=1)
            x = x + gate1.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift1, scale1))
            return x + gate2.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift2, scale2))
        if self.design == "adaln":
            shift1, scale1, shift2, scale2 = self.adaLN_modulation(c).chunk(4, dim=1)
            x = x + self.attn(modulate(self.norm1(x), shift1, scale1))
            return x + self.mlp(modulate(self.norm2(x), shift2, scale2))
        x = x + self.attn(self.norm1(x))
        if self.design == "cross-attention":
            x = x + self.cross_attn(self.norm_cross(x), context)
        return x + self.mlp(self.norm2(x))


class FinalLayer(nn.Module):
    """adaLN-modulated LayerNorm, then a linear map of each token to p * p * out_channels values."""

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int) -> None:
        super().__init__()
        self.norm_final = _norm(hidden_size)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels, bias=True)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))
