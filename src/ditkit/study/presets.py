"""Built-in studies: the paper's experiments, scaled to Fashion-MNIST on a CPU or to ImageNet latents on GPUs.

CPU presets train on 28x28 Fashion-MNIST pixels with the demo's recipe (`ditkit.demo.recipe`), each
configuration with three seeds, at sizes and steps chosen to finish within an hour on 2 cores (see
docs/studies/). The patch sizes 7 and 4 give 16 and 49 tokens, as the paper's /8 and /4 do on 32x32
latents (16 and 64 tokens). `scaling` and `blocks` draw curves over training, so they train as the
paper does, at a constant rate after warmup, and every evaluation is a finished training at its
compute; `guidance` and `objectives` compare final models only and decay the rate to each run's end.
`objectives` trains each objective for the same CPU time (MeanFlow's step costs about two flow steps:
`MEANFLOW_RELATIVE_COST`) and samples each at a sweep of model calls, so that each is judged at its best
number of calls. GPU presets use the paper's recipe (`TrainConfig` defaults: AdamW 1e-4, batch 256, EMA
0.9999, learned sigma) on a latent cache made by `ditkit prepare`, at fewer steps than its 400K.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ditkit.choices import STUDIES
from ditkit.errors import UserError
from ditkit.model.blocks import BLOCK_DESIGNS
from ditkit.model.presets import PAPER_PATCHES, PAPER_SIZES
from ditkit.study.spec import OBJECTIVES, StudySpec, axis_names, load_spec, spec_from_dict

SCALES = ("cpu", "gpu")

# CPU: the demo's training recipe (diffusion); 4 blocks at widths 64, 128, 192 with heads of 64
# channels, as the paper's sizes (128 is the demo's width).
CPU_WIDTHS = ([64, 1], [128, 2], [192, 3])
CPU_PATCHES = (7, 4)
CPU_BLOCK_WIDTH = (128, 2)
# Training seeds of every CPU configuration: three, so that an ordering can be judged against the
# spread of the seeds (`ditkit.study.spread`). The steps are what three seeds afford in an hour on
# 2 cores (docs/studies/README.md has the measured times); one seed of 4,000 steps came before.
CPU_SEEDS = 3
# `scaling` and `blocks`: constant rate after warmup (the paper's), evaluated at log-spaced points,
# each doubling the last, from 200 steps (past the 100 warmup steps) to the end.
CPU_CURVE_STEPS = 1600
CPU_CURVE_FRACTIONS = [0.125, 0.25, 0.5, 1.0]
# `guidance` and `objectives`: one final evaluation, the rate decayed over each run's second half.
CPU_FINAL_STEPS = {"guidance": 4000, "objectives": 2000}
CPU_EVAL: dict[str, Any] = {
    "fractions": CPU_CURVE_FRACTIONS,
    "num_samples": 500,
    "sampler": "dpm++2m",
    "sample_steps": 20,
    "guidance_scale": [1.0],  # the paper's scaling and block results are unguided
    "batch_size": 250,
}
CPU_GUIDANCE_SCALES = [1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0]
# ... each everywhere and only on an interval of noise levels (Kynkaanniemi et al. 2024): sigma 0.28 to
# 5.4, their EDM2 interval and the demo's flow times 0.16-0.78, which is DDPM timesteps 83-574 of the
# linear schedule (1,000 steps, betas 1e-4 to 0.02; sigma = sqrt((1 - alpha_bar) / alpha_bar)).
CPU_GUIDANCE_INTERVALS = [None, [83, 574]]

# `objectives` (issue 29): diffusion, flow matching and MeanFlow on one backbone at equal training time,
# each with its own sampler at a sweep of model calls (results.md compares each at its best count). Flow
# comes first, the variant the others are compared with: it trains CPU_FINAL_STEPS["objectives"] steps,
# and each other objective the steps that cost as much on the CPU measured.
OBJECTIVE_SAMPLERS = {"flow": "heun", "diffusion": "dpm++2m", "meanflow": "meanflow"}
# The label of its axis of named variants (not `objective`: a label may not be a field's name).
OBJECTIVE_AXIS = "method"
# MeanFlow's CPU time per training step relative to flow's (its Jacobian-vector product), measured by
# `OMP_NUM_THREADS=1 taskset -c 1 python scripts/technique_costs.py --study objectives --rounds 6 --steps 40`
# on a 2-core Intel Xeon (Sapphire Rapids, avx512_bf16), one core shared with a running study, in CPU time
# of one thread, 2026-12-07 (docs/studies/objectives/costs.json): flow 109 ms a step, MeanFlow 235 ms
# (2.155, rounds 2.06-2.29). Diffusion's step cost 1.006 of flow's (rounds 0.98-1.06), within the noise
# between rounds, so diffusion trains flow's steps.
MEANFLOW_RELATIVE_COST = 2.16
OBJECTIVE_RELATIVE_COST = {"flow": 1.0, "diffusion": 1.0, "meanflow": MEANFLOW_RELATIVE_COST}
# Sample steps swept on the CPU: 2 to 32 model calls for diffusion (DPM-Solver++(2M): one a step) and for
# flow (Heun: two a step), 1 to 8 for MeanFlow (one a jump): about a minute of sampling and scoring per
# run on one core (500 samples at 20 calls took 18 s).
CPU_OBJECTIVE_SAMPLE_STEPS = {
    "flow": [1, 2, 4, 8, 16],
    "diffusion": [2, 4, 8, 16, 32],
    "meanflow": [1, 2, 4, 8],
}

# `techniques` (issue 26): the demo's own recipe (flow matching, Muon, the rate decayed over each run's
# second half) against the block pieces and the loss of LightningDiT (Yao et al. 2025), each alone and
# together, at equal training time: half the demo's (its 3,000 steps), i.e. the baseline's 1,500 steps
# and, for each other variant, the steps that cost as much on the CPU measured.
TECHNIQUE_BASE_STEPS = 1500
LIGHTNING_BLOCK = {"norm": "rmsnorm", "mlp": "swiglu", "rope": True}  # their XL config: no QK-norm
TECHNIQUES: dict[str, dict[str, Any]] = {
    "baseline": {},
    "rmsnorm": {"norm": "rmsnorm"},
    "swiglu": {"mlp": "swiglu"},
    "rope": {"rope": True},
    "qk-norm": {"qk_norm": True},
    "cosine-loss": {"cosine_loss": True},
    "lightningdit": {**LIGHTNING_BLOCK, "cosine_loss": True},
    "lightningdit+qk-norm": {**LIGHTNING_BLOCK, "qk_norm": True, "cosine_loss": True},
}
# CPU time of a training step relative to the baseline's. Measured by scripts/technique_costs.py on a
# 2-core Intel Xeon (Sapphire Rapids, avx512_bf16), 2026-12-07 (docs/studies/techniques/costs.json):
# every variant within 5% of the baseline (0.96-1.05), less than the 15% that one round differed from
# the next on that shared machine, so the variants train equal steps there. Put measured ratios here
# for a CPU where they differ beyond the noise.
TECHNIQUE_RELATIVE_COST = {name: 1.0 for name in TECHNIQUES}
# The demo's evaluation (`ditkit.demo.recipe.DEMO_RECIPE.sampling`: Heun 15, guidance 3 on flow times
# 0.16-0.78) on 100 samples per class, as the demo's bars are measured.
TECHNIQUE_SAMPLES = 1000


# GPU: the paper's 12 models (Table 4) at 50K of its 400K steps, FID-10K with its sampler (250 DDPM steps).
GPU_STEPS = 50_000
GPU_EVAL: dict[str, Any] = {
    "fractions": [0.25, 0.5, 1.0],
    "num_samples": 10_000,
    "sampler": "ddpm",
    "sample_steps": 250,
    "guidance_scale": [1.0],
    "batch_size": 250,
}
GPU_GUIDANCE_SCALES = [1.0, 1.25, 1.5, 2.0, 3.0, 4.0]
# `objectives` on GPUs: the paper's 250 DDPM steps, Heun at as many model calls, and MeanFlow in one and two
# jumps (Geng et al. 2025, Table 2); equal steps, as no GPU's relative cost was measured.
GPU_OBJECTIVE_SAMPLE_STEPS: dict[str, Any] = {"flow": 125, "diffusion": 250, "meanflow": [1, 2]}
# The paper's block-design comparison (Fig. 5) is at XL/2; this preset uses B/2 to keep it affordable.
GPU_BLOCK_MODEL = "DiT-B/2"


def _cpu_base(name: str) -> dict[str, Any]:
    from ditkit.demo.recipe import DIFFUSION_DEMO_RECIPE

    # The demo's model recipe trained by DiT's own objective and loss (no min-SNR weighting): the
    # paper's studies are of diffusion models; the objectives study switches to flow from here.
    recipe = dataclasses.replace(DIFFUSION_DEMO_RECIPE, min_snr_gamma=None)
    if name in CPU_FINAL_STEPS:
        steps = CPU_FINAL_STEPS[name]  # the demo's schedule: decayed over the second half
    else:
        recipe, steps = dataclasses.replace(recipe, lr_schedule="constant"), CPU_CURVE_STEPS
    config = recipe.train_config(None, "unused", "auto", steps).to_dict()
    for name in ("out", "keep_checkpoints", "data_dir", "time_budget_minutes", "device"):
        config.pop(name)
    config["ckpt_every"] = 0  # the study puts checkpoints at its evaluation steps
    return config


# The GPU presets' data until --data names the latent cache.
DATA_REQUIRED = "<--data CACHE>"


def _gpu_base() -> dict[str, Any]:
    return {"model": "DiT-XL/2", "data": DATA_REQUIRED, "steps": GPU_STEPS, "ckpt_every": 0, "log_every": 100}


def technique_variants() -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The techniques study's base (the demo's recipe) and its variants' fields (without their steps)."""
    from ditkit.demo.recipe import DEMO_RECIPE

    config = DEMO_RECIPE.train_config(None, "unused", "auto", TECHNIQUE_BASE_STEPS).to_dict()
    for field_name in ("out", "keep_checkpoints", "data_dir", "time_budget_minutes", "device"):
        config.pop(field_name)
    config["ckpt_every"] = 0
    return config, {name: dict(fields) for name, fields in TECHNIQUES.items()}


