"""The demo's recipe: a small class-conditional pixel-space DiT on Fashion-MNIST that trains on 2 CPU cores.

The official recipe (lr 1e-4, batch 256, EMA 0.9999, learned sigma) is tuned for 400k steps; a run
of a few thousand steps needs a higher learning rate with warmup, small batches, a short EMA and a
fixed variance. The numbers below were measured on a 2-core CPU (see the README's demo section).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ditkit.samplers.settings import SamplingSettings
from ditkit.training.config import ADAM_BETAS, MIN_SNR_GAMMA, TrainConfig

# Fashion-MNIST's native size; patch 4 gives 7 x 7 = 49 tokens.
DEMO_IMAGE_SIZE = 28
# The bars of the demo (issue 17): at least 100 samples per class; at least 90% of them labelled as their
# class by the shipped Fashion-MNIST classifier, every class at least 75%, a Frechet distance in the
# classifier's features of at most 5, and the whole `make demo` within 15 minutes on a 2-core CPU.
DEMO_SAMPLES_PER_CLASS = 100
AGREEMENT_BAR = 0.90
CLASS_AGREEMENT_BAR = 0.75
FRECHET_BAR = 5.0
TIME_BAR_MINUTES = 15.0
# The demo model's shape: DiT-XS/4 narrowed to width 128 with 4 blocks and 2 heads (1.3M parameters).
DEMO_MODEL_SHAPE = {"depth": 4, "hidden_size": 128, "num_heads": 2}


# Guide only at middle noise levels (Kynkaanniemi et al. 2024, "Applying guidance in a limited interval
# improves sample and distribution quality in diffusion models"): guidance at high noise pulls samples
# towards a few modes and at low noise does nothing useful. This is the paper's interval for EDM2 in noise
# levels, sigma in (0.28, 5.42], written as flow times t = 1 / (1 + sigma) of the Linear path (data at 1).
GUIDANCE_INTERVAL = (0.16, 0.78)


@dataclass(frozen=True)
class DemoRecipe:
    """Training and sampling settings of the demo.

    Chosen by measurement on a 2-core AMD EPYC CPU (the README's demo section has the tables). On
    one core a run affords about 3,000 steps of batch 32 in its 10-minute budget, so the model is small
    and cheap: DiT-XS/4 at width 128 with 4 blocks (1.3M parameters; width 192 trained 2.2x slower per
    step and reached 41% agreement where width 128 reached 67% at the same CPU time).
    - The exact GELU instead of DiT's tanh form (`activation="gelu"`): torch's tanh is slow on AVX2
      CPUs, and the exact form made a training step 7% and sampling 19% faster on one core; with the
      10-minute budget every one-core run reaches the 3,000 steps (2,389-2,730 in 9 minutes before).
    - Flow matching with logit-normal times, not diffusion: 95.2% vs 87.6% agreement, Frechet
      distance 7.7 vs 11.0 (same model, steps and seed).
    - Muon on the blocks' weight matrices and AdamW (beta2 0.95) on the rest, at lr 4e-3, held and
      then decayed linearly to 0 over the second half of the run ("wsd"; on a slow machine the time
      budget starts the decay). Muon's step costs about a fifth more here, and it still trains
      further in the same time: 2,100 Muon steps beat 3,000 AdamW steps on seed 0 (distance 3.27 vs
      4.07, pullovers 75 vs 65% at each one's guidance), and at 3,000 steps each the distance fell from
      4.07 / 3.22 to 2.85 / 2.89 (seeds 0 / 2). Before it, AdamW's beta2 0.95 and lr 4e-3 had lowered
      the distance on every seed.
    - No horizontal flips: Fashion-MNIST is drawn facing one way (every ankle boot and 5,982 of 6,000
      sneakers are closer to their class's mean image than to its mirror), so DiT's random flips
      taught the model to draw half of the shoes facing the other way. Without them the distance fell
      from 5.27 / 4.99 to 4.23 / 3.47 and the independent 5-NN check rose from 83 / 83% to 92 / 92%
      (seeds 0 / 2, 3,000 steps, guidance 5).
    - Samples: the deterministic Heun ODE in 15 steps, guided only for flow times 0.16 to 0.78
      (`GUIDANCE_INTERVAL`; against Heun 10 guided everywhere at 3 this costs the same sampling time
      and lowered the distance on every seed), at scale 3, where the distance is lowest or level
      (the one-core demo runs of seeds 0 / 1 / 2 at guidance 2, 2.5, 3, 3.5: 3.15 / 3.08 / 3.16,
      2.84 / 2.99 / 2.93, 2.79 / 3.13 / 2.91, 2.87 / 3.33 / 3.00; a mean of 2.92 at 2.5 and 2.94 at 3).

    Attributes:
        model: preset; `overrides` change its size.
        steps: optimizer steps on a fast machine; `time_budget_minutes` ends training sooner on a slow
            one (with "wsd" the rate still decays to 0 by the end; the report says what happened).
        optimizer, betas, lr_schedule, decay_fraction: see `TrainConfig` (betas are AdamW's; under
            "muon" they serve the parameters Muon leaves to AdamW).
        flip: horizontal flips of the training images, "none" or "random" (DiT's; see above).
        objective, time_sampling: "flow" (SiT's Linear path, velocity prediction) with logit-normal
            times, or "diffusion" (see `DIFFUSION_DEMO_RECIPE`).
        min_snr_gamma: min-SNR loss weighting (diffusion only).
        options: more `TrainConfig` options, e.g. an objective's own (MeanFlow's).
        sampling: how the evaluated samples are drawn (the sampler must be one of the objective's:
            ddpm/ddim/dpm++2m for diffusion, dopri5/euler/heun/sde-* for flow; the guidance interval in
            the objective's times, flow times here). The demo records it in its checkpoint, so
            `ditkit sample`, `walk` and `serve` draw as the report did by default.
        seed: seeds the initialisation, data order and every training draw.
    """

    model: str = "DiT-XS/4"
    overrides: dict[str, Any] = field(default_factory=lambda: {**DEMO_MODEL_SHAPE, "activation": "gelu"})
    global_batch: int = 32
    optimizer: str = "muon"
    lr: float = 4e-3
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 100
    lr_schedule: str = "wsd"
    decay_fraction: float = 0.5
    flip: str = "none"
    ema_decay: float = 0.995
    learn_sigma: bool = False
    steps: int = 3000
    time_budget_minutes: float = 10.0
    objective: str = "flow"
    time_sampling: str = "logit-normal"
    min_snr_gamma: float | None = None
    options: dict[str, Any] = field(default_factory=dict)
    sampling: SamplingSettings = SamplingSettings(
        sampler="heun", steps=15, guidance_scale=3.0, guidance_interval=GUIDANCE_INTERVAL
    )
    seed: int = 0

    def sampling_text(self) -> str:
        """How the samples are drawn, in words (the log and report.md)."""
        s = self.sampling
        text = f"{s.sampler} with {s.steps} steps, guidance scale {s.guidance_scale}"
        if s.guidance_interval is not None:
            low, high = s.guidance_interval
            text += f" for times {low:g} to {high:g} only"
        return text

    def to_dict(self) -> dict[str, Any]:
        """Plain data (the report's "recipe")."""
        return {**dataclasses.asdict(self), "sampling": self.sampling.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DemoRecipe:
        """The recipe of a `to_dict` record."""
        return cls(**{**data, "sampling": SamplingSettings.from_dict(data["sampling"])})

    def train_config(
        self, data_dir: str | None, out: str, device: str, steps: int | None = None
    ) -> TrainConfig:
        """The TrainConfig of the demo's training run."""
        return TrainConfig(
            model=self.model,
            model_overrides=dict(self.overrides),
            data="fashion-mnist",
            data_dir=data_dir,
            image_size=DEMO_IMAGE_SIZE,
            first_stage="identity",
            global_batch=self.global_batch,
            optimizer=self.optimizer,
            lr=self.lr,
            betas=self.betas,
            warmup_steps=self.warmup_steps,
            lr_schedule=self.lr_schedule,
            decay_fraction=self.decay_fraction,
            min_snr_gamma=self.min_snr_gamma,
            flip=self.flip,
            ema_decay=self.ema_decay,
            ema_warmup=True,
            learn_sigma=self.learn_sigma,
            objective=self.objective,
            time_sampling=self.time_sampling,  # "uniform" unless flow (TrainConfig refuses it otherwise)
            steps=steps if steps is not None else self.steps,
            time_budget_minutes=self.time_budget_minutes,
            seed=self.seed,
            **self.options,
            ckpt_every=0,
            log_every=50,
            sample_every=0,
            device=device,
            out=out,
        )


DEMO_RECIPE = DemoRecipe()
# The same model, schedule and budget trained by diffusion (DiT's objective) with min-SNR-5 weighting,
# sampled by DPM-Solver++(2M) in 20 steps (20 model evaluations), guided at every step: the README
# compares the two (with AdamW at lr 2e-3 and random flips, the settings of that comparison).
DIFFUSION_DEMO_RECIPE = dataclasses.replace(
    DEMO_RECIPE,
    overrides=dict(DEMO_MODEL_SHAPE),  # DiT's tanh GELU
    optimizer="adamw",
    lr=2e-3,
    betas=ADAM_BETAS,
    flip="random",
    objective="diffusion",
    time_sampling="uniform",
    min_snr_gamma=MIN_SNR_GAMMA,
    sampling=SamplingSettings(sampler="dpm++2m", steps=20, guidance_scale=3.0),  # guided at every step
)

# The same model and budget trained by MeanFlow (`ditkit.objectives.meanflow`): the paper's times
# (lognorm(-0.4, 1) in its time, mean +0.4 in SiT's), adaptive weighting with p = 1, guidance 2 folded
# into training (so it samples at 1), and three quarters of the samples on an interval (the paper's
# CIFAR-10 share; its ImageNet share, 0.25, gave a one-jump distance of 15.96 against 8.57 on seed 0).
# It samples in two jumps (two model calls; docs/meanflow.md has one jump and the curve).
MEANFLOW_DEMO_RECIPE = dataclasses.replace(
    DEMO_RECIPE,
    objective="meanflow",
    options={"logit_normal_mean": 0.4, "meanflow_guidance": 2.0, "meanflow_interval_share": 0.75},
    sampling=SamplingSettings(sampler="meanflow", steps=2, guidance_scale=1.0),
)
# The recipe `ditkit demo --objective NAME` runs.
DEMO_RECIPES = {"flow": DEMO_RECIPE, "diffusion": DIFFUSION_DEMO_RECIPE, "meanflow": MEANFLOW_DEMO_RECIPE}
