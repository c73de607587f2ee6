"""Seeds and spread: each configuration's metrics over its training seeds, and orderings stated only
where they hold beyond that spread.

The spread is the range over the seeds (min-max), not a standard error: with three seeds a standard
error is itself a rough guess, and a range says plainly what every seed did.

A comparison (`comparisons`) is of two configurations next to each other on one axis with the other
axes equal (the paper's claims: "width 128 beats width 64 at patch 4"), of two guidance settings next
to each other in a sweep, or of two models of different Gflops at equal training compute (Fig. 9).
Its verdict per metric (`verdict`) is one of:
- "beyond the spread": every seed of the better one beats every seed of the other (ranges apart);
- "on every seed": better seed for seed (a seed fixes the data order and noise draws of both), but
  the ranges overlap;
- "within the spread": neither of those; no ordering is claimed;
- "one seed": a single seed each, so there is no spread to judge by.

Configurations are compared at the first guidance setting and, where several numbers of sample steps
were drawn, each at its own best count (`best_steps`: the lowest mean Frechet distance), so that models
sampled by different samplers are not judged at counts that suit one of them only.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from ditkit.errors import plural
from ditkit.study.evaluate import LOWER_IS_BETTER, METRIC_KEYS, METRIC_LABELS
from ditkit.study.spec import GUIDANCE_KEY, RunPlan

Row = dict[str, Any]
SPREAD = "min-max over seeds"
# What tells a configuration's evaluations at one step apart: the sample steps and the guidance setting.
VARIANT_KEYS = ("sample_steps", GUIDANCE_KEY, "guided_channels", "guidance_interval")
GUIDANCE_KEYS = VARIANT_KEYS[1:]
# The metric a configuration's best number of sample steps is picked by: the first of these scored
# (lower is better; the classifier's Frechet distance on Fashion-MNIST, FID on ImageNet).
BEST_BY = ("fmnist_frechet", "fid")
# Models whose Gflops differ by less than this factor are not compared at equal compute.
COMPUTE_GFLOPS_RATIO = 1.1
LEVELS = ("beyond the spread", "on every seed", "within the spread", "one seed")


def configuration(row: Row) -> str:
    """The configuration a row's run belongs to (its run name in studies written before seeds)."""
    return str(row.get("configuration") or row["run"])


def variant(row: Row) -> str:
    """The sample steps and guidance setting of a row, as one comparable string (rows written before the
    steps were recorded have None there)."""
    return repr(tuple(str(row.get(k)) for k in VARIANT_KEYS))


def guidance(row: Row) -> str:
    """The guidance setting of a row alone, as one comparable string."""
    return repr(tuple(str(row.get(k)) for k in GUIDANCE_KEYS))


def best_metric(rows: Sequence[Row]) -> str | None:
    """The metric best counts are picked by: the first of BEST_BY the rows score (None: none)."""
    return next((m for m in BEST_BY if any(r.get(m) is not None for r in rows)), None)


def best_steps(rows: Sequence[Row]) -> dict[str, Any]:
    """Each configuration drawn at several numbers of sample steps -> its best count: the one with the
    lowest mean `best_metric` over its seeds at its last evaluation and the first guidance setting (ties:
    the fewer model calls; with no such metric, its first count). Rows or their summaries both serve."""
    if not rows:
        return {}
    first, metric = guidance(rows[0]), best_metric(rows)
    best = {}
    for config in dict.fromkeys(configuration(r) for r in rows):
        mine = [r for r in rows if configuration(r) == config and guidance(r) == first]
        last = max(r["step"] for r in mine)
        final = [r for r in mine if r["step"] == last]
        counts = list(dict.fromkeys(r.get("sample_steps") for r in final))
        if len(counts) > 1:
            ranked = counts if metric is None else sorted(counts, key=lambda n: _rank(final, n, metric))
            best[config] = ranked[0]
    return best


def _rank(rows: Sequence[Row], steps: Any, metric: str) -> tuple[float, float]:
    """(mean metric, model calls) of the rows drawn at `steps`: lower is better."""
    mine = [r for r in rows if r.get("sample_steps") == steps]
    values = [float(r[metric]) for r in mine if r.get(metric) is not None]
    calls = mine[0].get("model_calls")
    return (sum(values) / len(values) if values else math.inf), (math.inf if calls is None else calls)


