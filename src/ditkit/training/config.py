"""The options of a training run, as one typed dataclass written next to the results (`train_config.json`)."""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ditkit.choices import (
    COMPILE_MODES,
    DEFAULT_DIFFUSION_STEPS,
    FLIP_MODES,
    FREEZE_PRESETS,
    LOGGERS,
    LOSS_WEIGHTS,
    LR_SCHEDULES,
    MEANFLOW_JVP_MODES,
    NOISE_SCHEDULES,
    OBJECTIVE_DESCRIPTIONS,
    OBJECTIVE_OPTIONS,
    OBJECTIVES,
    OPTIMIZERS,
    PARALLEL_MODES,
    PATH_TYPES,
    PRECISION_MODES,
    PREDICTIONS,
    RECOMPUTE_POLICIES,
    REPA_HUB_ENCODERS,
    TIME_SAMPLINGS,
    WEIGHT_SETS,
)
from ditkit.errors import UserError
from ditkit.options import check_choices, from_record, option
from ditkit.run_folder import RUN_CONFIG_FILE
from ditkit.transport.settings import LOGIT_NORMAL_MEAN, LOGIT_NORMAL_STD, FlowSettings

# The official recipe (Peebles & Xie 2023, sec. 5 "Training"): AdamW at a constant 1e-4 with no weight
# decay, global batch 256, EMA decay 0.9999, and labels dropped with probability 0.1 for guidance.
OFFICIAL_LR = 1e-4
OFFICIAL_GLOBAL_BATCH = 256
OFFICIAL_EMA_DECAY = 0.9999
OFFICIAL_CLASS_DROPOUT = 0.1
# AdamW's default betas, which DiT keeps.
ADAM_BETAS = (0.9, 0.999)
# MeanFlow (Geng et al. 2025, Table 1): 25% of the samples on an interval r != t, adaptive weight power 1.
MEANFLOW_INTERVAL_SHARE = 0.25
MEANFLOW_ADAPTIVE_POWER = 1.0
# REPA (Yu et al. 2025, arXiv 2410.06940; sihyun-yu/REPA train.py and models/sit.py): align the tokens after
# block 8 (--encoder-depth) with DINOv2 ViT-B/14's (--enc-type dinov2-vit-b) through an MLP of width 2048
# (projector_dim), the alignment weighted 0.5 (--proj-coeff).
REPA_DEPTH = 8
REPA_COEFF = 0.5
REPA_PROJECTOR_DIM = 2048
REPA_ENCODER = "dinov2-vitb14"
# Min-SNR-gamma loss weighting (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting
# Strategy"): the paper's recommended gamma.
MIN_SNR_GAMMA = 5.0

# `--help` sections of the flags (see `ditkit.options`).
MODEL_DATA = "model and data"
DIFFUSION = "diffusion"
FLOW = "flow matching (--objective flow)"
MEANFLOW = "MeanFlow (--objective meanflow)"
REPA = "REPA (--repa-encoder)"
FINETUNE = "fine-tuning (--init)"
OPTIMISATION = "optimisation"
RUN = "run"

# Fields renamed since a run folder could record them: old name -> field. Old train_config.json files
# load, and `--sample-cfg-scale` parses, hidden, for one release (the guidance scale has one name).
RENAMED_OPTIONS = {"sample_cfg_scale": "sample_guidance_scale"}


