"""The options of a training run, as one typed dataclass written next to the results (`train_config.json`)."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ditkit.errors import UserError

# The official recipe (Peebles & Xie 2023, sec. 5 "Training"): AdamW at a constant 1e-4 with no weight
# decay, global batch 256, EMA decay 0.9999, and labels dropped with probability 0.1 for guidance.
OFFICIAL_LR = 1e-4
OFFICIAL_GLOBAL_BATCH = 256
OFFICIAL_EMA_DECAY = 0.9999
OFFICIAL_CLASS_DROPOUT = 0.1
# AdamW's default betas, which DiT keeps.
ADAM_BETAS = (0.9, 0.999)
PRECISIONS = ("auto", "fp32", "tf32", "bf16")
PARALLEL_MODES = ("ddp", "fsdp")
COMPILE_MODES = ("auto", "none", "blocks", "model")
CHECKPOINT_POLICIES = ("full", "selective")
NOISE_SCHEDULES = ("linear", "cosine")
FLIP_MODES = ("random", "none")
# The learning-rate schedules (see `ditkit.training.schedule`).
LR_SCHEDULES = ("constant", "wsd")
# Min-SNR-gamma loss weighting (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting
# Strategy"): the paper's recommended gamma.
MIN_SNR_GAMMA = 5.0
CONFIG_FILE = "train_config.json"


@dataclass
class TrainConfig:
    """Everything a training run needs; plain data (see `to_dict` / `from_dict`).

    Attributes:
        model: a preset name ("DiT-XL/2", "DiT-XS/4", ...); `model_overrides` changes any DiTConfig field
            (hidden_size, depth, num_heads, block, ...). input_size, in_channels and num_classes come from
            the data.
        data: "fashion-mnist", an image folder or a latent cache made by `ditkit prepare`.
        data_dir: folder of the Fashion-MNIST IDX files (default: Debian's location).
        image_size: image side in pixels (default: 32 for Fashion-MNIST, 256 for folders, the cache's).
        first_stage: for image data: "identity" (train on pixels) or a VAE spec ("sd-vae-ft-ema", a
            folder), encoded on the fly (slow: prefer `ditkit prepare`). None: identity for
            Fashion-MNIST, DiT's "sd-vae-ft-ema" for folders; a cache always uses its own.
        flip: "random" horizontal flips (DiT) or "none".
        global_batch: samples per optimizer step over all processes.
        micro_batch: samples per forward pass on each process; None = global_batch / processes.
            Smaller values accumulate gradients over several passes.
        lr, weight_decay, betas: AdamW.
        warmup_steps: linear learning-rate warmup from 0 (0 = none, as DiT).
        lr_schedule: "constant" (DiT) or "wsd": warmup, hold, then a linear decay to 0 over the last
            `decay_fraction` of the run; with a time budget the decay starts when that share of the
            budget remains (the start step is kept in checkpoints, so resume stays exact).
        decay_fraction: the share of the run the "wsd" decay takes, in (0, 1].
        min_snr_gamma: weight each sample's noise-prediction loss by min(SNR_t, gamma) / SNR_t
            (min-SNR-gamma, Hang et al. 2023; 5 is their choice); None = uniform, as DiT.
        grad_clip: clip the global gradient norm to this value (None = no clipping, as DiT).
        ema_decay: EMA decay per step (kept in float32).
        ema_warmup: use min(ema_decay, (1 + n) / (10 + n)) after n updates, for short runs.
        class_dropout: probability of dropping a label to the null class.
        steps: optimizer steps to train for (or give `epochs`).
        epochs: passes over the data, converted to steps (len(data) // global_batch per epoch).
        time_budget_minutes: stop (saving a checkpoint) once this much time has passed; None = no limit.
        precision: "auto" (bf16 autocast on GPUs that support it, else fp32), "fp32" (strict IEEE
            float32), "tf32" (TensorFloat-32 matmuls, CUDA only) or "bf16" (bf16 autocast; weights,
            optimizer state and EMA stay float32).
        compile: "auto" (blocks on CUDA, none on the CPU), "none", "blocks" (compile each transformer
            block, one shared graph) or "model".
        checkpointing: recompute the activations of this many blocks in backward (0 = none).
        checkpoint_policy: what those blocks recompute: "full" (everything) or "selective" (keep the
            matmul and attention outputs, recompute the cheap elementwise ops).
        parallel: "ddp" or "fsdp" (sharded parameters, for models that do not fit) under torchrun.
        learn_sigma, noise_schedule, diffusion_steps: the diffusion process (DiT: True, linear, 1000).
        seed: seeds the model init, data order and every training draw.
        ckpt_every, log_every, sample_every: periods in steps (0 = never; a checkpoint is always written
            at the end).
        keep_checkpoints: keep only the newest N checkpoints (0 = keep all).
        sample_cfg_scale, sample_steps: guidance scale and DDIM steps of the preview grids.
        num_workers: DataLoader worker processes per training process.
        device: "auto", "cpu", "cuda" (torchrun picks cuda:LOCAL_RANK).
        out: output folder.
    """

    model: str = "DiT-XL/2"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    data: str = "fashion-mnist"
    data_dir: str | None = None
    image_size: int | None = None
    first_stage: str | None = None
    flip: str = "random"
    global_batch: int = OFFICIAL_GLOBAL_BATCH
    micro_batch: int | None = None
    lr: float = OFFICIAL_LR
    weight_decay: float = 0.0
    betas: tuple[float, float] = ADAM_BETAS
    warmup_steps: int = 0
    lr_schedule: str = "constant"
    decay_fraction: float = 0.5
    min_snr_gamma: float | None = None
    grad_clip: float | None = None
    ema_decay: float = OFFICIAL_EMA_DECAY
    ema_warmup: bool = False
    class_dropout: float = OFFICIAL_CLASS_DROPOUT
    steps: int | None = None
    epochs: float | None = None
    time_budget_minutes: float | None = None
    precision: str = "auto"
    compile: str = "auto"
    checkpointing: int = 0
    checkpoint_policy: str = "full"
    parallel: str = "ddp"
    learn_sigma: bool = True
    noise_schedule: str = "linear"
    diffusion_steps: int = 1000
    seed: int = 0
    ckpt_every: int = 5000
    log_every: int = 50
    sample_every: int = 0
    keep_checkpoints: int = 0
    sample_cfg_scale: float = 4.0
    sample_steps: int = 25
    num_workers: int = 0
    device: str = "auto"
    out: str = "runs/train"

    def __post_init__(self) -> None:
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        self.check()

    def check(self) -> None:
        """Raise UserError for options that cannot work together."""
        _choice("precision", self.precision, PRECISIONS)
        _choice("parallel", self.parallel, PARALLEL_MODES)
        _choice("compile mode", self.compile, COMPILE_MODES)
        _choice("checkpoint policy", self.checkpoint_policy, CHECKPOINT_POLICIES)
        _choice("noise schedule", self.noise_schedule, NOISE_SCHEDULES)
        _choice("flip", self.flip, FLIP_MODES)
        _choice("learning-rate schedule", self.lr_schedule, LR_SCHEDULES)
        if not 0.0 < self.decay_fraction <= 1.0:
            raise UserError(f"--decay-fraction must lie in (0, 1], got {self.decay_fraction}")
        if self.min_snr_gamma is not None and not self.min_snr_gamma > 0:
            raise UserError(f"--min-snr-gamma must be positive, got {self.min_snr_gamma}")
        if (self.steps is None) == (self.epochs is None):
            raise UserError("give exactly one of --steps and --epochs")
        if self.steps is not None and self.steps < 1:
            raise UserError(f"--steps must be positive, got {self.steps}")
        if self.epochs is not None and not self.epochs > 0:
            raise UserError(f"--epochs must be positive, got {self.epochs}")
        if self.global_batch < 1 or (self.micro_batch is not None and self.micro_batch < 1):
            raise UserError("--global-batch and --micro-batch must be positive")
        if not self.lr > 0 or self.weight_decay < 0:
            raise UserError(f"need lr > 0 and weight decay >= 0, got {self.lr} and {self.weight_decay}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise UserError(f"--ema-decay must lie in [0, 1), got {self.ema_decay}")
        if not 0.0 <= self.class_dropout < 1.0:
            raise UserError(f"--class-dropout must lie in [0, 1), got {self.class_dropout}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise UserError(f"--grad-clip must be positive, got {self.grad_clip}")
        for name in (
            "warmup_steps",
            "checkpointing",
            "ckpt_every",
            "log_every",
            "sample_every",
            "num_workers",
        ):
            if getattr(self, name) < 0:
                raise UserError(f"{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.time_budget_minutes is not None and not self.time_budget_minutes > 0:
            raise UserError(f"--time-budget-minutes must be positive, got {self.time_budget_minutes}")

    def total_steps(self, num_items: int) -> int:
        """Steps of the whole run: `steps`, or `epochs` full passes of num_items // global_batch steps."""
        if self.steps is not None:
            return self.steps
        assert self.epochs is not None
        return max(1, math.ceil(self.epochs * (num_items // self.global_batch)))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise UserError(f"unknown training options: {', '.join(sorted(unknown))}")
        return cls(**d)

    def save(self, folder: str | Path) -> Path:
        """Write the resolved options to `folder/train_config.json` (atomically)."""
        from ditkit.atomic import atomic_write_text

        path = Path(folder) / CONFIG_FILE
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return path


def _choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UserError(f"unknown {what} {value!r}; choose one of {', '.join(choices)}")


# Options that change what a resumed run computes; the others (logging, periods, time budget...) may differ.
RESUME_INVARIANT = (
    "model",
    "model_overrides",
    "data",
    "image_size",
    "first_stage",
    "flip",
    "global_batch",
    "lr",
    "weight_decay",
    "betas",
    "warmup_steps",
    "lr_schedule",
    "decay_fraction",
    "min_snr_gamma",
    "grad_clip",
    "ema_decay",
    "ema_warmup",
    "class_dropout",
    "learn_sigma",
    "noise_schedule",
    "diffusion_steps",
    "seed",
)


def resume_mismatches(saved: dict[str, Any], current: TrainConfig) -> list[str]:
    """Names of the options that differ between a checkpoint's config and the current one."""
    now = current.to_dict()
    return [name for name in RESUME_INVARIANT if name in saved and _plain(saved[name]) != _plain(now[name])]


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value))
