"""Choice lists and shared defaults: the one place each option's allowed values are declared.

The library checks against these tuples and the CLI offers them as `choices`; this module imports
nothing (no torch, no numpy) so that building the command-line parsers and `--help` stay fast.
"""

from __future__ import annotations

# Numeric precision of the DiT: strict IEEE float32, TensorFloat-32 matmuls (CUDA), bfloat16 autocast.
PRECISIONS = ("fp32", "tf32", "bf16")
# ... and "auto": bf16 on GPUs that support it, else fp32 (`ditkit.model.precision.default_precision`).
PRECISION_MODES = ("auto", *PRECISIONS)
# torch.compile: nothing, each transformer block (one shared graph) or the whole forward.
COMPILE_CHOICES = ("none", "blocks", "model")
# ... and "auto": blocks on CUDA, none on the CPU (`ditkit.model.compilation.default_compile`).
COMPILE_MODES = ("auto", *COMPILE_CHOICES)
# Attention kernels scaled_dot_product_attention may be pinned to ("auto": PyTorch's choice;
# `ditkit.model.attention_kernel`).
SDPA_BACKENDS = ("auto", "flash", "efficient", "cudnn", "math")
# What activation-checkpointed blocks recompute (`ditkit.model.recompute`).
RECOMPUTE_POLICIES = ("full", "selective")
# Named beta schedules: DiT's linear one (Ho et al. 2020) and the cosine one (Nichol & Dhariwal 2021).
NOISE_SCHEDULES = ("linear", "cosine")
# Number of diffusion steps DiT trains with (Peebles & Xie 2023, sec. 3.1; Ho et al. 2020).
DEFAULT_DIFFUSION_STEPS = 1000
# Data-parallel strategies under torchrun: replicated (DDP) or sharded parameters (FSDP).
PARALLEL_MODES = ("ddp", "fsdp")
# Training-time horizontal flips: random (DiT) or none.
FLIP_MODES = ("random", "none")
# Optimizers: AdamW (DiT) or Muon on the blocks' weight matrices with AdamW on the rest
# (`ditkit.training.muon`).
OPTIMIZERS = ("adamw", "muon")
# Weight sets of a checkpoint: the EMA (what DiT samples with) or the raw training weights.
WEIGHT_SETS = ("ema", "model")
# Named sets of parameters `ditkit train --freeze` takes besides module names (`ditkit.training.freeze`).
FREEZE_PRESETS = ("all-but-adaln",)
# Learning-rate schedules: constant (DiT) or warmup-stable-decay (`ditkit.training.lr_schedule`).
LR_SCHEDULES = ("constant", "wsd")
# Conditioning designs of a DiT block compared in the paper (Sec. 3.2, Fig. 5; `ditkit.model.blocks`).
BLOCK_DESIGNS = ("adaln-zero", "adaln", "cross-attention", "in-context")
# Families of named presets (`ditkit.model.presets`): DiT's and LightningDiT's.
MODEL_FAMILIES = ("dit", "lightningdit")
# The MLP's activation: DiT's GELU with the tanh approximation (official weights need it) or the exact
# (erf) GELU, a cheaper kernel on CPUs whose tanh is slow (AVX2: 2.4 vs 6.7 ms forward and backward on
# a 32 x 49 x 512 tensor; README, "The demo").
ACTIVATIONS = ("gelu-tanh", "gelu")
# Normalisation of the blocks and the final layer: DiT's LayerNorm without learned parameters, or RMSNorm
# with a learned scale (LightningDiT, Yao et al. 2025, arXiv 2501.01423; `ditkit.model.blocks`).
NORMS = ("layernorm", "rmsnorm")
# The blocks' feed-forward: DiT's two-layer GELU MLP, or LightningDiT's SwiGLU (Shazeer 2020) with 2/3 of
# the MLP's hidden width so that the parameter count stays about the same.
MLPS = ("mlp", "swiglu")
# Where training metrics go besides metrics.jsonl (always written): nowhere else, or TensorBoard.
LOGGERS = ("jsonl", "tensorboard")
# Training objectives of the DiT backbone: DiT's Gaussian diffusion, or flow matching as in SiT
# (Ma et al. 2024, arXiv 2401.08740; `ditkit.transport`).
OBJECTIVES = ("diffusion", "flow", "meanflow")
# How messages name each objective, and the `TrainConfig` options it reads beyond the common ones
# (`ditkit.objectives` declares each objective's own from here; options no chosen objective reads are
# refused, not ignored). MeanFlow: Geng et al. 2025, arXiv 2505.13447 (`ditkit.objectives.meanflow`).
OBJECTIVE_DESCRIPTIONS = {
    "diffusion": "the diffusion objective",
    "flow": "flow matching",
    "meanflow": "MeanFlow",
}
OBJECTIVE_OPTIONS = {
    "diffusion": ("noise_schedule", "diffusion_steps", "min_snr_gamma"),
    "flow": (
        "path",
        "prediction",
        "loss_weight",
        "time_sampling",
        "logit_normal_mean",
        "logit_normal_std",
        "train_eps",
        "sample_eps",
        "cosine_loss",
    ),
    "meanflow": (
        "time_sampling",
        "logit_normal_mean",
        "logit_normal_std",
        "meanflow_interval_share",
        "meanflow_guidance",
        "meanflow_adaptive_power",
        "meanflow_jvp",
    ),
}
# REPA's encoders by torch.hub name (`ditkit.training.repa_encoders`): DINOv2's ViTs at patch 14, plain
# or with registers (Oquab et al. 2023; Darcet et al. 2024); REPA's default is dinov2-vitb14.
REPA_HUB_ENCODERS = tuple(f"dinov2-vit{size}14{reg}" for reg in ("", "-reg") for size in ("s", "b", "l", "g"))
# How the MeanFlow loss computes its Jacobian-vector product: forward-mode AD (`torch.func.jvp`) or two
# reverse passes (for modules forward-mode AD cannot run through, such as DDP's wrapper); "auto": the
# first in one process, the second under torchrun.
MEANFLOW_JVP_MODES = ("auto", "func", "backward")
# MeanFlow's sampler: a few jumps along the predicted average velocity.
MEANFLOW_SAMPLERS = ("meanflow",)
# SiT's interpolants x_t = alpha_t x1 + sigma_t x0: linear (rectified flow), generalised VP
# (trigonometric) and the VP path of score-based diffusion (SiT Sec. 2.2 and Table 1).
PATH_TYPES = ("Linear", "GVP", "VP")
# What a flow model predicts (SiT's names).
PREDICTIONS = ("velocity", "score", "noise")
# SiT's loss weights for score and noise predictions (None: unweighted).
LOSS_WEIGHTS = ("velocity", "likelihood")
# How flow training draws t: uniform (SiT) or logit-normal (Esser et al. 2024, SD3, Sec. 3.1).
TIME_SAMPLINGS = ("uniform", "logit-normal")
# The named flow samplers (`ditkit.transport.solvers`): the probability-flow ODE with torchdiffeq's
# adaptive dopri5 (SiT's default) or fixed-step Euler / Heun, and SiT's SDE with an Euler-Maruyama
# or Heun step.
FLOW_SAMPLERS = ("dopri5", "euler", "heun", "sde-euler", "sde-heun")
DETERMINISTIC_FLOW_SAMPLERS = ("dopri5", "euler", "heun")
# The samplers that walk a fixed time grid a timestep shift can bend (`SamplingSettings.timestep_shift`).
TIME_SHIFT_SAMPLERS = ("euler", "heun")
# The diffusion samplers (`ditkit.samplers`): ancestral DDPM, DDIM, DPM-Solver++(2M).
DIFFUSION_SAMPLERS = ("ddpm", "ddim", "dpm++2m")
# Every sampler name, for parsers that take either kind (each objective checks its own).
SAMPLERS = (*DIFFUSION_SAMPLERS, *FLOW_SAMPLERS, *MEANFLOW_SAMPLERS)
# The latent channels classifier-free guidance applies to: all, or the official DiT and SiT samplers'
# first three of four (`ditkit.samplers.guidance`).
GUIDED_CHANNELS = ("all", "first3")
# Whose training step a benchmark times: the trainer's (`ditkit.training.step.TrainStep`) or the
# official script's as rebuilt in `ditkit.bench.official_step` (the reference every ditkit row is compared with).
RECIPES = ("ditkit", "official")
# The steps `ditkit bench cpu-compare` puts side by side: name -> (whose step, precision, compile);
# "float" is float32 with the device's matmul mode (TF32 on CUDA, as the official script sets it)
# and "auto" the trainer's default for the device.
COMPARE_VARIANTS: dict[str, tuple[str, str, str]] = {
    "official": ("official", "float", "none"),
    "official-bf16": ("official", "bf16", "none"),
    "ditkit": ("ditkit", "auto", "auto"),
    "ditkit-fp32": ("ditkit", "float", "none"),
    "ditkit-bf16": ("ditkit", "bf16", "none"),
    "ditkit-compiled": ("ditkit", "float", "blocks"),
    "ditkit-bf16-compiled": ("ditkit", "bf16", "blocks"),
}
DEFAULT_COMPARE_VARIANTS = ("official", "official-bf16", "ditkit", "ditkit-bf16")

# How glibc's malloc treats freed CPU memory (`ditkit.cpu_memory`): kept for reuse (the default) or
# returned to the kernel as glibc does by default.
CPU_MALLOC_MODES = ("keep", "system")
# The built-in studies of `ditkit study` (`ditkit.study.presets`).
STUDIES = ("scaling", "blocks", "guidance", "objectives", "techniques")
