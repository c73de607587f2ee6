"""Parameters and Gflops of a DiT in closed form: what `ditkit models` prints, without building a model.

The paper's "Gflops" are multiply-accumulates of one forward pass on one input, attention included
(Peebles & Xie 2023, Table 4). Counting them by hand is exact because every one of them happens in a
linear layer, the patch convolution or the two attention matmuls; norms, activations and the label
lookup cost none. `tests/test_model.py` checks both counts against a real model under torch's FLOP
counter (`ditkit.model.flops`), for every block design. Imports nothing heavy: `ditkit models` runs
in a fraction of a second.
"""

from __future__ import annotations

from typing import Any

# Width of the sinusoidal timestep features fed to the timestep MLP (DiT, Sec. 3.1; as in ADM).
TIMESTEP_FREQ_DIM = 256
# Modulation vectors an adaLN block regresses: shift and scale (and gate, for adaLN-Zero) for attention
# and the MLP (Sec. 3.2); the final layer regresses a shift and a scale.
MODULATIONS = {"adaln-zero": 6, "adaln": 4, "cross-attention": 0, "in-context": 0}
FINAL_MODULATIONS = 2
# SwiGLU's hidden width is this fraction of the GELU MLP's (LightningDiT: `int(2/3 * mlp_hidden_dim)`),
# so that its three weight matrices hold about as many parameters as the MLP's two.
SWIGLU_WIDTH = 2 / 3


def modulation_count(block: str, shift: bool = True) -> int:
    """Vectors a block's adaLN regresses from c: (shift,) scale (, gate) for attention and the MLP."""
    n = MODULATIONS[block]
    return n - 2 if n and not shift else n


def swiglu_hidden(mlp_hidden: int) -> int:
    """SwiGLU's hidden width for a GELU MLP of width `mlp_hidden`, rounded down as LightningDiT does."""
    return int(SWIGLU_WIDTH * mlp_hidden)


def _linear(fan_in: int, fan_out: int, rows: int = 1) -> tuple[int, int]:
    """(parameters, multiply-accumulates) of a Linear with bias applied to `rows` vectors."""
    return fan_in * fan_out + fan_out, rows * fan_in * fan_out