def representative(rows: Sequence[Row]) -> list[Row]:
    """The rows that stand for each configuration where configurations are compared: those of the first
    guidance setting and, for a configuration drawn at several numbers of sample steps, of its best
    count (`best_steps`, chosen at its last evaluation and kept at every step)."""
    if not rows:
        return []
    first, best = guidance(rows[0]), best_steps(rows)
    return [
        r
        for r in rows
        if guidance(r) == first
        and (configuration(r) not in best or r.get("sample_steps") == best[configuration(r)])
    ]


def summarize(rows: Sequence[Row]) -> list[Row]:
    """One row per configuration, evaluation step and guidance setting, in the rows' order.

    Each has the identity columns of its first seed's row, the mean of each metric under the metric's
    key, `spread` {metric: [min, max]}, `per_seed` {metric: {seed: value}} and `seeds` (the seeds
    evaluated so far).
    """
    groups: dict[tuple[str, int, str], list[Row]] = {}
    for row in rows:
        groups.setdefault((configuration(row), row["step"], variant(row)), []).append(row)
    out = []
    for (config, _, _), group in groups.items():
        summary = {k: v for k, v in group[0].items() if k not in METRIC_KEYS and k not in ("run", "samples")}
        summary.pop("seed", None)
        summary.update(configuration=config, seeds=[r.get("seed") for r in group], spread={}, per_seed={})
        for metric in METRIC_KEYS:
            scored = [r for r in group if r.get(metric) is not None]
            if scored:
                values = [float(r[metric]) for r in scored]
                summary[metric] = sum(values) / len(values)
                summary["spread"][metric] = [min(values), max(values)]
                summary["per_seed"][metric] = {str(r.get("seed")): float(r[metric]) for r in scored}
        out.append(summary)
    return out


@dataclass(frozen=True)
class Verdict:
    """How two configurations compare on one metric over their seeds."""

    better: str  # the better one's name ("" when tied)
    level: str  # one of LEVELS
    wins: int  # seeds (paired by seed) on which `better` is better
    paired: int  # seeds both have

    def text(self) -> str:
        if not self.better:
            return "tied"
        if self.level == "beyond the spread":
            return f"{self.better} better, beyond the spread"
        if self.level == "on every seed":
            return f"{self.better} better on every seed ({self.paired}), ranges overlap"
        if self.level == "one seed":
            return f"{self.better} better (one seed: no spread)"
        return f"within the spread ({self.better} better on {self.wins} of {self.paired} seeds)"


def verdict(a: dict[str, float], b: dict[str, float], names: tuple[str, str], metric: str) -> Verdict:
    """Which of `a` and `b` (metric values by seed) is better, and how firmly (see the module's text)."""
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    score_a = {k: sign * v for k, v in a.items()}
    score_b = {k: sign * v for k, v in b.items()}
    mean_a = sum(score_a.values()) / len(score_a)
    mean_b = sum(score_b.values()) / len(score_b)
    if mean_a == mean_b:
        return Verdict("", "within the spread", 0, len(set(a) & set(b)))
    (win_name, win), (_, lose) = sorted(
        [(names[0], score_a), (names[1], score_b)], key=lambda p: -sum(p[1].values()) / len(p[1])
    )
    common = sorted(set(win) & set(lose))
    wins = sum(win[k] > lose[k] for k in common)
    if len(win) == 1 and len(lose) == 1:
        level = "one seed"
    elif min(win.values()) > max(lose.values()):
        level = "beyond the spread"
    elif common and wins == len(common) and len(common) > 1:
        level = "on every seed"
    else:
        level = "within the spread"
    return Verdict(win_name, level, wins, len(common))


@dataclass
class Comparison:
    """Two configurations (or settings) compared at one point: metric -> values by seed for each."""

    what: str  # the axis or setting that differs
    names: tuple[str, str]
    where: str  # the step, compute or setting compared at
    a: dict[str, dict[str, float]]
    b: dict[str, dict[str, float]]

    def verdicts(self, metrics: Sequence[str]) -> dict[str, Verdict]:
        return {
            m: verdict(self.a[m], self.b[m], self.names, m)
            for m in metrics
            if self.a.get(m) and self.b.get(m)
        }


def neighbours(
    plans: Sequence[RunPlan], axes: Sequence[str], named: Collection[str] = ()
) -> list[tuple[str, str, str]]:
    """(axis, configuration, its neighbour): configurations one value apart on one axis, others equal;
    on an axis of named variants (`named`), the first variant (the baseline) and each of the others."""
    position = {p.configuration: p.position for p in plans}
    out = []
    for axis_index, axis in enumerate(axes):
        for a, pa in position.items():
            for b, pb in position.items():
                differ = [i for i in range(len(pa)) if pa[i] != pb[i]]
                if differ != [axis_index]:
                    continue
                if pb[axis_index] == pa[axis_index] + 1 if axis not in named else pa[axis_index] == 0:
                    out.append((axis, a, b))
    return out


