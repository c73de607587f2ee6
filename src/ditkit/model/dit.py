"""The Diffusion Transformer (Peebles & Xie 2023, Sec. 3): a ViT over patches of a (latent) image.

Inputs x (B, C, H, W), timesteps t (B,) and labels y (B,); output (B, C or 2C, H, W): the
predicted noise, followed by the variance interpolation values when sigma is learned. The
state-dict keys are those of the official implementation, so its checkpoints load as they are.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ditkit.choices import ACTIVATIONS, MLPS, NORMS
from ditkit.model.blocks import BLOCK_DESIGNS, DiTBlock, FinalLayer
from ditkit.model.embeddings import (
    LabelEmbedder,
    PatchEmbed,
    RotaryEmbedding2d,
    TimestepEmbedder,
    sincos_2d,
)
from ditkit.model.recompute import check_policy
from ditkit.options import from_record

# Probability of replacing a label by the null class during training (DiT, Sec. 3.1 / App. A).
DEFAULT_CLASS_DROPOUT = 0.1
# The DiTConfig fields of LightningDiT's block options; their defaults build DiT's block.
LIGHTNING_OPTIONS = ("norm", "mlp", "rope", "qk_norm", "adaln_shift")


@dataclass
class DiTConfig:
    """Everything needed to build a DiT; plain data, JSON-serialisable via `to_dict`.

    Attributes:
        input_size: spatial size of the model input (latent), an int or (height, width).
        patch_size: side p of the square patches; input sides must be multiples of it.
        in_channels: channels of the input (4 for SD-VAE latents).
        hidden_size, depth, num_heads, mlp_ratio: the transformer's width, blocks, heads, MLP ratio.
        class_dropout_prob: label dropout for classifier-free guidance.
        num_classes: number of classes; 0 or 1 makes the model unconditional.
        null_class_row: the label table has one more row, the null class of classifier-free guidance
            (ditkit always trains with it; official models trained without label dropout lack it and
            cannot be guided).
        learn_sigma: output the variance interpolation values too (2 * in_channels outputs).
        block: conditioning design, one of "adaln-zero", "adaln", "cross-attention", "in-context".
        activation: the MLP's, "gelu-tanh" (DiT's) or "gelu" (exact; faster on AVX2 CPUs).
        recompute_blocks: recompute the activations of the first `recompute_blocks` blocks in backward
            (0: none; depth or more: all) to save memory.
        recompute_policy: how those blocks are checkpointed: "full" (keep only each block's input,
            recompute the whole block) or "selective" (also keep the matmul and attention outputs,
            recompute only the elementwise ops); see `ditkit.model.recompute`.
        interval_embedding: a second timestep embedder for the length h of a time interval, added to
            the time's embedding (MeanFlow, Geng et al. 2025: the model sees both times); the model is
            then called with t of shape (B, 2) = (time, interval). Its output layer starts at zero, so
            a model without it (flow matching) fine-tunes into one that has it unchanged at first.
        norm, mlp, rope, qk_norm, adaln_shift: LightningDiT's block (Yao et al. 2025, arXiv 2501.01423,
            Sec. 4.1; its released models use rmsnorm, swiglu and rope). `norm`: "layernorm" (DiT's,
            no learned parameters) or "rmsnorm" (a learned scale) in the blocks and the final layer.
            `mlp`: "mlp" (DiT's GELU MLP) or "swiglu" (hidden width int(2/3 * hidden * mlp_ratio);
            `activation` is then unused). `rope`: 2-D rotary embeddings on the self-attention's queries
            and keys, beside the absolute sin-cos embedding, which LightningDiT keeps. `qk_norm`: a
            norm of the `norm` kind on each head's queries and keys. `adaln_shift`: False regresses
            no shift in the blocks' adaLN (LightningDiT's `wo_shift`; the final layer keeps it).
    """

    input_size: int | tuple[int, int] = 32
    patch_size: int = 2
    in_channels: int = 4
    hidden_size: int = 1152
    depth: int = 28
    num_heads: int = 16
    mlp_ratio: float = 4.0
    class_dropout_prob: float = DEFAULT_CLASS_DROPOUT
    num_classes: int = 1000
    null_class_row: bool = True
    learn_sigma: bool = True
    block: str = "adaln-zero"
    activation: str = "gelu-tanh"
    recompute_blocks: int = 0
    recompute_policy: str = "full"
    interval_embedding: bool = False
    norm: str = "layernorm"
    mlp: str = "mlp"
    rope: bool = False
    qk_norm: bool = False
    adaln_shift: bool = True
    name: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.input_size, list):
            self.input_size = tuple(self.input_size)  # type: ignore[assignment]
        if self.block not in BLOCK_DESIGNS:
            raise ValueError(f"unknown block design {self.block!r}; choose one of {', '.join(BLOCK_DESIGNS)}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {self.activation!r}; choose one of {', '.join(ACTIVATIONS)}"
            )
        if self.norm not in NORMS:
            raise ValueError(f"unknown norm {self.norm!r}; choose one of {', '.join(NORMS)}")
        if self.mlp not in MLPS:
            raise ValueError(f"unknown mlp {self.mlp!r}; choose one of {', '.join(MLPS)}")
        if not self.adaln_shift and self.block not in ("adaln-zero", "adaln"):
            raise ValueError(f"adaln_shift=False needs adaLN blocks; the {self.block!r} blocks have none")
        if self.rope and self.block == "in-context":
            raise ValueError(
                "rope gives image patches grid positions; in-context blocks add tokens without one"
            )
        if self.rope and (self.hidden_size // self.num_heads) % 4:
            raise ValueError(
                f"rope needs a head size (hidden / heads) divisible by 4, got {self.hidden_size // self.num_heads}"
            )
        check_policy(self.recompute_policy)
        h, w = self.size_hw
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"input size {h}x{w} is not a multiple of the patch size {self.patch_size}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden size {self.hidden_size} is not divisible by {self.num_heads} heads")

    def lightning_options(self) -> dict[str, Any]:
        """LightningDiT's block options this config turns on: {field: value} of those off their default."""
        defaults = {f.name: f.default for f in dataclasses.fields(self) if f.name in LIGHTNING_OPTIONS}
        return {k: getattr(self, k) for k, v in defaults.items() if getattr(self, k) != v}

    @property
    def size_hw(self) -> tuple[int, int]:
        s = self.input_size
        return (s, s) if isinstance(s, int) else (int(s[0]), int(s[1]))

    @property
    def conditional(self) -> bool:
        return self.num_classes > 1

    @property
    def out_channels(self) -> int:
        return self.in_channels * 2 if self.learn_sigma else self.in_channels

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if isinstance(self.input_size, tuple):
            d["input_size"] = list(self.input_size)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DiTConfig:
        """The config of a `to_dict` record (ValueError for a key that is not a field)."""
        return from_record(cls, d, "unknown DiT config keys", ValueError)