def dit_cost(
    *,
    input_size: int | tuple[int, int] | list[int],
    patch_size: int,
    in_channels: int,
    hidden_size: int,
    depth: int,
    mlp_ratio: float = 4.0,
    num_classes: int = 1000,
    null_class_row: bool = True,
    learn_sigma: bool = True,
    block: str = "adaln-zero",
    num_heads: int = 16,
    norm: str = "layernorm",
    mlp: str = "mlp",
    qk_norm: bool = False,
    adaln_shift: bool = True,
    **_: Any,
) -> tuple[int, int]:
    """Parameters (the fixed position embedding included) and multiply-accumulates of one forward.

    Takes the fields of a `DiTConfig` (`dit_cost(**config.to_dict())`); other keys are ignored.
    Raises ValueError when the input is not a multiple of the patch size. LightningDiT's options cost
    no multiply-accumulates beyond SwiGLU's matmuls (norms and rotations are elementwise); RMSNorm and
    the query/key norms add their learned scales (and the LayerNorm's biases), rotary angles nothing.
    """
    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    p, d = patch_size, hidden_size
    if h % p or w % p:
        raise ValueError(f"input size {h}x{w} is not a multiple of the patch size {p}")
    n = (h // p) * (w // p)  # image tokens
    conditional = num_classes > 1
    n_context = 2 if conditional else 1  # t (and y) embeddings as tokens
    mlp_hidden = int(d * mlp_ratio)
    out = p * p * in_channels * (2 if learn_sigma else 1)
    norm_params = d if norm == "rmsnorm" else 0  # RMSNorm's scale; DiT's LayerNorm has none

    parts = [
        (in_channels * p * p * d + d, n * in_channels * p * p * d),  # patch embedding (a strided conv)
        (n * d, 0),  # fixed sin-cos positions
        _linear(TIMESTEP_FREQ_DIM, d),  # timestep MLP
        _linear(d, d),
        ((num_classes + int(null_class_row)) * d if conditional else 0, 0),  # labels (+ the null class)
        _linear(d, FINAL_MODULATIONS * d),  # final layer
        (norm_params, 0),
        _linear(d, out, n),
    ]
    tokens = n + n_context if block == "in-context" else n
    per_block = [
        _linear(d, 3 * d, tokens),  # qkv
        (0, 2 * tokens * tokens * d),  # q k^T and attention @ v, over all heads
        _linear(d, d, tokens),  # attention output
        (2 * norm_params, 0),  # norm1, norm2
    ]
    if mlp == "swiglu":
        hidden = swiglu_hidden(mlp_hidden)
        per_block += [_linear(d, 2 * hidden, tokens), _linear(hidden, d, tokens)]  # w12, w3
    else:
        per_block += [_linear(d, mlp_hidden, tokens), _linear(mlp_hidden, d, tokens)]  # fc1, fc2
    if qk_norm:  # q and k norms over each head: a scale, and a bias for LayerNorm
        per_block.append((2 * (d // num_heads) * (1 if norm == "rmsnorm" else 2), 0))
    if MODULATIONS[block]:
        per_block.append(_linear(d, modulation_count(block, adaln_shift) * d))
    if block == "cross-attention":
        per_block += [
            (norm_params, 0),  # norm_cross
            _linear(d, d, n),  # q
            _linear(d, 2 * d, n_context),  # k, v
            (0, 2 * n * n_context * d),
            _linear(d, d, n),
        ]
    params = sum(x for x, _ in parts) + depth * sum(x for x, _ in per_block)
    macs = sum(m for _, m in parts) + depth * sum(m for _, m in per_block)
    return params, macs


def model_table(
    input_size: int = 32,
    in_channels: int = 4,
    num_classes: int = 1000,
    block: str = "adaln-zero",
    include_small: bool = False,
    family: str = "dit",
    options: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Parameters and Gflops of every preset (the paper's twelve, or all with `include_small`; or
    LightningDiT's nine with `family="lightningdit"`, with their released block options).

    `options` overrides DiTConfig fields of every row, e.g. {"rope": False, "qk_norm": True}.

    Returns:
        One dict per preset with name, depth, hidden_size, num_heads, patch_size, tokens, params,
        gflops; tokens, params and gflops are None for a preset whose patch does not divide the input.
    """
    from ditkit.model.presets import (
        LIGHTNING_DEFAULTS,
        LIGHTNING_PRESETS,
        LIGHTNING_SIZES,
        PAPER_PRESETS,
        PRESETS,
        SIZES,
    )

    lightning = family == "lightningdit"
    presets, sizes = (LIGHTNING_PRESETS, LIGHTNING_SIZES) if lightning else (PRESETS, SIZES)
    fields = {
        k: v for k, v in LIGHTNING_DEFAULTS.items() if lightning and k not in ("input_size", "in_channels")
    }
    fields.update(options or {})
    rows = []
    for name in presets if include_small or lightning else PAPER_PRESETS:
        size, patch = presets[name]
        depth, hidden, heads = sizes[size]
        row: dict[str, Any] = dict(
            name=name, depth=depth, hidden_size=hidden, num_heads=heads, patch_size=patch
        )
        fits = input_size % patch == 0
        params, macs = (
            dit_cost(
                input_size=input_size,
                patch_size=patch,
                in_channels=in_channels,
                hidden_size=hidden,
                depth=depth,
                num_heads=heads,
                num_classes=num_classes,
                **{"block": block, **fields},
            )
            if fits
            else (None, None)
        )
        row["tokens"] = (input_size // patch) ** 2 if fits else None
        row["params"] = params
        row["gflops"] = round(macs / 1e9, 3) if macs is not None else None
        rows.append(row)
    return rows
