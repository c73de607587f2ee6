"""CPU time of one training step of each variant of `ditkit study techniques` (the demo's model and batch).

The techniques study compares the variants at equal training time: each trains for the steps that cost,
on the CPU measured here, what the baseline's steps cost. This script measures the per-step cost of
the trainer's own step (`ditkit.training.setup.build_train_step`) on a synthetic batch, in CPU time
of one thread (robust to other work on the machine), the variants interleaved over several rounds,
and prints each one's cost relative to the baseline and its equal-time steps.

    OMP_NUM_THREADS=1 taskset -c 0 python scripts/technique_costs.py --rounds 3 --steps 30
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time

import torch

from ditkit.study.presets import TECHNIQUE_BASE_STEPS, technique_variants
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=30, help="timed steps per variant and round")
    p.add_argument("--json", help="write the table here too")
    a = p.parse_args()
    torch.set_num_threads(1)
    base, variants = technique_variants()
    variants["bf16"] = {"precision": "bf16"}  # autocast: a lever on CPUs with bf16 instructions
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
    reference = statistics.median(costs["baseline"])
    table = {}
    print(f"{'variant':14s} {'ms/step':>8s} {'rel':>6s} {'equal-time steps':>17s}")
    for name, values in costs.items():
        median = statistics.median(values)
        steps = round(TECHNIQUE_BASE_STEPS * reference / median)
        table[name] = {
            "ms_per_step": 1000 * median,
            "relative": median / reference,
            "equal_time_steps": steps,
        }
        print(f"{name:14s} {1000 * median:8.1f} {median / reference:6.3f} {steps:17d}")
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump(table, f, indent=1)


if __name__ == "__main__":
    main()
