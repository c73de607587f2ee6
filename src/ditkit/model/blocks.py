"""Transformer blocks of DiT, one per conditioning design compared in the paper (Sec. 3.2, Fig. 5).

Every block maps tokens x (B, N, D) and conditioning (c (B, D), tokens (B, 2, D)) to (B, N, D).
- `adaln-zero`: adaptive LayerNorm whose shift/scale and a residual gate are regressed from c,
  the regression zero-initialised so that the block starts as the identity (the default).
- `adaln`: the same without the gate.
- `cross-attention`: t and y embeddings as a two-token sequence, attended to after self-attention.
- `in-context`: t and y appended as two tokens to the sequence (handled by the model), plain ViT block.

LightningDiT's block options (Yao et al. 2025, arXiv 2501.01423, Sec. 4.1; hustvl/LightningDiT
`models/lightningdit.py`), each off by default: RMSNorm instead of LayerNorm (`norm`), a SwiGLU
feed-forward (`mlp`), a norm on each head's queries and keys (`qk_norm`), 2-D rotary position
embeddings on them (`rope`, the angles from `ditkit.model.embeddings.RotaryEmbedding2d`) and adaLN
modulation without the shift (`adaln_shift=False`). The state-dict keys are theirs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ditkit.choices import ACTIVATIONS, BLOCK_DESIGNS, MLPS, NORMS
from ditkit.model.cost import modulation_count, swiglu_hidden
from ditkit.model.recompute import recompute_block

# LayerNorm epsilon of the official implementation; LightningDiT's RMSNorm uses the same.
NORM_EPS = 1e-6
# Epsilon of the LayerNorm LightningDiT puts on queries and keys when its blocks use LayerNorm (torch's
# default: they build `nn.LayerNorm(head_dim)`).
QK_LAYERNORM_EPS = 1e-5
# cos and sin of the rotary angles, each (N, head size); see `ditkit.model.embeddings.RotaryEmbedding2d`.
Rope = tuple[torch.Tensor, torch.Tensor]


def modulate(x: torch.Tensor, shift: torch.Tensor | None, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation: x (B, N, D), shift/scale (B, D) -> x * (1 + scale) + shift (no shift: None)."""
    x = x * (1 + scale.unsqueeze(1))
    return x if shift is None else x + shift.unsqueeze(1)


class RMSNorm(nn.Module):
    """Root-mean-square norm (Zhang & Sennrich 2019) with a learned scale, computed in float32."""

    def __init__(self, dim: int, eps: float = NORM_EPS) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


def _norm(hidden_size: int, kind: str = "layernorm") -> nn.Module:
    if kind == "rmsnorm":
        return RMSNorm(hidden_size)
    return nn.LayerNorm(hidden_size, elementwise_affine=False, eps=NORM_EPS)


def _qk_norm(head_size: int, kind: str) -> nn.Module:
    """The norm of each head's queries or keys: LightningDiT's, an RMSNorm or an affine LayerNorm."""
    if kind == "rmsnorm":
        return RMSNorm(head_size)
    return nn.LayerNorm(head_size, eps=QK_LAYERNORM_EPS)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(..., 2k) -> (..., 2k): each pair (a, b) of neighbouring features becomes (-b, a)."""
    a, b = x.unflatten(-1, (-1, 2)).unbind(-1)  # each (..., k)
    return torch.stack((-b, a), dim=-1).flatten(-2)


def apply_rope(x: torch.Tensor, rope: Rope) -> torch.Tensor:
    """Rotate each pair of features of x (B, nh, N, hs) by its angle: cos, sin (N, hs)."""
    cos, sin = (r.to(x.dtype) for r in rope)
    return x * cos + rotate_half(x) * sin


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (with bias), through SDPA.

    `qk_norm` ("layernorm" or "rmsnorm", None: off) normalises each head's queries and keys; rotary
    embeddings, when given to `forward`, rotate them after that norm (LightningDiT's order).
    """

    def __init__(self, hidden_size: int, num_heads: int, qk_norm: str | None = None) -> None:
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden size {hidden_size} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size, bias=True)
        if qk_norm is not None:
            self.q_norm = _qk_norm(hidden_size // num_heads, qk_norm)
            self.k_norm = _qk_norm(hidden_size // num_heads, qk_norm)
        self.qk_norm = qk_norm is not None
        self.proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor, rope: Rope | None = None) -> torch.Tensor:
        B, N, D = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, nh, N, hs)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, rope), apply_rope(k, rope)
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


