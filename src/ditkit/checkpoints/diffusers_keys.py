"""The official DiT layout <-> diffusers' `DiTTransformer2DModel`: keys and configs (no diffusers import).

How diffusers lays the same network out (diffusers 0.42, models/transformers/dit_transformer_2d.py):
- the patch embedding is `pos_embed.proj`; the sin-cos position table is recomputed, not stored;
- every block's `norm1` (AdaLayerNormZero) owns a copy of the timestep and label embedders
  (`norm1.emb.timestep_embedder.linear_{1,2}`, `norm1.emb.class_embedder.embedding_table`), and the
  final layer uses block 0's copy. DiT has one of each: export duplicates them, import requires the
  copies to be equal;
- qkv is split into `attn1.to_q/k/v`, the MLP is `ff.net.0.proj` / `ff.net.2`, the block modulation is
  `norm1.linear`, the final layer is `proj_out_1` (modulation) and `proj_out_2` (linear).
One numerical difference cannot be carried over by weights: diffusers' timestep features use the
frequencies exp(-ln(10^4) i / (half - 1)) where DiT uses exp(-ln(10^4) i / half) (`downscale_freq_shift=1`
is fixed in CombinedTimestepLabelEmbeddings), so the two agree exactly only at t = 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ditkit.checkpoints.layout import StateDict
from ditkit.errors import UserError
from ditkit.model.blocks import NORM_EPS
from ditkit.model.dit import DiTConfig
from ditkit.model.embeddings import sincos_2d

DIFFUSERS_CLASS = "DiTTransformer2DModel"
# Class name in the configs of the first diffusers DiT conversions (facebook/DiT-XL-2-256); same layout.
LEGACY_CLASS = "Transformer2DModel"
# The MLP width ratio diffusers' BasicTransformerBlock always uses (FeedForward mult=4).
DIFFUSERS_MLP_RATIO = 4.0
# ditkit's MLP activations (DiTConfig.activation) -> diffusers' FeedForward activation_fn.
DIFFUSERS_ACTIVATIONS = {"gelu-tanh": "gelu-approximate", "gelu": "gelu"}
# DiTTransformer2DModel.__init__ defaults, used for keys a stored config leaves out.
DIFFUSERS_DEFAULTS: dict[str, Any] = {
    "num_attention_heads": 16,
    "attention_head_dim": 72,
    "in_channels": 4,
    "out_channels": None,
    "num_layers": 28,
    "sample_size": 32,
    "patch_size": 2,
    "num_embeds_ada_norm": 1000,
    "norm_eps": 1e-5,
    "activation_fn": "gelu-approximate",
    "norm_type": "ada_norm_zero",
    "attention_bias": True,
    "norm_elementwise_affine": False,
}

_EMB = "norm1.emb"
# Per-block embedder copies in diffusers <- the shared DiT keys.
EMBEDDER_KEYS = {
    f"{_EMB}.timestep_embedder.linear_1": "t_embedder.mlp.0",
    f"{_EMB}.timestep_embedder.linear_2": "t_embedder.mlp.2",
}
LABEL_TABLE = f"{_EMB}.class_embedder.embedding_table.weight"
# diffusers name -> DiT name of the layers that exist once per block (weight and bias each).
BLOCK_LAYERS = {
    "attn1.to_out.0": "attn.proj",
    "ff.net.0.proj": "mlp.fc1",
    "ff.net.2": "mlp.fc2",
    "norm1.linear": "adaLN_modulation.1",
}
# diffusers name -> DiT name of the layers outside the blocks.
TOP_LAYERS = {
    "pos_embed.proj": "x_embedder.proj",
    "proj_out_1": "final_layer.adaLN_modulation.1",
    "proj_out_2": "final_layer.linear",
}


def check_exportable(config: DiTConfig) -> None:
    """Raise a UserError if diffusers' DiTTransformer2DModel cannot hold this architecture."""
    h, w = config.size_hw
    if config.block != "adaln-zero":
        raise UserError(
            f"diffusers' DiT only has adaLN-Zero blocks; a {config.block!r} model cannot be exported to diffusers"
        )
    if config.interval_embedding:
        raise UserError("diffusers' DiT has one time embedding; a MeanFlow model (two) cannot be exported")
    lightning = config.lightning_options()
    if lightning:
        shown = ", ".join(f"{k}={v}" for k, v in lightning.items())
        raise UserError(f"diffusers' DiT has none of LightningDiT's block options; this model has {shown}")
    if h != w:
        raise UserError(f"diffusers' DiT takes square inputs only; this model's input is {h}x{w}")
    if config.mlp_ratio != DIFFUSERS_MLP_RATIO:
        raise UserError(f"diffusers' DiT has mlp_ratio 4; this model has {config.mlp_ratio}")
    if config.conditional and not config.null_class_row:
        raise UserError(
            "diffusers' DiT always has the null-class label row; this model was trained without one"
        )


