"""A study's results: a row per run, evaluation step, number of sample steps and guidance setting
(results.json), tables (results.md) and the paper's plots.

A row records its sampler, its steps and the model calls one sample cost (`Objective.model_calls`);
where a study sweeps the steps, results.md gives each configuration's best count and compares
configurations each at its own (`ditkit.study.spread.best_steps`).

Training compute follows the paper (Sec. 5, "Training compute"): forward Gflops x batch size x
training steps x 3, the 3 counting the backward pass as twice the forward. Gflops are the paper's:
multiply-accumulates of one forward pass of one image (`ditkit.model.flops`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ditkit.atomic import atomic_write_text
from ditkit.errors import plural
from ditkit.study.evaluate import METRIC_KEYS, METRIC_LABELS
from ditkit.study.spec import GUIDANCE_KEY, EvalSettings, RunPlan, StudySpec
from ditkit.study.spread import (
    SPREAD,
    best_metric,
    best_steps,
    calls_text,
    claims_record,
    claims_table,
    comparisons,
    equal_compute,
    gflops_correlation,
    guidance,
    summarize,
)

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
# Forward + backward ~ 3 forward passes (the paper's factor for training compute).
TRAIN_COMPUTE_FACTOR = 3
# The identity columns of a row, in table order (the metrics follow).
ROW_KEYS = ("run", "model", "block", "patch_size", "hidden_size", "depth", "params", "gflops", "step")
# How a row was sampled; evaluation records written before these were kept lack them.
SAMPLING_KEYS = ("sampler", "sample_steps", "model_calls")
# The columns shown where they differ between rows: how the rows were sampled.
SWEEP_KEYS = (*SAMPLING_KEYS, GUIDANCE_KEY, "guided_channels", "guidance_interval")


def collect_rows(plans: Sequence[RunPlan], settings: EvalSettings) -> list[dict[str, Any]]:
    """Rows of every finished evaluation of every run (runs not trained yet give none); `settings` give
    the sampling of records written before it was recorded (one count per objective then)."""
    from ditkit.study.runner import RUN_INFO_FILE

    rows = []
    for plan in plans:
        run_dir = Path(plan.config.out)
        info_path = run_dir / RUN_INFO_FILE
        if not info_path.is_file():
            continue
        info = json.loads(info_path.read_text(encoding="utf-8"))
        evals = [
            _sampling(json.loads(p.read_text(encoding="utf-8")), plan, settings)
            for p in run_dir.glob("eval_*.json")
        ]
        for record in sorted(evals, key=lambda r: (r["step"], r["sample_steps"], r["tag"])):
            row: dict[str, Any] = {
                "run": plan.name,
                "configuration": plan.configuration,
                "seed": plan.seed,
                **plan.values,
                **{k: info[k] for k in ROW_KEYS[1:-1] if k in info},
                "num_heads": info["num_heads"],
                "tokens": info["tokens"],
                "global_batch": info["global_batch"],
                "step": record["step"],
                "train_compute_flops": train_compute(info["gflops"], info["global_batch"], record["step"]),
                **{k: record[k] for k in SAMPLING_KEYS},
                GUIDANCE_KEY: record[GUIDANCE_KEY],
                "guided_channels": record["guided_channels"],
                "guidance_interval": record["guidance_interval"],
                "samples": f"runs/{plan.name}/{record['samples']}",
                **record["metrics"],
            }
            rows.append(row)
    return rows


def _sampling(record: dict[str, Any], plan: RunPlan, settings: EvalSettings) -> dict[str, Any]:
    """An evaluation record with its sampler, steps and model calls (filled in from the settings for one
    written before they were recorded, when a study drew one count per objective)."""
    if all(k in record for k in SAMPLING_KEYS):
        return record
    from ditkit.objectives.registry import as_objective

    objective = plan.config.objective
    sampler, counts = settings.sampler_for(objective)
    steps = counts[0] if len(counts) == 1 else None
    calls = None if steps is None else as_objective(objective).model_calls(sampler, steps)
    return {"sampler": sampler, "sample_steps": steps, "model_calls": calls, **record}


def train_compute(gflops: float, batch: int, steps: int) -> float:
    """Training compute in FLOPs as the paper counts it: Gflops x 1e9 x batch x steps x 3."""
    return gflops * 1e9 * batch * steps * TRAIN_COMPUTE_FACTOR


def write_results(
    spec: StudySpec, plans: Sequence[RunPlan], out: str | os.PathLike[str], plots: bool = True
) -> list[dict[str, Any]]:
    """Write results.json, results.md and (if `plots`) the plots from what is finished so far; returns the rows."""
    from ditkit.study.plots import write_plots

    out = Path(out)
    rows = collect_rows(plans, spec.eval)
    metrics = [k for k in METRIC_KEYS if any(k in r for r in rows)]
    found = _comparisons(spec, plans, rows)
    best = best_steps(rows)
    document = {
        "study": spec.name,
        "description": spec.description,
        "train_compute": "forward Gflops (multiply-accumulates) x 1e9 x global batch x step x 3 (the paper's)",
        "eval": spec.to_dict()["eval"],
        "seeds": spec.seed_list(),
        "spread": SPREAD,
        "runs": [p.name for p in plans],
        "rows": rows,
        "summary": summarize(rows),
        "best_steps": {
            config: {"sample_steps": steps, "by": best_metric(rows)} for config, steps in best.items()
        },
        "claims": {k: claims_record(v, metrics) for k, v in found.items()},
    }
    atomic_write_text(out / RESULTS_JSON, json.dumps(document, indent=2) + "\n")
    drawn = write_plots(rows, out, spec.name) if rows and plots else []
    atomic_write_text(out / RESULTS_MD, markdown(spec, plans, rows, drawn))
    return rows


def _comparisons(spec: StudySpec, plans: Sequence[RunPlan], rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The study's comparisons: neighbours at their last step, and at equal training compute."""
    axes = list(spec.axes)
    named = [axis for axis, values in spec.axes.items() if isinstance(values, dict)]
    return {
        "last_step": comparisons(summarize(rows), plans, axes, named),
        "equal_compute": equal_compute(rows, plans, axes, named),
    }


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int) and abs(value) >= 10_000:
        return f"{value / 1e6:.2f}M"
    return "-" if value is None else str(value)