def _linear(module: nn.Module) -> nn.Linear:
    if not isinstance(module, nn.Linear):
        raise TypeError(f"expected a Linear layer, got {type(module).__name__}")
    return module


class DiT(nn.Module):
    """Diffusion Transformer. Call as `model(x, t, y)`, the official signature."""

    y_embedder: LabelEmbedder  # present only when the model is class-conditional

    def __init__(self, config: DiTConfig | None = None, **kwargs: Any) -> None:
        super().__init__()
        config = config if config is not None else DiTConfig(**kwargs)
        self.config = config
        self.in_channels = config.in_channels
        self.out_channels = config.out_channels
        self.learn_sigma = config.learn_sigma
        self.patch_size = config.patch_size
        self.num_classes = config.num_classes if config.conditional else 0
        # Index of the null-class row used for classifier-free guidance; None when unconditional or
        # when the label table has no such row.
        self.null_class = self.num_classes if config.conditional and config.null_class_row else None
        self.grid_hw = (config.size_hw[0] // config.patch_size, config.size_hw[1] // config.patch_size)
        D = config.hidden_size

        self.x_embedder = PatchEmbed(config.patch_size, config.in_channels, D)
        self.t_embedder = TimestepEmbedder(D)
        if config.interval_embedding:
            self.h_embedder = TimestepEmbedder(D)
        if config.conditional:
            self.y_embedder = LabelEmbedder(
                config.num_classes, D, config.class_dropout_prob, null_row=config.null_class_row
            )
        num_patches = self.grid_hw[0] * self.grid_hw[1]
        # Fixed sin-cos positions; a frozen Parameter so that it sits in the state dict as officially.
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches, D), requires_grad=False)
        if config.rope:
            self.feat_rope = RotaryEmbedding2d(D // config.num_heads, *self.grid_hw)
        self.blocks = nn.ModuleList(
            [
                DiTBlock(
                    D,
                    config.num_heads,
                    config.mlp_ratio,
                    config.block,
                    config.activation,
                    norm=config.norm,
                    mlp=config.mlp,
                    qk_norm=config.qk_norm,
                    adaln_shift=config.adaln_shift,
                )
                for _ in range(config.depth)
            ]
        )
        self.final_layer = FinalLayer(D, config.patch_size, self.out_channels, config.norm)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """The official initialisation; adaLN-Zero blocks start as the identity, the output at 0."""

        def _xavier(module: nn.Module) -> None:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

        self.apply(_xavier)
        pos = sincos_2d(self.config.hidden_size, *self.grid_hw)
        self.pos_embed.data.copy_(torch.from_numpy(pos).float().unsqueeze(0))
        # Patch embedding initialised like a linear layer on flattened patches.
        w = self.x_embedder.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        self.x_embedder.proj.bias.data.zero_()  # type: ignore[union-attr]
        if self.config.conditional:
            nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        for layer in (_linear(self.t_embedder.mlp[0]), _linear(self.t_embedder.mlp[2])):
            nn.init.normal_(layer.weight, std=0.02)
        if self.config.interval_embedding:
            nn.init.normal_(_linear(self.h_embedder.mlp[0]).weight, std=0.02)
            zero_interval = _linear(self.h_embedder.mlp[2])  # the interval enters at zero (see DiTConfig)
            nn.init.zeros_(zero_interval.weight)
            nn.init.zeros_(zero_interval.bias)
        zero_init = [_linear(self.final_layer.adaLN_modulation[-1]), self.final_layer.linear]
        if self.config.block == "adaln-zero":
            zero_init += [_linear(block.get_submodule("adaLN_modulation.1")) for block in self.blocks]
        for layer in zero_init:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, h*w, p*p*C) tokens -> (B, C, h*p, w*p) image."""
        p, c = self.patch_size, self.out_channels
        h, w = self.grid_hw
        x = x.reshape(x.shape[0], h, w, p, p, c)
        x = torch.einsum("nhwpqc->nchpwq", x)  # (B, C, h, p, w, q)
        return x.reshape(x.shape[0], c, h * p, w * p)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        y: torch.Tensor | None = None,
        force_drop_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict noise (and variance values) for noisy inputs.

        Args:
            x: (B, C, H, W) noisy inputs.
            t: (B,) diffusion timesteps (int or float, 0..T-1) or flow times; with
                `interval_embedding`, (B, 2): the time and the length of the interval (a (B,) t means
                intervals of length 0).
            y: (B,) int64 class labels; `null_class` or None means no class.
            force_drop_ids: optional (B,) mask; where 1, the label is replaced by the null class.

        Returns:
            (B, out_channels, H, W).
        """
        if tuple(x.shape[-2:]) != self.config.size_hw:
            raise ValueError(f"model expects inputs of size {self.config.size_hw}, got {tuple(x.shape[-2:])}")
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        interval = None
        if t.ndim == 2:
            if not self.config.interval_embedding:
                raise ValueError("this model takes one time per sample; (B, 2) times need interval_embedding")
            t, interval = t[:, 0], t[:, 1]
        # (B, N, D), made contiguous: the patch embedding's transpose leaves it strided, and blocks
        # compiled by inductor (torch 2.13, CPU) return wrong gradients for a transposed input.
        tokens = (self.x_embedder(x) + self.pos_embed).contiguous()
        c = self.t_embedder(t)  # (B, D)
        if self.config.interval_embedding:
            c = c + self.h_embedder(torch.zeros_like(t) if interval is None else interval)
        context = [c]
        if self.config.conditional:
            if y is None:
                if self.null_class is None:
                    raise ValueError(
                        "this model has no null class (trained without label dropout); pass labels"
                    )
                y = torch.full((x.shape[0],), self.null_class, dtype=torch.long, device=x.device)
            y_emb = self.y_embedder(y, self.training, force_drop_ids)
            c = c + y_emb
            context.append(y_emb)
        cond_tokens = torch.stack(context, dim=1)  # (B, 1 or 2, D)

        n_image = tokens.shape[1]
        if self.config.block == "in-context":
            tokens = torch.cat([tokens, cond_tokens.to(tokens.dtype)], dim=1)  # (B, N + 2, D)
        n_ckpt = self.config.recompute_blocks if self.training else 0
        rope = self.feat_rope() if self.config.rope else None  # (cos, sin), each (N, head size)
        for i, block in enumerate(self.blocks):
            policy = self.config.recompute_policy if i < n_ckpt else None
            tokens = block(tokens, c, cond_tokens, recompute_policy=policy, rope=rope)
        tokens = tokens[:, :n_image]
        return self.unpatchify(self.final_layer(tokens, c))  # (B, out_channels, H, W)