def _final(summaries: Sequence[Row], config: str) -> Row | None:
    """The configuration's last evaluation at the first guidance setting."""
    mine = [s for s in summaries if s["configuration"] == config]
    return max(mine, key=lambda s: s["step"]) if mine else None


def comparisons(
    summaries: Sequence[Row], plans: Sequence[RunPlan], axes: Sequence[str], named: Collection[str] = ()
) -> list[Comparison]:
    """Neighbours on every axis at their last evaluation, then neighbouring guidance settings."""
    if not summaries:
        return []
    main, best = representative(summaries), best_steps(summaries)
    out = []
    for axis, a, b in neighbours(plans, axes, named):
        ra, rb = _final(main, a), _final(main, b)
        if ra is not None and rb is not None:
            where = f"step {ra['step']}" if ra["step"] == rb["step"] else f"steps {ra['step']}, {rb['step']}"
            if best or ra.get("sample_steps") != rb.get("sample_steps"):
                where += f"; {calls_text(ra)} vs {calls_text(rb)}"
            out.append(Comparison(axis, (a, b), where, ra["per_seed"], rb["per_seed"]))
    for config in dict.fromkeys(s["configuration"] for s in summaries):
        last = max(s["step"] for s in summaries if s["configuration"] == config)
        sweep = [s for s in summaries if s["configuration"] == config and s["step"] == last]
        sweep.sort(
            key=lambda s: (
                s.get("sample_steps") or 0,
                str(s["guided_channels"]),
                str(s["guidance_interval"]),
                s[GUIDANCE_KEY],
            )
        )

        for ra, rb in zip(sweep, sweep[1:], strict=False):
            if variant({**ra, GUIDANCE_KEY: None}) != variant({**rb, GUIDANCE_KEY: None}):
                continue  # neighbours in the scale; the steps, channels and interval equal
            out.append(
                Comparison(
                    "guidance",
                    (_setting(ra), _setting(rb)),
                    _sweep_where(config, last, ra, config in best),
                    ra["per_seed"],
                    rb["per_seed"],
                )
            )
        # at each guided scale, every guided-channel or interval setting against guidance everywhere
        plain = {
            (str(s.get("sample_steps")), s[GUIDANCE_KEY]): s
            for s in sweep
            if s.get("guided_channels") in (None, "all") and not s.get("guidance_interval")
        }
        for rb in sweep:
            ra = plain.get((str(rb.get("sample_steps")), rb[GUIDANCE_KEY]))
            if ra is not None and rb is not ra and rb[GUIDANCE_KEY] != 1.0:
                names = (_setting(ra), _setting(rb))
                out.append(
                    Comparison(
                        "guided where",
                        names,
                        _sweep_where(config, last, ra, config in best),
                        ra["per_seed"],
                        rb["per_seed"],
                    )
                )
    return out


def _sweep_where(config: str, step: int, row: Row, with_calls: bool) -> str:
    """Where two settings of one configuration's sweep are compared (with the calls when counts vary)."""
    return f"{config}, step {step}" + (f", {calls_text(row)}" if with_calls else "")


def calls_text(row: Row) -> str:
    """A row's sampling cost: "8 calls (heun, 4 steps)"."""
    if row.get("sample_steps") is None:
        return "steps not recorded"
    calls = row.get("model_calls")
    cost = "? calls" if calls is None else plural(calls, "call")
    return f"{cost} ({row.get('sampler')}, {plural(row['sample_steps'], 'step')})"


def _setting(row: Row) -> str:
    text = f"guidance {row.get(GUIDANCE_KEY)}"
    if row.get("guided_channels") not in (None, "all"):
        text += f" {row['guided_channels']}"
    if row.get("guidance_interval"):
        text += " on t {:g}-{:g}".format(*row["guidance_interval"])
    return text


def _interpolate(curve: Sequence[tuple[float, float]], x: float) -> float:
    """A curve's value at x, linear in log x between its points (x within the curve's range)."""
    for (x0, y0), (x1, y1) in zip(curve, curve[1:], strict=False):
        if x0 <= x <= x1:
            w = 0.0 if x1 == x0 else (math.log(x) - math.log(x0)) / (math.log(x1) - math.log(x0))
            return y0 + w * (y1 - y0)
    return curve[-1][1]


