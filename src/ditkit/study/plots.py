"""The paper's study plots as PNGs, one panel per metric, from the rows of results.json.

- `curves.png`: metric vs training steps, one line per configuration (Fig. 5's block designs, Fig. 6's sizes);
- `vs_gflops.png`: final metric vs forward Gflops, log x, one line per patch size (Fig. 8);
- `vs_compute.png`: metric vs training compute, log x, one line per configuration (Fig. 9);
- `vs_guidance.png`: metric vs guidance scale at the last step, one line per configuration;
- `vs_calls.png`: metric vs model calls per sample at the last step, log x, one line per configuration
  (where several numbers of sample steps were drawn).

Where several numbers of sample steps were drawn, the other plots show each configuration at its best
count (`ditkit.study.spread.best_steps`). With several seeds a line is the mean over them and the
shaded band (error bars on `vs_gflops.png`) their range, min to max. FID-like metrics (lower is better)
use a log y axis, as the paper's FID plots do.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ditkit.atomic import atomic_path
from ditkit.study.evaluate import LOWER_IS_BETTER, METRIC_KEYS, METRIC_LABELS
from ditkit.study.spec import GUIDANCE_KEY
from ditkit.study.spread import SPREAD, best_steps, guidance, representative, summarize

Row = dict[str, Any]
# At most this many metric panels per row of a figure.
PANELS_PER_ROW = 3


def _series(rows: Sequence[Row], key: Callable[[Row], str]) -> dict[str, list[Row]]:
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(key(row), []).append(row)
    return groups


def _final(rows: Sequence[Row]) -> list[Row]:
    last: dict[str, int] = {}
    for r in rows:
        last[r["configuration"]] = max(last.get(r["configuration"], 0), r["step"])
    return [r for r in rows if r["step"] == last[r["configuration"]]]


def _panels(metrics: Sequence[str], width: float, height: float) -> tuple[Any, Any]:
    """A figure with one panel per metric, PANELS_PER_ROW to a row: (figure, axes grid)."""
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede pyplot's import
    import matplotlib.pyplot as plt

    cols = min(len(metrics), PANELS_PER_ROW)
    nrows = math.ceil(len(metrics) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(width * cols, height * nrows), dpi=100, squeeze=False)
    return fig, axes


def _save(fig: Any, axes: Any, used: int, title: str, path: Path, *, bottom: float, hspace: float) -> Path:
    """Hide the unused panels, title the figure, write it atomically as a PNG and close it."""
    import matplotlib.pyplot as plt

    for ax in list(axes.flat)[used:]:
        ax.set_visible(False)
    fig.suptitle(title)
    nrows = axes.shape[0]
    # fixed margins: tight_layout costs seconds per figure
    fig.subplots_adjust(
        left=0.08, right=0.98, bottom=bottom / nrows, top=1 - 0.1 / nrows, wspace=0.3, hspace=hspace
    )
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def _figure(
    path: Path,
    rows: Sequence[Row],
    metrics: Sequence[str],
    *,
    x: str,
    xlabel: str,
    title: str,
    group: Callable[[Row], str],
    log_x: bool = False,
    annotate: bool = False,
) -> Path:
    from matplotlib import ticker

    fig, axes = _panels(metrics, 5.2, 4.0)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        for label, series in _series(rows, group).items():
            scored = sorted((r for r in series if r.get(metric) is not None), key=lambda r: r[x])
            if not scored:
                continue
            xs, ys = [r[x] for r in scored], [r[metric] for r in scored]
            low, high = zip(*(r["spread"][metric] for r in scored), strict=True)
            if annotate:  # points of different runs: the range as error bars
                yerr = [
                    [y - lo for y, lo in zip(ys, low, strict=True)],
                    [h - y for y, h in zip(ys, high, strict=True)],
                ]
                ax.errorbar(xs, ys, yerr=yerr, marker="o", ms=4, lw=1.5, capsize=3, label=label)
                for r in scored:
                    ax.annotate(r["configuration"], (r[x], r[metric]), fontsize=7, alpha=0.7)
            else:
                (line,) = ax.plot(xs, ys, marker="o", ms=4, lw=1.5, label=label)
                if any(h > lo for lo, h in zip(low, high, strict=True)):
                    ax.fill_between(xs, low, high, color=line.get_color(), alpha=0.2, lw=0)
        values = [r[metric] for r in rows if r.get(metric) is not None]
        if metric in LOWER_IS_BETTER and values and min(values) > 0:
            ax.set_yscale("log")
            # plain numbers at the decades and, over short ranges, at the steps between them
            ax.yaxis.set_major_formatter(ticker.LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
            ax.yaxis.set_minor_formatter(ticker.LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
        if log_x:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(METRIC_LABELS[metric] + (" (lower is better)" if metric in LOWER_IS_BETTER else ""))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, axes, len(metrics), title, path, bottom=0.12, hspace=0.35)


def _final_by_configuration(path: Path, final: Sequence[Row], metrics: Sequence[str], title: str) -> Path:
    """Each configuration's last evaluation: the seeds' mean as a square, their range as an error bar and
    every seed as a dot; the first configuration's mean as a dashed line to compare with."""
    fig, axes = _panels(metrics, max(5.2, 0.55 * len(final) + 1.5), 4.6)  # room for the names
    names = [r["configuration"] for r in final]
    for ax, metric in zip(axes.flat, metrics, strict=False):
        scored = [(i, r) for i, r in enumerate(final) if r.get(metric) is not None]
        for i, r in scored:
            low, high = r["spread"][metric]
            ax.errorbar(
                i,
                r[metric],
                yerr=[[r[metric] - low], [high - r[metric]]],
                fmt="s",
                ms=6,
                capsize=4,
                color="C0",
            )
            seeds = list(r["per_seed"].get(metric, {}).values())
            ax.plot([i] * len(seeds), seeds, "o", ms=3, color="C1", alpha=0.8)
        if scored:
            ax.axhline(scored[0][1][metric], ls="--", lw=1, color="0.5")
        ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
        ax.set_ylabel(METRIC_LABELS[metric] + (" (lower is better)" if metric in LOWER_IS_BETTER else ""))
        ax.grid(True, axis="y", alpha=0.3)
    return _save(fig, axes, len(metrics), title, path, bottom=0.3, hspace=0.6)  # room for slanted names