def diffusers_config(config: DiTConfig) -> dict[str, Any]:
    """DiTTransformer2DModel keyword arguments for a DiT config (`check_exportable` first)."""
    check_exportable(config)
    return {
        "num_attention_heads": config.num_heads,
        "attention_head_dim": config.hidden_size // config.num_heads,
        "in_channels": config.in_channels,
        "out_channels": config.out_channels,
        "num_layers": config.depth,
        "sample_size": config.size_hw[0],
        "patch_size": config.patch_size,
        # An unconditional DiT becomes a one-class model whose label rows are all zero (exact).
        "num_embeds_ada_norm": config.num_classes if config.conditional else 1,
        "norm_eps": NORM_EPS,
        "activation_fn": DIFFUSERS_ACTIVATIONS[config.activation],
        "attention_bias": True,
        "norm_type": "ada_norm_zero",
        "norm_elementwise_affine": False,
    }


def position_table(config: DiTConfig) -> torch.Tensor:
    """The fixed sin-cos position embedding of a config, (1, N, D) float32, as DiT and diffusers build it."""
    h, w = config.size_hw
    grid = sincos_2d(config.hidden_size, h // config.patch_size, w // config.patch_size)
    return torch.from_numpy(grid).float().unsqueeze(0)


def to_diffusers_state_dict(state_dict: Mapping[str, torch.Tensor], config: DiTConfig) -> StateDict:
    """Official-layout tensors -> DiTTransformer2DModel tensors (pos_embed is dropped: diffusers recomputes it)."""
    check_exportable(config)
    sd = dict(state_dict)
    pos = sd["pos_embed"]
    tolerance = 4 * torch.finfo(pos.dtype).eps  # the table rounded to the model's dtype still passes
    if pos.device.type != "meta" and not torch.allclose(
        pos.float().cpu(), position_table(config), atol=tolerance
    ):
        raise UserError(
            "the model's pos_embed is not the fixed sin-cos table; diffusers' DiT recomputes that table and "
            "cannot hold other position embeddings"
        )
    out: StateDict = {}
    for theirs, ours in TOP_LAYERS.items():
        for p in ("weight", "bias"):
            out[f"{theirs}.{p}"] = sd[f"{ours}.{p}"]
    table = sd.get("y_embedder.embedding_table.weight")
    if table is None:  # unconditional: 1 class + null, both contributing nothing
        table = torch.zeros(2, config.hidden_size, dtype=sd["x_embedder.proj.weight"].dtype)
    for i in range(config.depth):
        pre = f"transformer_blocks.{i}"
        for theirs, ours in {
            **EMBEDDER_KEYS,
            **{k: f"blocks.{i}.{v}" for k, v in BLOCK_LAYERS.items()},
        }.items():
            for p in ("weight", "bias"):
                out[f"{pre}.{theirs}.{p}"] = sd[f"{ours}.{p}"].clone()
        out[f"{pre}.{LABEL_TABLE}"] = table.clone()
        for p in ("weight", "bias"):
            q, k, v = sd[f"blocks.{i}.attn.qkv.{p}"].chunk(3, dim=0)  # qkv rows are [q; k; v]
            out[f"{pre}.attn1.to_q.{p}"], out[f"{pre}.attn1.to_k.{p}"], out[f"{pre}.attn1.to_v.{p}"] = q, k, v
    return {k: v.contiguous() for k, v in out.items()}


def _shared_copy(sd: Mapping[str, torch.Tensor], suffix: str, depth: int, source: str) -> torch.Tensor:
    first = sd[f"transformer_blocks.0.{suffix}"]
    for i in range(1, depth):
        if not torch.equal(sd[f"transformer_blocks.{i}.{suffix}"], first):
            raise UserError(
                f"{source}: the timestep/label embedders differ between blocks 0 and {i} ({suffix}); ditkit's "
                "DiT shares one embedder, so it cannot hold this model exactly"
            )
    return first


def from_diffusers_state_dict(sd: Mapping[str, torch.Tensor], config: DiTConfig, source: str) -> StateDict:
    """DiTTransformer2DModel tensors -> official-layout tensors, pos_embed recomputed."""
    expected = set(to_diffusers_state_dict(_zeros_like_config(config), config))
    missing, unexpected = sorted(expected - set(sd)), sorted(set(sd) - expected)
    if missing or unexpected:
        what = f"missing {', '.join(missing[:4])}" if missing else f"unexpected {', '.join(unexpected[:4])}"
        raise UserError(f"{source} does not match its config.json ({what}); is it a diffusers DiT?")
    out: StateDict = {}
    for theirs, ours in TOP_LAYERS.items():
        for p in ("weight", "bias"):
            out[f"{ours}.{p}"] = sd[f"{theirs}.{p}"]
    for theirs, ours in EMBEDDER_KEYS.items():
        for p in ("weight", "bias"):
            out[f"{ours}.{p}"] = _shared_copy(sd, f"{theirs}.{p}", config.depth, source)
    table = _shared_copy(sd, LABEL_TABLE, config.depth, source)
    if config.conditional:
        out["y_embedder.embedding_table.weight"] = table
    elif table.any():
        raise UserError(f"{source} is a one-class model with a non-zero label table; ditkit cannot hold it")
    for i in range(config.depth):
        pre = f"transformer_blocks.{i}"
        for theirs, ours in BLOCK_LAYERS.items():
            for p in ("weight", "bias"):
                out[f"blocks.{i}.{ours}.{p}"] = sd[f"{pre}.{theirs}.{p}"]
        for p in ("weight", "bias"):
            qkv = [sd[f"{pre}.attn1.to_{n}.{p}"] for n in "qkv"]
            out[f"blocks.{i}.attn.qkv.{p}"] = torch.cat(qkv, dim=0)  # (3D, D) or (3D,)
    out["pos_embed"] = position_table(config)  # (1, N, D)
    return out


def _zeros_like_config(config: DiTConfig) -> StateDict:
    """Placeholder official-layout tensors of the right shapes (on the meta device: no memory)."""
    from ditkit.model.dit import DiT

    with torch.device("meta"):
        return DiT(config).state_dict()


def config_from_diffusers(cfg: Mapping[str, Any], source: str) -> tuple[DiTConfig, list[str]]:
    """The DiTConfig of a DiTTransformer2DModel config.json, and notes on what differs."""
    c = {**DIFFUSERS_DEFAULTS, **{k: v for k, v in cfg.items() if k in DIFFUSERS_DEFAULTS}}
    if cfg.get("_class_name") not in (DIFFUSERS_CLASS, LEGACY_CLASS):
        raise UserError(f"{source} is a {cfg.get('_class_name')!r}, not a diffusers {DIFFUSERS_CLASS}")
    fixed = {"norm_type": "ada_norm_zero", "attention_bias": True}
    fixed["norm_elementwise_affine"] = False
    for key, value in fixed.items():
        if c[key] != value:
            raise UserError(f"{source} has {key}={c[key]!r}; a DiT needs {value!r}")
    activations = {fn: name for name, fn in DIFFUSERS_ACTIVATIONS.items()}
    if c["activation_fn"] not in activations:
        known = " or ".join(repr(fn) for fn in activations)
        raise UserError(f"{source} has activation_fn={c['activation_fn']!r}; a DiT needs {known}")
    in_ch = int(c["in_channels"])
    out_ch = int(c["out_channels"] if c["out_channels"] is not None else in_ch)
    if out_ch not in (in_ch, 2 * in_ch):
        raise UserError(f"{source} predicts {out_ch} channels for {in_ch} inputs; a DiT predicts C or 2C")
    classes = int(c["num_embeds_ada_norm"])
    notes = []
    if float(c["norm_eps"]) != NORM_EPS:
        notes.append(
            f"the diffusers config has norm_eps={c['norm_eps']} for the MLP LayerNorm; ditkit uses DiT's {NORM_EPS}"
        )
    try:
        config = DiTConfig(
            input_size=int(c["sample_size"]),
            patch_size=int(c["patch_size"]),
            in_channels=in_ch,
            hidden_size=int(c["num_attention_heads"]) * int(c["attention_head_dim"]),
            depth=int(c["num_layers"]),
            num_heads=int(c["num_attention_heads"]),
            num_classes=classes if classes > 1 else 0,
            learn_sigma=out_ch == 2 * in_ch,
            activation=activations[c["activation_fn"]],
        )
    except ValueError as err:
        raise UserError(f"{source}: {err}") from None
    return config, notes