def objective_variants(scale: str = "cpu") -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The objectives study's base (the paper's recipe at the demo's width on the CPU) and its variants'
    fields, each with its equal-time steps (flow's first: the others are compared with it)."""
    _require_objective()
    if scale == "cpu":
        base = _cpu_base("objectives")
        base.update(hidden_size=CPU_BLOCK_WIDTH[0], num_heads=CPU_BLOCK_WIDTH[1])
        cost = OBJECTIVE_RELATIVE_COST
    else:
        base, cost = _gpu_base(), dict.fromkeys(OBJECTIVES, 1.0)
    steps = int(base["steps"])
    variants = {name: {"objective": name, "steps": round(steps / cost[name])} for name in OBJECTIVE_SAMPLERS}
    return base, variants


def _techniques_spec(scale: str) -> dict[str, Any]:
    if scale != "cpu":
        raise UserError(
            "the techniques study has a CPU preset only; on GPUs give a spec file with your model "
            "(docs/studies.md shows one)"
        )
    from ditkit.demo.recipe import DEMO_RECIPE

    base, variants = technique_variants()
    for name, fields in variants.items():  # equal training time: steps in inverse proportion to cost
        fields["steps"] = round(TECHNIQUE_BASE_STEPS / TECHNIQUE_RELATIVE_COST[name])
    sampling = DEMO_RECIPE.sampling
    return {
        "name": "techniques",
        "description": (
            "the demo's recipe against LightningDiT's block pieces and its cosine loss, alone and together, "
            "at equal training time (half the demo's); Fashion-MNIST 28x28 pixels (CPU preset)."
        ),
        "seeds": CPU_SEEDS,
        "base": base,
        "axes": {"technique": variants},
        "eval": {
            "fractions": [1.0],  # the rate decays to each run's end: only the end is a finished training
            "num_samples": TECHNIQUE_SAMPLES,
            "sampler": sampling.sampler,
            "sample_steps": sampling.steps,
            "guidance_scale": [sampling.guidance_scale],
            "guidance_interval": [list(sampling.guidance_interval or ())]
            if sampling.guidance_interval
            else [None],
            "batch_size": 250,
        },
    }


def builtin_study(name: str, scale: str = "cpu") -> StudySpec:
    """The built-in study `name` ("scaling", "blocks", "guidance", "objectives") at `scale` ("cpu", "gpu")."""
    if name not in STUDIES:
        raise UserError(
            f"unknown study {name!r}; choose one of {', '.join(STUDIES)} or give a .toml/.json spec"
        )
    if scale not in SCALES:
        raise UserError(f"unknown study scale {scale!r}; choose one of {', '.join(SCALES)}")
    if name == "techniques":
        return spec_from_dict(_techniques_spec(scale), "built-in study 'techniques'")
    cpu = scale == "cpu"
    base = _cpu_base(name) if cpu else _gpu_base()
    evals = dict(CPU_EVAL if cpu else GPU_EVAL)
    axes: dict[str, Any]  # lists of values, or a table of named variants
    if name == "scaling":
        if cpu:
            axes = {"hidden_size,num_heads": [list(w) for w in CPU_WIDTHS], "patch_size": list(CPU_PATCHES)}
        else:
            axes = {"model": [f"DiT-{s}/{p}" for s in PAPER_SIZES for p in PAPER_PATCHES]}
        what = (
            "model size x patch size, evaluated along training at log-spaced steps (Table 4, Figs. 6, 8, 9)"
        )
    elif name == "blocks":
        if cpu:
            base.update(hidden_size=CPU_BLOCK_WIDTH[0], num_heads=CPU_BLOCK_WIDTH[1])
        else:
            base["model"] = GPU_BLOCK_MODEL
        axes = {"block": list(BLOCK_DESIGNS)}
        what = "the four conditioning designs at one size (Fig. 5)"
    elif name == "guidance":
        if cpu:
            base.update(hidden_size=CPU_BLOCK_WIDTH[0], num_heads=CPU_BLOCK_WIDTH[1])
        axes = {"block": ["adaln-zero"]}
        evals.update(fractions=[1.0], guidance_scale=CPU_GUIDANCE_SCALES if cpu else GPU_GUIDANCE_SCALES)
        if cpu:  # the GPU preset: scales only (an interval doubles its 10K-sample evaluations)
            evals.update(guidance_interval=CPU_GUIDANCE_INTERVALS)
        what = "one model sampled at a sweep of guidance scales" + (
            ", each on every step and on an interval of noise levels" if cpu else ""
        )
    else:
        base, variants = objective_variants(scale)
        axes = {OBJECTIVE_AXIS: variants}
        # each objective's own sampler (diffusion: the scale's), at a sweep of model calls
        evals.update(sampler={**OBJECTIVE_SAMPLERS, "diffusion": evals["sampler"]})
        evals.update(sample_steps=CPU_OBJECTIVE_SAMPLE_STEPS if cpu else GPU_OBJECTIVE_SAMPLE_STEPS)
        evals.update(fractions=[1.0])  # the rate decays to the end: only the end is a finished training
        what = (
            "flow matching vs diffusion vs MeanFlow on the same backbone"
            + (" at equal training time" if cpu else "")
            + ", each at its best number of model calls"
        )
    data = "Fashion-MNIST 28x28 pixels (CPU preset)" if cpu else "ImageNet-256 latents (GPU preset)"
    return spec_from_dict(
        {
            "name": name,
            "description": f"{what}; {data}.",
            "seeds": CPU_SEEDS if cpu else 1,
            "base": base,
            "axes": axes,
            "eval": evals,
        },
        f"built-in study {name!r}",
    )


def _require_objective() -> None:
    from ditkit.training.config import TrainConfig

    if "objective" not in {f.name for f in dataclasses.fields(TrainConfig)}:
        raise UserError(
            "the objectives study needs the trainer's `objective` option (flow matching, issue 12), "
            "which this ditkit does not have yet; update ditkit"
        )


def _scaled_steps(spec: StudySpec, steps: int) -> dict[str, Any]:
    """The axes with named variants' own steps scaled as the base's are (`--steps` for a smoke run keeps
    the equal-time ratios of the techniques and objectives studies)."""
    old = int(spec.base.get("steps") or steps)
    axes: dict[str, Any] = {}
    for key, values in spec.axes.items():
        if isinstance(values, dict):
            values = {
                name: {
                    **fields,
                    **({"steps": max(1, round(fields["steps"] * steps / old))} if "steps" in fields else {}),
                }
                for name, fields in values.items()
            }
        axes[key] = values
    return axes


def load_study(
    study: str,
    *,
    scale: str = "cpu",
    data: str | None = None,
    data_dir: str | None = None,
    steps: int | None = None,
    samples: int | None = None,
    seeds: int | None = None,
    overrides: dict[str, Any] | None = None,
) -> StudySpec:
    """A built-in study or a spec file, with the command line's changes applied and every run checked.

    Args:
        study: a built-in name (STUDIES) or the path of a .toml / .json spec.
        scale: "cpu" or "gpu" presets (built-in studies only).
        data: the training data of every run, as `ditkit train --data` takes it (the GPU presets need a
            latent cache); data_dir: the Fashion-MNIST IDX folder.
        steps: training steps of every run; samples: images per evaluation; seeds: training seeds of
            every configuration (the spec's `seeds` when None).
        overrides: base fields to change (TrainConfig or model fields).
    """
    is_file = study.endswith((".toml", ".json")) or Path(study).is_file()
    spec = load_spec(study) if is_file else builtin_study(study, scale)
    base = dict(spec.base)
    for key, value in (overrides or {}).items():
        if key not in axis_names():
            raise UserError(f"--set {key}: not a TrainConfig or model field; see `ditkit train --help`")
        base[key] = value
    if steps is not None:
        spec = dataclasses.replace(spec, axes=_scaled_steps(spec, steps))
        base["steps"] = steps
    if data is not None:
        base["data"] = data
    if data_dir is not None:
        base["data_dir"] = data_dir
    if base.get("data") == DATA_REQUIRED:
        raise UserError(
            f"the {scale} preset of {spec.name!r} needs --data CACHE (a latent cache from `ditkit prepare`)"
        )
    evals = spec.eval if samples is None else dataclasses.replace(spec.eval, num_samples=samples)
    evals.check()
    if seeds is not None and seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {seeds}")
    spec = dataclasses.replace(spec, base=base, eval=evals, seeds=seeds or spec.seeds)
    spec.runs()  # every run's options are checked before anything starts
    return spec