# Table headers of the non-metric columns that need one.
COLUMN_LABELS = {
    "model": "preset",
    "patch_size": "patch",
    "hidden_size": "width",
    "params": "params",
    "train_compute_flops": "training compute (FLOPs)",
    "sample_steps": "sample steps",
    "model_calls": "model calls",
    GUIDANCE_KEY: "guidance",
}


def _cell(row: dict[str, Any], column: str) -> str:
    """A table cell; a metric averaged over seeds shows its range: "14.1 (12.9-15.3)"."""
    low, high = row.get("spread", {}).get(column, (None, None))
    if column == "seeds":
        return str(len(row["seeds"]))
    if low is None or low == high:
        return _fmt(row.get(column))
    return f"{_fmt(row.get(column))} ({_fmt(low)}-{_fmt(high)})"


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A Markdown table of `columns` (metric keys shown by their labels)."""
    head = [METRIC_LABELS.get(c, COLUMN_LABELS.get(c, c)) for c in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(r, c) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def _sampler_text(spec: StudySpec) -> str:
    e = spec.eval
    if isinstance(e.sampler, str) and not isinstance(e.sample_steps, dict):
        counts = e.sample_steps if isinstance(e.sample_steps, tuple) else (e.sample_steps,)
        return f"sampler {e.sampler} with {_steps_text(counts)} steps"
    table = e.sampler if isinstance(e.sampler, dict) else e.sample_steps
    assert isinstance(table, dict)  # a table keyed by objective, of samplers or of steps
    parts = []
    for objective in table:
        sampler, steps = e.sampler_for(objective)
        parts.append(f"{sampler} with {_steps_text(steps)} steps for {objective} models")
    return "sampler " + "; ".join(parts)


def _steps_text(counts: Sequence[int]) -> str:
    """ "20", or "1, 2 and 4" for a sweep."""
    text = ", ".join(map(str, counts[:-1]))
    return f"{text} and {counts[-1]}" if text else str(counts[-1])


def markdown(
    spec: StudySpec, plans: Sequence[RunPlan], rows: Sequence[dict[str, Any]], plots: Sequence[Path]
) -> str:
    metrics = [k for k in METRIC_KEYS if any(k in r for r in rows)]
    sweeps = [k for k in SWEEP_KEYS if len({str(r.get(k)) for r in rows}) > 1]
    e = spec.eval
    done = {r["run"] for r in rows}
    seeds = spec.seed_list()
    lines = [
        f"# Study `{spec.name}`",
        "",
        *([spec.description, ""] if spec.description else []),
        f"{plural(len(plans), 'run')} ({len(done)} evaluated so far); axes: "
        + ", ".join(f"{k} = {list(v) if isinstance(v, dict) else v}" for k, v in spec.axes.items())
        + (
            f"; every configuration trained with {plural(len(seeds), 'seed')} ({', '.join(map(str, seeds))})."
            if len(seeds) > 1
            else "."
        ),
        f"Every run is evaluated at {', '.join(f'{f * 100:g}%' for f in e.fractions)} of its steps with the same "
        f"{e.num_samples} samples (image i: label i mod classes, seed {e.seed} + i), {_sampler_text(spec)}.",
        "Training compute = forward Gflops x global batch x steps x 3 (the paper's count; Gflops are "
        "multiply-accumulates of one forward pass).",
        *(
            [f"Metrics are the mean over the seeds, with their range in brackets ({SPREAD})."]
            if len(seeds) > 1
            else []
        ),
        "",
    ]
    if rows:
        summaries = summarize(rows)
        last = max(r["step"] for r in rows)
        best = best_steps(summaries)  # where counts are swept, every count is in the model-calls table
        final = [
            s
            for s in summaries
            if s["step"] == max(x["step"] for x in summaries if x["configuration"] == s["configuration"])
            and s.get("sample_steps") == best.get(s["configuration"], s.get("sample_steps"))
        ]
        keys = ["configuration", *ROW_KEYS[1:], "train_compute_flops", *sweeps]
        at_best = "; each at its best number of model calls" if best else ""
        lines += [f"## Final evaluation of each configuration (up to step {last}{at_best})", ""]
        lines += [table(final, [*keys, *(["seeds"] if len(seeds) > 1 else []), *metrics]), ""]
        lines += _model_calls(summaries, metrics, len(seeds) > 1)
        lines += _claims(spec, plans, rows, metrics)
        lines += [
            "## Every evaluation",
            "",
            table(summaries, ["configuration", "step", "train_compute_flops", *sweeps, *metrics]),
            "",
        ]
        if len(seeds) > 1:
            lines += ["## Every seed's final evaluation", ""]
            lines += [table(_last_rows(rows), ["run", "seed", "step", *sweeps, *metrics]), ""]
    if plots:
        lines += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots] + [""]
    return "\n".join(lines)


def _model_calls(summaries: Sequence[dict[str, Any]], metrics: Sequence[str], seeds: bool) -> list[str]:
    """Where configurations were drawn at several numbers of sample steps: each count's scores at the
    last evaluation, and each configuration's best count (the orderings compare at that one)."""
    best = best_steps(summaries)
    if not best:
        return []
    first = guidance(summaries[0])
    last = {c: max(s["step"] for s in summaries if s["configuration"] == c) for c in best}
    rows = [
        {**s, "best": "best" if s.get("sample_steps") == best[s["configuration"]] else ""}
        for s in summaries
        if s["configuration"] in best and guidance(s) == first and s["step"] == last[s["configuration"]]
    ]
    metric = best_metric(summaries)
    rule = (
        f"the count with the lowest mean {METRIC_LABELS[metric]} over its seeds (ties: the fewer calls)"
        if metric
        else "its first count (no Frechet distance was scored)"
    )
    chosen = ", ".join(f"{r['configuration']} at {calls_text(r)}" for r in rows if r["best"])
    return [
        "## Model calls",
        "",
        "Each configuration's last evaluation at every number of sample steps drawn, with the model calls "
        "(forward passes) one sample cost; guidance batches both branches into one call. A configuration's "
        f"**best number of calls** is {rule}; the orderings below compare each configuration at its own "
        f"best. Best: {chosen}.",
        "",
        table(rows, ["configuration", *SAMPLING_KEYS, "best", *(["seeds"] if seeds else []), *metrics]),
        "",
    ]