def equal_compute(
    rows: Sequence[Row], plans: Sequence[RunPlan], axes: Sequence[str], named: Collection[str] = ()
) -> list[Comparison]:
    """Fig. 9's question: neighbours of different Gflops compared at the largest training compute both
    reached (each seed's curve interpolated in log compute between its evaluations)."""
    if not rows:
        return []
    main = representative(rows)
    out = []
    for axis, a, b in neighbours(plans, axes, named):
        curves = [_curves(main, a), _curves(main, b)]
        if not all(curves):
            continue
        gflops = [next(r["gflops"] for r in main if configuration(r) == c) for c in (a, b)]
        if max(gflops) < COMPUTE_GFLOPS_RATIO * min(gflops):
            continue
        ends = [c[-1][0] for curve in curves for c in curve.values()]
        starts = [c[0][0] for curve in curves for c in curve.values()]
        at = min(ends)
        if at < max(starts) or any(len(c) < 2 for curve in curves for c in curve.values()):
            continue  # the curves do not overlap in compute
        values = [
            {m: {seed: _interpolate(c[m], at) for seed, c in curve.items() if m in c} for m in METRIC_KEYS}
            for curve in ({s: _by_metric(c) for s, c in cv.items()} for cv in curves)
        ]
        out.append(Comparison(axis, (a, b), f"{at:.2g} FLOPs", values[0], values[1]))
    return out


def _curves(rows: Sequence[Row], config: str) -> dict[str, list[tuple[float, Row]]]:
    """Seed -> (training compute, row) in compute order, of one configuration."""
    curves: dict[str, list[tuple[float, Row]]] = {}
    for row in rows:
        if configuration(row) == config:
            curves.setdefault(str(row.get("seed")), []).append((row["train_compute_flops"], row))
    return {seed: sorted(c, key=lambda p: p[0]) for seed, c in curves.items()}


def _by_metric(curve: Sequence[tuple[float, Row]]) -> dict[str, list[tuple[float, float]]]:
    out: dict[str, list[tuple[float, float]]] = {}
    for x, row in curve:
        for metric in METRIC_KEYS:
            if row.get(metric) is not None:
                out.setdefault(metric, []).append((x, float(row[metric])))
    return out


def _pearson(xs: Sequence[float], ys: Sequence[float]) -> float:
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    sxx, syy = sum((x - mx) ** 2 for x in xs), sum((y - my) ** 2 for y in ys)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else float("nan")


def gflops_correlation(rows: Sequence[Row], metric: str) -> tuple[float, list[float]] | None:
    """Fig. 8's number: the correlation of log Gflops with a metric at each configuration's last step,
    of the means over seeds and of each seed alone; None with fewer than three model costs."""
    final = [r for r in representative(rows) if r.get(metric) is not None]
    last = {
        configuration(r): max(x["step"] for x in final if configuration(x) == configuration(r)) for r in final
    }
    final = [r for r in final if r["step"] == last[configuration(r)]]
    if len({r["gflops"] for r in final}) < 3:
        return None
    means = [s for s in summarize(final) if metric in s]
    overall = _pearson([math.log(s["gflops"]) for s in means], [s[metric] for s in means])
    per_seed = []
    for seed in sorted({str(r.get("seed")) for r in final}):
        mine = [r for r in final if str(r.get("seed")) == seed]
        if len({r["gflops"] for r in mine}) >= 3:
            per_seed.append(_pearson([math.log(r["gflops"]) for r in mine], [float(r[metric]) for r in mine]))
    return overall, per_seed


def claims_table(found: Sequence[Comparison], metrics: Sequence[str]) -> str:
    """A Markdown table: one comparison a line, one verdict per metric."""
    head = ["compared", "varies", "at", *(METRIC_LABELS[m] for m in metrics)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in found:
        verdicts = c.verdicts(metrics)
        cells = [verdicts[m].text() if m in verdicts else "-" for m in metrics]
        lines.append("| " + " | ".join([f"{c.names[0]} vs {c.names[1]}", c.what, c.where, *cells]) + " |")
    return "\n".join(lines)


def claims_record(found: Sequence[Comparison], metrics: Sequence[str]) -> list[dict[str, Any]]:
    """The comparisons as results.json holds them."""
    return [
        {
            "compared": list(c.names),
            "varies": c.what,
            "at": c.where,
            "verdicts": {
                m: {"better": v.better, "level": v.level, "wins": v.wins, "seeds": v.paired}
                for m, v in c.verdicts(metrics).items()
            },
        }
        for c in found
    ]