@dataclass
class TrainConfig:
    """Everything a training run needs; plain data (see `to_dict` / `from_dict`).

    Each field is also a `ditkit train` flag (`global_batch` -> `--global-batch`): its entry below is the
    flag's help, its `option(...)` metadata gives choices, flag names and the help section (see
    `ditkit.options`). A new field gets its flag without edits to the CLI.

    Attributes:
        model: preset name (DiT-XL/2, DiT-S/4, DiT-T/2 ...; `ditkit models --all` lists them).
        model_overrides: change any DiTConfig field of the preset, e.g. --set hidden_size=256 --set depth=6
            --set block=in-context (input_size, in_channels and num_classes come from the data).
        data: "fashion-mnist", an image folder (one sub-folder per class) or a latent cache made by
            `ditkit prepare`.
        data_dir: folder of the Fashion-MNIST IDX files (default: Debian's /usr/share/datasets/fashion-mnist).
        image_size: image side in pixels (default: 32 for Fashion-MNIST, 256 for folders, the cache's).
        first_stage: for image data: "identity" (train on pixels) or a VAE ("sd-vae-ft-ema", "vavae-f16d32",
            a folder), encoded every step (slow: prefer `ditkit prepare`). Default: identity for Fashion-MNIST,
            DiT's sd-vae-ft-ema for folders; a cache always uses its own.
        flip: horizontal flips: "random" (DiT) or "none".
        classes: Fashion-MNIST only: train on these labels, e.g. "5,6,7,8,9", relabelled 0..n-1 in the
            order given (the model's label table has n rows and their names).
        init: start this new run (fresh optimizer, step 0, its own options) from the weights of a
            checkpoint: a ditkit run or checkpoint folder, an official or SiT .pt file or a diffusers
            folder. The EMA starts from the same weights; a new class count rebuilds the label table.
        init_weights: the checkpoint's weight set --init starts from: "ema" (falls back to the only set
            of a file holding one) or "model" (the raw training weights).
        init_class_map: a JSON file {"new class": source class} (names or label indices) whose source
            rows start the new label table's rows; classes it leaves out start as DiT's (normal, std 0.02).
        init_digest: the sha256 the --init weights must have (a checkpoint whose weights differ is
            refused); the run writes the digest of the weights it started from to train_config.json.
        freeze: parameters left out of training (requires_grad False, not in the optimizer): module
            names separated by commas (x_embedder,pos_embed; blocks.0; blocks.*.attn) or
            "all-but-adaln" (train only the blocks' adaLN modulations and the final layer).
        global_batch: samples per optimizer step over all processes.
        micro_batch: samples per forward pass on each process (default: global batch / processes);
            smaller values accumulate gradients over several passes.
        optimizer: "adamw" (DiT) or "muon": Muon on the blocks' weight matrices (orthogonalised
            momentum, its update scaled to AdamW's size so that lr and weight decay carry over) and
            AdamW on the other parameters (`ditkit.training.muon`; not with --parallel fsdp).
        lr: learning rate.
        weight_decay: decoupled weight decay.
        betas: AdamW betas.
        warmup_steps: linear learning-rate warmup from 0 over this many steps (0: none, as DiT).
        lr_schedule: "constant" (DiT) or "wsd": warmup, hold, then a linear decay to 0 over the last
            `decay_fraction` of the run; with a time budget the decay starts when that share of the
            budget remains (the start step is kept in checkpoints, so resume stays exact).
        decay_fraction: the share of the run the "wsd" decay takes, in (0, 1].
        min_snr_gamma: weight each sample's noise-prediction loss by min(SNR_t, gamma) / SNR_t
            (min-SNR-gamma, Hang et al. 2023; 5 is their choice); default: uniform, as DiT.
        grad_clip: clip the global gradient norm to this value (default: no clipping, as DiT).
        ema_decay: EMA decay per step (the EMA is kept in float32).
        ema_warmup: use min(decay, (1 + n) / (10 + n)) after n updates, for short runs.
        class_dropout: probability of dropping a label to the null class (for guidance).
        steps: optimizer steps to train for (or give --epochs).
        epochs: passes over the data, converted to steps (len(data) // global batch per epoch).
        time_budget_minutes: save a checkpoint and stop once this much time has passed.
        precision: "auto" (bf16 autocast on GPUs that support it, else fp32), "fp32" (strict IEEE
            float32), "tf32" (TensorFloat-32 matmuls, CUDA only) or "bf16" (bf16 autocast; weights,
            optimizer state and EMA stay float32).
        compile: torch.compile: "auto" (blocks on CUDA, none on the CPU, where it rarely pays off in
            short runs), "none", "blocks" (each transformer block, one shared graph) or "model".
        recompute_blocks: recompute the activations of this many blocks in backward (activation
            checkpointing; saves memory; 0: none).
        recompute_policy: what those blocks recompute: "full" (everything) or "selective" (keep the
            matmul and attention outputs, recompute the cheap elementwise ops).
        parallel: "ddp" or "fsdp" (sharded parameters, for models that do not fit) under torchrun.
        learn_sigma: learn the variance with the hybrid loss (DiT) or use a fixed one; flow matching
            ignores the variance channels (as SiT, whose released models keep them).
        objective: "diffusion" (DiT's Gaussian diffusion) or "flow" (flow matching as in SiT, Ma et al.
            2024; the options of the flow group need it).
        noise_schedule: beta schedule of the diffusion process (DiT: linear).
        diffusion_steps: length T of the diffusion chain (DiT: 1000).
        path: the flow's interpolant x_t = alpha_t x1 + sigma_t x0: "Linear" (SiT's default), "GVP" or "VP".
        prediction: what the flow model predicts: "velocity" (SiT's default), "score" or "noise".
        loss_weight: SiT's weighting of score and noise losses: "velocity" or "likelihood" (default: none).
        time_sampling: how flow training draws t: "uniform" (SiT) or "logit-normal" (SD3),
            t = sigmoid(n) with n ~ N(mean, std) (t runs from noise at 0 to data at 1).
        logit_normal_mean: mean of n (SD3's best: 0; > 0 favours the data end).
        logit_normal_std: standard deviation of n (SD3's best: 1).
        train_eps: training time cut-off (default: SiT's for the path and prediction).
        sample_eps: sampling time cut-off, stored for sampling (default: SiT's).
        cosine_loss: add LightningDiT's cosine term to the velocity loss: 1 - the cosine similarity of
            predicted and true velocity over the channels at each position, averaged over positions
            (their `use_cosine_loss`; added to the MSE with weight 1, as their train.py).
        meanflow_interval_share: the share of samples trained on an interval (r != t) rather than on the
            instantaneous velocity (MeanFlow's best on ImageNet: 0.25).
        meanflow_guidance: classifier-free guidance scale folded into MeanFlow's training target (1: none;
            the model then samples guided in one step at guidance 1).
        meanflow_adaptive_power: p of MeanFlow's adaptive loss weight 1 / (||error||^2 + 1e-3)^p (0: plain
            squared error; the paper's best: 1).
        meanflow_jvp: how the loss's Jacobian-vector product is computed: "func" (forward-mode AD,
            torch.func.jvp), "backward" (two reverse passes, where forward-mode AD cannot run, e.g.
            through DDP) or "auto" (func in one process, backward under torchrun).
        repa_encoder: align the DiT's hidden tokens with this frozen vision encoder's patch tokens (REPA,
            Yu et al. 2025; their default: dinov2-vitb14): a torch.hub DINOv2 name (dinov2-vits14,
            dinov2-vitb14, dinov2-vitl14, dinov2-vitg14, each also with -reg), a TorchScript file (.pt) or
            package.module:callable returning an nn.Module; local modules get images in [0, 1] and return
            patch tokens (B, N, D). Needs the images: pixel space or an image folder, not a latent cache.
        repa_depth: align the tokens after this block, counted from 1 (REPA's 8, for SiT-XL/2).
        repa_coeff: weight of the alignment term in the loss (REPA's 0.5).
        repa_projector_dim: hidden width of the projector MLP (REPA's 2048).
        seed: seeds the model init, data order and every training draw.
        ckpt_every: checkpoint period in steps (0: only at the end; one is always written at the end).
        log_every: period in steps of the metrics.jsonl lines (0: only at the end).
        sample_every: period in steps of the EMA preview grids (0: never).
        keep_checkpoints: keep only the newest N checkpoints (0: keep all).
        sample_guidance_scale: guidance scale of the preview grids (default: the objective's: 4 for diffusion and
            flow, 1 for MeanFlow, which folds guidance into training).
        sample_steps: steps of the preview grids (DDIM; the Euler ODE for flow models).
        logger: where metrics go besides metrics.jsonl (always written): jsonl (nowhere else) or
            tensorboard (the same scalars and the preview grids as TensorBoard events in
            <out>/tensorboard; needs `pip install 'ditkit[tensorboard]'`).
        num_workers: DataLoader worker processes per training process.
        device: "auto" (GPU if any), "cpu" or "cuda" (torchrun picks cuda:LOCAL_RANK).
        out: run folder (train_config.json, metrics.jsonl, checkpoints/ ...).
    """

    model: str = option("DiT-XL/2", group=MODEL_DATA)
    model_overrides: dict[str, Any] = option(default_factory=dict, flags=("--set",), group=MODEL_DATA)
    data: str = option("fashion-mnist", group=MODEL_DATA)
    data_dir: str | None = option(None, group=MODEL_DATA, metavar="DIR")
    image_size: int | None = option(None, group=MODEL_DATA)
    first_stage: str | None = option(None, group=MODEL_DATA)
    flip: str = option("random", choices=FLIP_MODES, group=MODEL_DATA)
    classes: str | None = option(None, group=MODEL_DATA, metavar="LABELS")
    init: str | None = option(None, group=FINETUNE, metavar="CHECKPOINT")
    init_weights: str = option("ema", choices=WEIGHT_SETS, group=FINETUNE)
    init_class_map: str | None = option(None, group=FINETUNE, metavar="FILE")
    init_digest: str | None = option(None, group=FINETUNE, metavar="SHA256")
    freeze: str | None = option(None, group=FINETUNE, metavar="PARTS")
    global_batch: int = option(OFFICIAL_GLOBAL_BATCH, group=OPTIMISATION)
    micro_batch: int | None = option(None, group=OPTIMISATION)
    optimizer: str = option("adamw", choices=OPTIMIZERS, group=OPTIMISATION)
    lr: float = option(OFFICIAL_LR, group=OPTIMISATION)
    weight_decay: float = option(0.0, group=OPTIMISATION)
    betas: tuple[float, float] = option(ADAM_BETAS, group=OPTIMISATION, metavar=("BETA1", "BETA2"))
    warmup_steps: int = option(0, group=OPTIMISATION)
    lr_schedule: str = option("constant", choices=LR_SCHEDULES, group=OPTIMISATION)
    decay_fraction: float = option(0.5, group=OPTIMISATION)
    min_snr_gamma: float | None = option(None, group=OPTIMISATION)
    grad_clip: float | None = option(None, group=OPTIMISATION)
    ema_decay: float = option(OFFICIAL_EMA_DECAY, group=OPTIMISATION)
    ema_warmup: bool = option(False, group=OPTIMISATION)
    class_dropout: float = option(OFFICIAL_CLASS_DROPOUT, group=OPTIMISATION)
    steps: int | None = option(None, group=OPTIMISATION)
    epochs: float | None = option(None, group=OPTIMISATION)
    time_budget_minutes: float | None = option(None, group=RUN)
    precision: str = option("auto", choices=PRECISION_MODES, group=RUN)
    compile: str = option("auto", choices=COMPILE_MODES, group=RUN)
    recompute_blocks: int = option(0, group=RUN)
    recompute_policy: str = option("full", choices=RECOMPUTE_POLICIES, group=RUN)
    parallel: str = option("ddp", choices=PARALLEL_MODES, group=RUN)
    learn_sigma: bool = option(True, group=DIFFUSION)
    noise_schedule: str = option("linear", choices=NOISE_SCHEDULES, group=DIFFUSION)
    diffusion_steps: int = option(DEFAULT_DIFFUSION_STEPS, group=DIFFUSION)
    objective: str = option("diffusion", choices=OBJECTIVES, group=FLOW)
    path: str = option("Linear", choices=PATH_TYPES, group=FLOW)
    prediction: str = option("velocity", choices=PREDICTIONS, group=FLOW)
    loss_weight: str | None = option(None, choices=LOSS_WEIGHTS, group=FLOW)
    time_sampling: str = option("uniform", choices=TIME_SAMPLINGS, group=FLOW)
    logit_normal_mean: float = option(LOGIT_NORMAL_MEAN, group=FLOW)
    logit_normal_std: float = option(LOGIT_NORMAL_STD, group=FLOW)
    train_eps: float | None = option(None, group=FLOW)
    sample_eps: float | None = option(None, group=FLOW)
    cosine_loss: bool = option(False, group=FLOW)
    meanflow_interval_share: float = option(MEANFLOW_INTERVAL_SHARE, group=MEANFLOW)
    meanflow_guidance: float = option(1.0, group=MEANFLOW)
    meanflow_adaptive_power: float = option(MEANFLOW_ADAPTIVE_POWER, group=MEANFLOW)
    meanflow_jvp: str = option("auto", choices=MEANFLOW_JVP_MODES, group=MEANFLOW)
    repa_encoder: str | None = option(None, group=REPA, metavar="ENCODER")
    repa_depth: int = option(REPA_DEPTH, group=REPA)
    repa_coeff: float = option(REPA_COEFF, group=REPA)
    repa_projector_dim: int = option(REPA_PROJECTOR_DIM, group=REPA)
    seed: int = option(0, group=OPTIMISATION)
    ckpt_every: int = option(5000, group=RUN)
    log_every: int = option(50, group=RUN)
    sample_every: int = option(0, group=RUN)
    keep_checkpoints: int = option(0, group=RUN)
    sample_guidance_scale: float | None = option(None, group=RUN)
    sample_steps: int = option(25, group=RUN)
    logger: str = option("jsonl", choices=LOGGERS, group=RUN)
    num_workers: int = option(0, group=RUN)
    device: str = option("auto", group=RUN)
    out: str = option("runs/train", group=RUN, required=True)

    def __post_init__(self) -> None:
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        self.check()

    def check(self) -> None:
        """Raise UserError for options that cannot work together."""
        check_choices(self)
        self.flow_settings()  # checks the eps values
        self._check_init_options()
        self._check_classes()
        if not self.logit_normal_std > 0:
            raise UserError(f"--logit-normal-std must be positive, got {self.logit_normal_std}")
        self._check_objective_options()
        self._check_repa()
        if self.cosine_loss and self.prediction != "velocity":
            raise UserError("--cosine-loss compares velocities: it needs --prediction velocity")
        if not 0.0 < self.decay_fraction <= 1.0:
            raise UserError(f"--decay-fraction must lie in (0, 1], got {self.decay_fraction}")
        if not 0.0 <= self.meanflow_interval_share <= 1.0:
            raise UserError(
                f"--meanflow-interval-share must lie in [0, 1], got {self.meanflow_interval_share}"
            )
        if not self.meanflow_guidance >= 1.0:
            raise UserError(f"--meanflow-guidance must be 1 (none) or more, got {self.meanflow_guidance}")
        if not self.meanflow_adaptive_power >= 0.0:
            raise UserError(
                f"--meanflow-adaptive-power must be 0 or more, got {self.meanflow_adaptive_power}"
            )
        if self.min_snr_gamma is not None and not self.min_snr_gamma > 0:
            raise UserError(f"--min-snr-gamma must be positive, got {self.min_snr_gamma}")
        if self.parallel == "fsdp" and self.compile == "model":
            raise UserError(
                "--parallel fsdp shards each block, so compile the blocks (--compile blocks): a "
                "whole-model compile would have to trace FSDP's all-gathers"
            )
        if self.parallel == "fsdp" and self.optimizer == "muon":
            raise UserError(
                "--optimizer muon orthogonalises whole weight matrices, which --parallel fsdp shards: "
                "use --parallel ddp or --optimizer adamw"
            )
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
            "recompute_blocks",
            "ckpt_every",
            "log_every",
            "sample_every",
            "num_workers",
        ):
            if getattr(self, name) < 0:
                raise UserError(f"{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.time_budget_minutes is not None and not self.time_budget_minutes > 0:
            raise UserError(f"--time-budget-minutes must be positive, got {self.time_budget_minutes}")
        if self.sample_guidance_scale is not None and not self.sample_guidance_scale >= 0:
            raise UserError(
                f"--sample-guidance-scale must be 0 or more (1: no guidance), got {self.sample_guidance_scale}"
            )

    def _check_classes(self) -> None:
        if self.classes is None:
            return
        if self.data != "fashion-mnist":
            raise UserError(
                "--classes selects Fashion-MNIST labels; an image folder's classes are its sub-folders "
                "(train on a folder holding only the ones you want)"
            )
        from ditkit.data.fashion_mnist_dataset import parse_class_list  # numpy and torch: not at parse time

        parse_class_list(self.classes)

    def _check_init_options(self) -> None:
        if self.init is None:
            given = [n for n in ("init_class_map", "init_digest") if getattr(self, n) is not None]
            if self.init_weights != "ema":
                given.insert(0, "init_weights")
            if given:
                flags = ", ".join("--" + n.replace("_", "-") for n in given)
                verb = "applies" if len(given) == 1 else "apply"
                raise UserError(f"{flags} {verb} to a run started from a checkpoint; add --init CHECKPOINT")
        if self.freeze is not None:
            parts = [part.strip() for part in self.freeze.split(",")]
            if not all(parts):
                raise UserError(
                    f"--freeze takes module names separated by commas (x_embedder,pos_embed) or one of "
                    f"{', '.join(FREEZE_PRESETS)}; got {self.freeze!r}"
                )

    def _check_repa(self) -> None:
        names = ("repa_depth", "repa_coeff", "repa_projector_dim")
        if self.repa_encoder is None:
            defaults = {f.name: f.default for f in dataclasses.fields(self)}
            changed = ["--" + n.replace("_", "-") for n in names if getattr(self, n) != defaults[n]]
            if changed:
                raise UserError(f"{', '.join(changed)} apply to REPA only; add --repa-encoder ENCODER")
            return
        repa_encoder_kind(self.repa_encoder)
        if self.repa_depth < 1 or self.repa_projector_dim < 1 or not self.repa_coeff > 0:
            raise UserError(
                "--repa-depth and --repa-projector-dim must be positive integers and --repa-coeff positive, "
                f"got {self.repa_depth}, {self.repa_projector_dim} and {self.repa_coeff}"
            )
        refused = {
            "objective": ("meanflow", "MeanFlow's loss calls the model inside a Jacobian-vector product"),
            "parallel": ("fsdp", "the projector is not sharded; use --parallel ddp"),
            "compile": ("model", "the hook on the block needs it eager; use --compile blocks"),
        }
        for name, (value, why) in refused.items():
            if getattr(self, name) == value:
                raise UserError(f"--repa-encoder does not work with --{name} {value}: {why}")

    def flow_settings(self) -> FlowSettings:
        """The flow objective these options describe (meaningful when objective is "flow")."""
        return FlowSettings(self.path, self.prediction, self.loss_weight, self.train_eps, self.sample_eps)

    def _check_objective_options(self) -> None:
        """Options of other objectives must keep their defaults (they would silently do nothing)."""
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        mine = set(OBJECTIVE_OPTIONS[self.objective])
        for owner, names in OBJECTIVE_OPTIONS.items():
            changed = [n for n in names if n not in mine and getattr(self, n) != defaults[n]]
            if not changed:
                continue
            owners = [o for o, own in OBJECTIVE_OPTIONS.items() if set(changed) <= set(own)]
            flags = ", ".join("--" + name.replace("_", "-") for name in changed)
            verb, it = ("applies", "it") if len(changed) == 1 else ("apply", "them")
            fix = (
                f"add --objective {owner}"
                if self.objective == defaults["objective"]
                else f"drop {it} for --objective {self.objective}"
            )
            whose = " or ".join(OBJECTIVE_DESCRIPTIONS[o] for o in owners)
            raise UserError(f"{flags} {verb} to {whose} only; {fix}")

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
        """The config of a `to_dict` record (an older record's renamed keys read under their new names)."""
        record = dict(d)
        for old, new in RENAMED_OPTIONS.items():
            if old in record:
                value = record.pop(old)
                record.setdefault(new, value)  # the new name, when given too, wins
        return from_record(cls, record, "unknown training options")

    def save(self, folder: str | Path) -> Path:
        """Write the resolved options to `folder/train_config.json` (atomically)."""
        from ditkit.atomic import atomic_write_text

        path = Path(folder) / RUN_CONFIG_FILE
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return path


# Options that change what a resumed run computes; the others (logging, periods, time budget...) may differ.
RESUME_INVARIANT = (
    "model",
    "model_overrides",
    "data",
    "image_size",
    "first_stage",
    "flip",
    "init",
    "init_weights",
    "init_class_map",
    "freeze",
    "global_batch",
    "optimizer",
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
    "objective",
    "noise_schedule",
    "diffusion_steps",
    *(name for name in OBJECTIVE_OPTIONS["flow"] if name != "sample_eps"),  # sample_eps: sampling only
    *(name for name in OBJECTIVE_OPTIONS["meanflow"] if name.startswith("meanflow_")),
    "repa_encoder",
    "repa_depth",
    "repa_coeff",
    "repa_projector_dim",
    "seed",
)


def repa_encoder_kind(spec: str) -> str:
    """How --repa-encoder names its encoder: "hub" (a name in `REPA_HUB_ENCODERS`), "torchscript" (a
    file: a name ending in .pt/.pth/.ts or holding a /) or "callable" (package.module:callable).

    Raises:
        UserError: none of these, e.g. a misspelt hub name (said without touching the network).
    """
    if spec in REPA_HUB_ENCODERS:
        return "hub"
    if spec.endswith((".pt", ".pth", ".ts")) or "/" in spec:
        return "torchscript"
    if re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", spec):
        return "callable"
    close = difflib.get_close_matches(spec, REPA_HUB_ENCODERS, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise UserError(
        f"unknown --repa-encoder {spec!r}; {hint}give a torch.hub name ({', '.join(REPA_HUB_ENCODERS[:4])}, "
        "each also with -reg), a TorchScript file (.pt) or package.module:callable"
    )


def resume_mismatches(saved: dict[str, Any], current: TrainConfig) -> list[str]:
    """Names of the options that differ between a checkpoint's config and the current one."""
    now = current.to_dict()
    return [name for name in RESUME_INVARIANT if name in saved and _plain(saved[name]) != _plain(now[name])]


def check_resumable(saved: dict[str, Any], current: TrainConfig, checkpoint: str | Path) -> None:
    """Raise UserError naming the options that differ between a checkpoint's config and the current one."""
    mismatched = resume_mismatches(saved, current)
    if mismatched:
        raise UserError(
            f"cannot resume {checkpoint}: it was trained with "
            f"{describe_mismatches(saved, current.to_dict(), mismatched)}; "
            "resume with the same options or start a new --out"
        )


def describe_mismatches(saved: dict[str, Any], now: dict[str, Any], names: list[str]) -> str:
    """`--lr 0.001 (now 0.0001), --seed 0 (now 1)`: the saved and the new value of each option."""
    return ", ".join(f"--{n.replace('_', '-')} {_plain(saved[n])} (now {_plain(now[n])})" for n in names)


def resumed_config(saved: dict[str, Any], given: dict[str, Any]) -> TrainConfig:
    """The config of a resumed run: the saved options, with those `given` again taking over.

    Raises UserError naming each option that differs but may not change on resume (`RESUME_INVARIANT`).
    """
    differ = [
        n for n in RESUME_INVARIANT if n in given and n in saved and _plain(given[n]) != _plain(saved[n])
    ]
    if differ:
        raise UserError(
            f"cannot resume: the run was trained with {describe_mismatches(saved, given, differ)}; "
            "drop these options (the run's own are used) or start a new --out"
        )
    return TrainConfig.from_dict({**saved, **given})


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value))
