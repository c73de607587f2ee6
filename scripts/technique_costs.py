"""CPU time of one training step of each variant of `ditkit study techniques` or `objectives`.

Both studies compare their variants at equal training time: each trains for the steps that cost, on the
CPU measured here, what the reference's steps cost (techniques: the baseline, the demo's model and batch;
objectives: flow matching, the preset's width-128 model at batch 32). This script measures the per-step
cost of the trainer's own step (`ditkit.training.setup.build_train_step`) on a synthetic 28x28 batch, in
CPU time of one thread (robust to other work on the machine), the variants interleaved over several
rounds, and prints each one's cost relative to the reference (the ratio of the medians, and the range of
each round's ratio: the round-to-round noise) and its equal-time steps.

    OMP_NUM_THREADS=1 taskset -c 0 python scripts/technique_costs.py --rounds 3 --steps 30
    OMP_NUM_THREADS=1 taskset -c 1 python scripts/technique_costs.py --study objectives --rounds 5 --steps 40 \\
        --json docs/studies/objectives/costs.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from typing import Any

import torch

from ditkit.study.presets import TECHNIQUE_BASE_STEPS, objective_variants, technique_variants
from ditkit.study.spec import _route
from ditkit.training.config import TrainConfig
from ditkit.training.setup import build_model, build_train_step, dit_config
from ditkit.training.step import MicroBatch


def step_cost(config: TrainConfig, steps: int, warmup: int = 5) -> float:
    """Seconds of CPU time per optimizer step of `config`'s model and step on a synthetic batch."""
    model = build_model(dit_config(config, (1, 28, 28), 10), config.seed, torch.device("cpu")).train()
    precision = "fp32" if config.precision == "auto" else config.precision
    step = build_train_step(model, config, precision)
    g = torch.Generator().manual_seed(0)
    batch = config.global_batch
    x, y = torch.randn(batch, 1, 28, 28, generator=g), torch.randint(0, 10, (batch,), generator=g)
    for i in range(warmup):
        step(i, [MicroBatch(range(batch), x, y)], batch)
    start = time.thread_time()
    for i in range(warmup, warmup + steps):
        step(i, [MicroBatch(range(batch), x, y)], batch)
    return (time.thread_time() - start) / steps


def study_variants(study: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]], str, int]:
    """A study's base, its variants' fields, the reference variant and the reference's steps."""
    if study == "techniques":
        base, variants = technique_variants()
        variants["bf16"] = {"precision": "bf16"}  # autocast: a lever on CPUs with bf16 instructions
        return base, variants, "baseline", TECHNIQUE_BASE_STEPS
    base, variants = objective_variants()
    reference = next(iter(variants))  # flow: the others are compared with it
    steps = int(variants[reference]["steps"])
    return (
        base,
        {name: {k: v for k, v in f.items() if k != "steps"} for name, f in variants.items()},
        reference,
        steps,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", choices=("techniques", "objectives"), default="techniques")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=30, help="timed steps per variant and round")
    p.add_argument("--json", help="write the table here too")
    a = p.parse_args()
    torch.set_num_threads(1)
    base, variants, reference_name, base_steps = study_variants(a.study)
    costs: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(a.rounds):
        for name, fields in variants.items():
            merged = _route({**base, **fields})
            merged["model_overrides"] = {
                **base.get("model_overrides", {}),
                **merged.get("model_overrides", {}),
            }
            config = TrainConfig.from_dict(merged)
            costs[name].append(step_cost(dataclasses.replace(config, out="unused"), a.steps))
    reference = statistics.median(costs[reference_name])
    table = {}
    print(f"{'variant':14s} {'ms/step':>8s} {'rel':>6s} {'rounds':>13s} {'equal-time steps':>17s}")
    for name, values in costs.items():
        median = statistics.median(values)
        # each round's ratio to the reference of the same round: the noise between rounds
        ratios = [v / r for v, r in zip(values, costs[reference_name], strict=True)]
        steps = round(base_steps * reference / median)
        table[name] = {
            "ms_per_step": 1000 * median,
            "relative": median / reference,
            "relative_rounds": [min(ratios), max(ratios)],
            "ms_per_step_rounds": [1000 * v for v in values],
            "equal_time_steps": steps,
        }
        spread = f"{min(ratios):.3f}-{max(ratios):.3f}"
        print(f"{name:14s} {1000 * median:8.1f} {median / reference:6.3f} {spread:>13s} {steps:17d}")
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump(table, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