def _last_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["step"] == max(x["step"] for x in rows if x["run"] == r["run"])]


def _claims(
    spec: StudySpec, plans: Sequence[RunPlan], rows: Sequence[dict[str, Any]], metrics: Sequence[str]
) -> list[str]:
    """The comparisons' verdicts, each with the rule it is judged by."""
    found = _comparisons(spec, plans, rows)
    at_best = ", each configuration at its best number of model calls (above)" if best_steps(rows) else ""
    lines = []
    if found["last_step"]:
        lines += [
            "## Orderings",
            "",
            "Neighbouring configurations on each axis (the others equal) and neighbouring guidance "
            f"settings, at their last evaluation{at_best}. An ordering holds only where it is *beyond the "
            f"spread* (every seed of one better than every seed of the other; spread = {SPREAD}); "
            "*on every seed* means better seed for seed with overlapping ranges; *within the spread* "
            "claims nothing.",
            "",
            claims_table(found["last_step"], metrics),
            "",
        ]
    # Fig. 8 relates model size to quality: across block designs or objectives a Gflops difference is a
    # design's overhead, not a bigger model, so no correlation is drawn there
    sizes = _varies_model_size(spec)
    correlations = [(m, gflops_correlation(rows, m) if sizes else None) for m in metrics]
    lines += [
        f"Correlation of log Gflops with the last {METRIC_LABELS[m]} (Fig. 8): r = {r[0]:.2f} over the "
        "configurations' means"
        + (f", {min(r[1]):.2f} to {max(r[1]):.2f} over single seeds" if len(r[1]) > 1 else "")
        + "."
        for m, r in correlations
        if r is not None
    ]
    if any(r is not None for _, r in correlations):
        lines.append("")
    if found["equal_compute"]:
        lines += [
            "## At equal training compute (Fig. 9)",
            "",
            "Neighbouring configurations of different Gflops at the largest training compute both "
            "reached, each seed's curve interpolated in log compute between its evaluations; the "
            "verdicts as above."
            + (" The paper finds the model with more Gflops better at equal compute." if sizes else ""),
            "",
            claims_table(found["equal_compute"], metrics),
            "",
        ]
    return lines