class SwiGLU(nn.Module):
    """Gated feed-forward: w3(silu(x W1) * x W2), W1 and W2 fused in `w12` (LightningDiT's keys)."""

    def __init__(self, hidden_size: int, hidden: int) -> None:
        super().__init__()
        self.w12 = nn.Linear(hidden_size, 2 * hidden)
        self.w3 = nn.Linear(hidden, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.w12(x).chunk(2, dim=-1)  # each (..., hidden)
        return self.w3(F.silu(gate) * value)


class DiTBlock(nn.Module):
    """A DiT block; `design` picks how the conditioning enters (see the module docstring).

    `norm`, `mlp`, `qk_norm` and `adaln_shift` are LightningDiT's options (see `DiTConfig`); the
    defaults build DiT's block.
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        mlp_ratio: float,
        design: str,
        activation: str = "gelu-tanh",
        norm: str = "layernorm",
        mlp: str = "mlp",
        qk_norm: bool = False,
        adaln_shift: bool = True,
    ) -> None:
        super().__init__()
        if design not in BLOCK_DESIGNS:
            raise ValueError(f"unknown block design {design!r}; choose one of {', '.join(BLOCK_DESIGNS)}")
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")
        if mlp not in MLPS:
            raise ValueError(f"unknown mlp {mlp!r}; choose one of {', '.join(MLPS)}")
        self.design = design
        self.adaln_shift = adaln_shift
        self.norm1 = _norm(hidden_size, norm)
        self.attn = Attention(hidden_size, num_heads, norm if qk_norm else None)
        self.norm2 = _norm(hidden_size, norm)
        mlp_hidden = int(hidden_size * mlp_ratio)
        self.mlp: nn.Module = (
            SwiGLU(hidden_size, swiglu_hidden(mlp_hidden))
            if mlp == "swiglu"
            else Mlp(hidden_size, mlp_hidden, activation)
        )
        n_mod = modulation_count(design, adaln_shift)
        if n_mod:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, n_mod * hidden_size))
        if design == "cross-attention":
            self.norm_cross = _norm(hidden_size, norm)
            self.cross_attn = CrossAttention(hidden_size, num_heads)

    def forward(
        self,
        x: torch.Tensor,
        c: torch.Tensor,
        context: torch.Tensor,
        recompute_policy: str | None = None,
        rope: Rope | None = None,
    ) -> torch.Tensor:
        """(B, N, D) tokens, (B, D) conditioning, (B, 1 or 2, D) condition tokens -> (B, N, D).

        With `recompute_policy` ("full" or "selective", see `ditkit.model.recompute`) the block
        recomputes activations in backward. The checkpoint sits inside this method so that a block
        compiled in place (`ditkit.model.compilation.compile_blocks`) has it inside its graph, where the
        compiler applies the policy to the ops it sees. `rope`: the rotary angles' (cos, sin), each
        (N, head size), applied to the self-attention's queries and keys.
        """
        if recompute_policy is not None and torch.is_grad_enabled():
            return recompute_block(self._forward, x, c, context, rope, policy=recompute_policy)
        return self._forward(x, c, context, rope)

    def _modulation(
        self, c: torch.Tensor
    ) -> list[tuple[torch.Tensor | None, torch.Tensor, torch.Tensor | None]]:
        """(shift, scale, gate), each (B, D), for the attention and then the MLP, regressed from c (B, D) in
        the order [shift1, scale1, gate1, shift2, ...]; without `adaln_shift` the shifts are missing
        (LightningDiT: scale1, gate1, scale2, gate2) and None here, as are the gates of `adaln`."""
        per_branch = modulation_count(self.design, self.adaln_shift) // 2
        chunks = self.adaLN_modulation(c).chunk(2 * per_branch, dim=1)
        branches = []
        for i in range(2):
            vectors = list(chunks[i * per_branch : (i + 1) * per_branch])
            shift = vectors.pop(0) if self.adaln_shift else None
            scale = vectors.pop(0)
            branches.append((shift, scale, vectors[0] if vectors else None))
        return branches

    def _forward(
        self, x: torch.Tensor, c: torch.Tensor, context: torch.Tensor, rope: Rope | None = None
    ) -> torch.Tensor:
        if self.design in ("adaln-zero", "adaln"):
            (shift1, scale1, gate1), (shift2, scale2, gate2) = self._modulation(c)
            x = x + _gated(gate1, self.attn(modulate(self.norm1(x), shift1, scale1), rope))
            return x + _gated(gate2, self.mlp(modulate(self.norm2(x), shift2, scale2)))
        x = x + self.attn(self.norm1(x), rope)
        if self.design == "cross-attention":
            x = x + self.cross_attn(self.norm_cross(x), context)
        return x + self.mlp(self.norm2(x))


def _gated(gate: torch.Tensor | None, y: torch.Tensor) -> torch.Tensor:
    """y (B, N, D) scaled by an adaLN-Zero gate (B, D); unchanged without one."""
    return y if gate is None else gate.unsqueeze(1) * y


class FinalLayer(nn.Module):
    """adaLN-modulated norm (always with a shift, in LightningDiT too), then a linear map of each token
    to p * p * out_channels values."""

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int, norm: str = "layernorm") -> None:
        super().__init__()
        self.norm_final = _norm(hidden_size, norm)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels, bias=True)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))