def write_plots(rows: Sequence[Row], out: Path, study: str) -> list[Path]:
    """Draw every plot the rows (one per run and evaluation) support, their seeds averaged; returns
    the files written."""
    metrics = [k for k in METRIC_KEYS if any(r.get(k) is not None for r in rows)]
    if not metrics:
        return []
    summaries = summarize(rows)
    seeds = max(len(s["seeds"]) for s in summaries)
    if seeds > 1:
        study = f"{study}, mean of {seeds} seeds (shaded or bars: {SPREAD})"
    main = representative(summaries)  # the step and compute plots compare runs, not settings
    swept = best_steps(summaries)
    at_best = ", each at its best model calls" if swept else ""
    by_run: Callable[[Row], str] = lambda r: r["configuration"]  # noqa: E731
    written = []
    final = _final(main)
    # curves where a configuration was evaluated at several steps (not where equal-time runs end apart)
    curves = len(main) > len(final)
    if curves:
        written.append(
            _figure(
                out / "curves.png",
                main,
                metrics,
                x="step",
                xlabel="training steps",
                title=f"{study}: metric vs training steps{at_best}",
                group=by_run,
            )
        )
        written.append(
            _figure(
                out / "vs_compute.png",
                main,
                metrics,
                x="train_compute_flops",
                xlabel="training compute (FLOPs, = 3 x forward Gflops x batch x steps)",
                title=f"{study}: metric vs training compute{at_best}",
                group=by_run,
                log_x=True,
            )
        )
    if len(final) > 1 and not curves:  # each configuration's one point
        written.append(
            _final_by_configuration(
                out / "final.png",
                final,
                metrics,
                f"{study}: last evaluation{at_best} (squares: mean and range; dots: seeds; dashed: "
                f"{final[0]['configuration']})",
            )
        )
    if len({(r["hidden_size"], r["depth"], r["patch_size"]) for r in final}) > 1:  # sizes or patches vary
        written.append(
            _figure(
                out / "vs_gflops.png",
                final,
                metrics,
                x="gflops",
                xlabel="forward Gflops per image",
                title=f"{study}: metric vs model Gflops (last step{at_best})",
                group=lambda r: f"patch {r['patch_size']}",
                log_x=True,
                annotate=True,
            )
        )
    sweep = _final(summaries)
    if len({r[GUIDANCE_KEY] for r in sweep}) > 1:
        written.append(
            _figure(
                out / "vs_guidance.png",
                sweep,
                metrics,
                x=GUIDANCE_KEY,
                xlabel="guidance scale",
                title=f"{study}: metric vs guidance scale (last step)",
                group=lambda r: (
                    f"{r['configuration']} {r['guided_channels']} {r['guidance_interval'] or ''}".strip()
                    + (f" {r.get('sample_steps')} steps" if swept else "")
                ),
            )
        )
    calls = [r for r in sweep if guidance(r) == guidance(sweep[0]) and r.get("model_calls") is not None]
    if swept and calls:
        written.append(
            _figure(
                out / "vs_calls.png",
                calls,
                metrics,
                x="model_calls",
                xlabel="model calls per sample (forward passes)",
                title=f"{study}: metric vs model calls (last step)",
                group=by_run,
                log_x=True,
            )
        )
    return written