def _sampling_text(settings: EvalSettings, objective: str) -> str:
    """A run's sampler and its steps, with the model calls: "heun 1, 2, 4 steps (2, 4, 8 calls)"."""
    from ditkit.objectives.registry import as_objective

    sampler, counts = settings.sampler_for(objective)
    calls = [as_objective(objective).model_calls(sampler, n) for n in counts]
    text = f"{sampler} {', '.join(map(str, counts))} steps"
    return text if calls == list(counts) else f"{text} ({', '.join(map(_fmt, calls))} calls)"


# The fields that make a model bigger or smaller in the paper's sense (Table 4: size and patch).
MODEL_SIZE_FIELDS = frozenset({"model", "hidden_size", "depth", "num_heads", "patch_size", "mlp_ratio"})


def _varies_model_size(spec: StudySpec) -> bool:
    """Whether an axis of `spec` changes the model's size or patch (an axis may name several fields)."""
    return any(set(axis.split(",")) & MODEL_SIZE_FIELDS for axis in spec.axes)


def plan_table(spec: StudySpec) -> str:
    """The runs of a study with their parameters, Gflops and training compute (reads the data's shape)."""
    from ditkit.model.flops import count_gflops, count_params
    from ditkit.study.runner import meta_models

    rows = []
    plans = spec.runs()
    for plan, model in zip(plans, meta_models(plans), strict=True):
        cfg = plan.config
        gflops, steps = count_gflops(model), int(cfg.steps or 0)
        rows.append(
            {
                "run": plan.name,
                "model": cfg.model,
                "block": model.config.block,
                "patch_size": model.config.patch_size,
                "hidden_size": model.config.hidden_size,
                "depth": model.config.depth,
                "params": count_params(model),
                "gflops": gflops,
                "steps": steps,
                "eval_steps": ", ".join(map(str, spec.eval_steps(steps))),
                "sampling": _sampling_text(spec.eval, cfg.objective),
                "train_compute_flops": train_compute(gflops, cfg.global_batch, steps),
            }
        )
    head = f"study {spec.name}" + (f": {spec.description}" if spec.description else "") + "\n\n"
    return head + table(rows, list(rows[0]))
