"""Issue 30's measured fine-tuning example (docs/finetune.md): train the demo's model on Fashion-MNIST's
first five classes, then train on the other five twice per seed, from that checkpoint (`--init`) and from
scratch, and find how many steps each needs to reach the demo's bars on its five classes.

Every point is its own run of that length with the demo's whole schedule (warmup, hold, linear decay to
0 over the second half), not a checkpoint in the middle of a longer run, whose rate has not decayed. Each
run is one `scripts/demo_experiment.py` call (the same training and scoring code), skipped when its JSON
is already there, so the script resumes after an interruption:

    OMP_NUM_THREADS=1 taskset -c 1 python scripts/finetune_experiment.py --seeds 0,1,2 \\
        --finetune-steps 250,500,750 --scratch-steps 1000 --more-scratch-steps 1500 --variant-steps 500 \\
        --variant rowcopy:init_class_map=null --variant 'adaln:freeze="all-but-adaln"' \\
        --variant lr1e-3:lr=1e-3 --variant lr8e-3:lr=8e-3 --variant warmup20:warmup_steps=20

Results: runs/finetune/NAME.json per run, docs/finetune/results.json (every point and each seed's
verdict) and docs/finetune/curve.png (distance and agreement against steps, both runs, every seed).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from ditkit.demo.recipe import AGREEMENT_BAR, DEMO_RECIPE, FRECHET_BAR

HERE = Path(__file__).resolve().parent
GUIDANCE = DEMO_RECIPE.sampling.guidance_scale
INTERVAL = ",".join(f"{t:g}" for t in DEMO_RECIPE.sampling.guidance_interval or ())


def experiment(out: Path, name: str, steps: int, seed: int, sets: dict[str, Any], per_class: int) -> dict:
    """One demo_experiment.py run (trained, sampled, scored), or its stored result."""
    path = out / f"{name}.json"
    if not path.exists():
        command = [sys.executable, str(HERE / "demo_experiment.py"), "--name", name, "--steps", str(steps)]
        command += ["--seed", str(seed), "--guidance", f"{GUIDANCE:g}", "--interval", INTERVAL]
        command += ["--per-class", str(per_class), "--out", str(out)]
        for field, value in sets.items():
            command += ["--set", f"{field}={json.dumps(value)}"]
        subprocess.run(command, check=True)
    result = json.loads(path.read_text())
    scores = result[f"g{GUIDANCE}"]
    return {
        "name": name,
        "seed": seed,
        "steps": steps,
        "set": sets,
        "frechet_distance": scores["frechet_distance"],
        "agreement": scores["agreement"],
        "weakest_class": min(scores["per_class"].values()),
        "knn_agreement": scores["knn_agreement"],
        "train_cpu_s": result.get("train_cpu_s"),
    }


def passes(row: dict) -> bool:
    return row["agreement"] >= AGREEMENT_BAR and row["frechet_distance"] <= FRECHET_BAR


def verdict(finetune: list[dict], scratch: list[dict]) -> dict:
    """Whether fine-tuning needs at most half the steps scratch needs, from runs of several lengths.

    Each kind needs more steps than its longest failing run and at most its shortest passing one, so
    the target is met when fine-tuning passes at L steps and scratch fails at 2L or more, and missed
    when fine-tuning fails at L and scratch passes at 2L or fewer; otherwise these lengths do not say.
    """
    ft_pass = min((r["steps"] for r in finetune if passes(r)), default=None)
    ft_fail = max((r["steps"] for r in finetune if not passes(r)), default=None)
    sc_pass = min((r["steps"] for r in scratch if passes(r)), default=None)
    sc_fail = max((r["steps"] for r in scratch if not passes(r)), default=None)
    met = None
    if ft_pass is not None and sc_fail is not None and 2 * ft_pass <= sc_fail:
        met = True
    elif ft_fail is not None and sc_pass is not None and 2 * ft_fail >= sc_pass:
        met = False
    return {
        "finetune_passes_at": ft_pass,
        "finetune_fails_at": ft_fail,
        "scratch_passes_at": sc_pass,
        "scratch_fails_at": sc_fail,
        "target_met": met,
    }


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede pyplot's import
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    colours = {"finetune": "tab:blue", "scratch": "tab:orange"}
    for kind, colour in colours.items():
        for seed in sorted({r["seed"] for r in rows if r["kind"] == kind}):
            series = sorted(
                (r for r in rows if r["kind"] == kind and r["seed"] == seed), key=lambda r: r["steps"]
            )
            steps = [r["steps"] for r in series]
            label = f"{'--init' if kind == 'finetune' else 'from scratch'}, seed {seed}"
            style = ["o-", "s--", "^:"][seed % 3]
            axes[0].plot(steps, [r["frechet_distance"] for r in series], style, color=colour, label=label)
            axes[1].plot(steps, [100 * r["agreement"] for r in series], style, color=colour, label=label)
    axes[0].axhline(FRECHET_BAR, color="grey", lw=0.8, ls="--")
    axes[0].set_ylabel("Frechet distance, classes 5-9 (lower is better)")
    axes[1].axhline(100 * AGREEMENT_BAR, color="grey", lw=0.8, ls="--")
    axes[1].set_ylabel("agreement, % (shipped classifier)")
    for ax in axes:
        ax.set_xticks(sorted({r["steps"] for r in rows}))
        ax.set_xlabel("training steps (each point: a run of that length)")
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Fashion-MNIST classes 5-9: from the classes-0-4 checkpoint vs from scratch")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_fields(spec: str) -> tuple[str, dict[str, Any]]:
    """`NAME:FIELD=JSON[;FIELD=JSON]` -> (NAME, {FIELD: value})."""
    name, _, fields = spec.partition(":")
    return name, {k: json.loads(v) for k, v in (f.split("=", 1) for f in fields.split(";"))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pretrain-classes", default="0,1,2,3,4")
    p.add_argument("--classes", default="5,6,7,8,9")
    p.add_argument("--pretrain-steps", type=int, default=DEMO_RECIPE.steps)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--finetune-steps", default="250,500", help="comma-separated run lengths")
    p.add_argument("--scratch-steps", default="1000", help="comma-separated run lengths")
    p.add_argument(
        "--more-scratch-steps", default="", help="more scratch lengths, first seed only (the curve)"
    )
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        help="NAME:FIELD=JSON[;FIELD=JSON]: a fine-tuning run on the first seed with these TrainConfig fields",
    )
    p.add_argument("--variant-steps", type=int, default=500)
    for kind in ("finetune", "scratch"):
        p.add_argument(
            f"--{kind}-recipe",
            metavar="TAG:FIELD=JSON[;FIELD=JSON]",
            help=f"the {kind} runs with these TrainConfig fields (names {kind}-TAG-s<seed>-<steps>); "
            "default: the demo's recipe",
        )
    p.add_argument("--per-class", type=int, default=100)
    p.add_argument("--out", default="runs/finetune")
    p.add_argument("--results", default="docs/finetune/results.json")
    p.add_argument("--plot", default="docs/finetune/curve.png")
    a = p.parse_args()

    out = Path(a.out)
    seeds = [int(s) for s in a.seeds.split(",")]
    pre_name = f"pretrain-{a.pretrain_classes.replace(',', '')}"
    pretrain = experiment(out, pre_name, a.pretrain_steps, 0, {"classes": a.pretrain_classes}, a.per_class)
    # The new classes' label rows start as DiT's (normal, std 0.02), not copied by index from the old
    # classes' rows (what --init does when the class count is unchanged and no map is given)
    fresh_rows = out / "fresh-rows.json"
    fresh_rows.write_text("{}\n")
    finetune_sets = {"classes": a.classes, "init": str(out / pre_name), "init_class_map": str(fresh_rows)}
    arms = {}
    for kind, sets, recipe in (
        ("finetune", finetune_sets, a.finetune_recipe),
        ("scratch", {"classes": a.classes}, a.scratch_recipe),
    ):
        tag, extra = parse_fields(recipe) if recipe else ("", {})
        arms[kind] = (f"{kind}-{tag}" if tag else kind, {**sets, **extra})
    rows = []
    for seed in seeds:
        for kind, lengths in (("finetune", a.finetune_steps), ("scratch", a.scratch_steps)):
            if kind == "scratch" and seed == seeds[0] and a.more_scratch_steps:
                lengths += "," + a.more_scratch_steps
            prefix, sets = arms[kind]
            for steps in (int(s) for s in lengths.split(",")):
                row = experiment(out, f"{prefix}-s{seed}-{steps}", steps, seed, sets, a.per_class)
                rows.append({"kind": kind, **row})
    variants = []
    for spec in a.variant:
        name, extra = parse_fields(spec)
        row = experiment(
            out,
            f"{name}-s{seeds[0]}-{a.variant_steps}",
            a.variant_steps,
            seeds[0],
            {**finetune_sets, **extra},
            a.per_class,
        )
        variants.append({"variant": name, **row})
    verdicts = {
        seed: verdict(
            [r for r in rows if r["kind"] == "finetune" and r["seed"] == seed],
            [r for r in rows if r["kind"] == "scratch" and r["seed"] == seed],
        )
        for seed in seeds
    }
    record = {
        "bars": {"agreement": AGREEMENT_BAR, "frechet_distance": FRECHET_BAR},
        "sampling": DEMO_RECIPE.sampling_text(),
        "samples_per_class": a.per_class,
        "command": " ".join(sys.argv),
        "recipes": {kind: {"runs": prefix, "set": sets} for kind, (prefix, sets) in arms.items()},
        "pretrain": pretrain,
        "runs": rows,
        "variants": variants,
        "verdicts": verdicts,
    }
    Path(a.results).parent.mkdir(parents=True, exist_ok=True)
    Path(a.results).write_text(json.dumps(record, indent=1) + "\n")
    plot(rows, Path(a.plot))
    for row in [pretrain, *rows, *variants]:
        print(
            f"{row['name']:>20}: distance {row['frechet_distance']:.2f}, agreement {row['agreement']:.1%}, "
            f"weakest class {row['weakest_class']:.0%}, 5-NN {row['knn_agreement']:.1%}"
        )
    for seed, v in verdicts.items():
        print(f"seed {seed}: {v}")


if __name__ == "__main__":
    main()
