"""Run a study: train every run with the normal trainer, evaluate it at fixed steps, gather the results.

    DIR/study.json                  the spec and options (a rerun must match them)
    DIR/runs/<run>/                 a `ditkit train` run folder (checkpoints at every evaluation step)
    DIR/runs/<run>/samples_<step>.npz, eval_<step>.json, run_info.json
    DIR/results.json, results.md, *.png

Resumable: a finished training or evaluation is never redone, and a half-trained run resumes from its
last checkpoint with the trainer's exact resume. Checkpoints are written at every evaluation step
(`ckpt_every` = the gcd of those steps) and the run always trains to its full length, so a learning-
rate schedule over the whole run is the same as without a study. `jobs` worker processes run side by
side: one per GPU, or on a CPU one per core, each with its share of the cores. The costliest runs
(by training compute) go first, each to the first free worker, so the workers finish close together.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # not POSIX: the runs are dealt out up front
    fcntl = None  # type: ignore[assignment]

from ditkit.atomic import atomic_write_text
from ditkit.errors import UserError, plural
from ditkit.study.evaluate import Evaluator
from ditkit.study.spec import RunPlan, StudySpec, spec_from_dict

STUDY_FILE = "study.json"
RUNS_DIR = "runs"
RUN_INFO_FILE = "run_info.json"
# Base fields that say where or how fast, not what: a rerun may change them.
WHERE_FIELDS = ("data_dir", "device", "num_workers", "log_every", "time_budget_minutes")


@dataclass
class StudyOptions:
    """How (not what) a study runs.

    Attributes:
        out: the study folder.
        device: "auto", "cpu" or "cuda" (workers each get one GPU).
        jobs: worker processes running side by side (None: one per GPU; on a CPU one per core, at
            most one per run).
        reference: ADM reference batch for FID/sFID/IS/precision/recall (None: not computed).
        inception: local Inception weights for those metrics (None: the cached or downloaded ones).
        fashion_mnist: score with the Fashion-MNIST classifier (None: when the data is Fashion-MNIST).
        progress: progress bars (the first worker only).
        only: train and evaluate only these runs or configurations (names as `--plan` lists them, a
            configuration standing for all its seeds); the results cover every run finished so far.
    """

    out: str
    device: str = "auto"
    jobs: int | None = None
    reference: str | None = None
    inception: str | None = None
    fashion_mnist: bool | None = None
    progress: bool = True
    only: tuple[str, ...] = ()


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def plan_runs(spec: StudySpec, options: StudyOptions) -> list[RunPlan]:
    """The runs with their study-set options: output folder, checkpoints at every evaluation step."""
    plans = spec.runs()
    for plan in plans:
        total = int(plan.config.steps or 0)
        every = spec.checkpoint_every(total)
        base_every = plan.config.ckpt_every
        plan.config = dataclasses.replace(
            plan.config,
            out=str(Path(options.out) / RUNS_DIR / plan.name),
            ckpt_every=base_every if base_every and every % base_every == 0 else every,
            keep_checkpoints=0,
            device=options.device if options.device != "auto" else plan.config.device,
        )
    return plans


def model_configs(plans: list[RunPlan]) -> list[Any]:
    """The DiTConfig of every run, sized by its data (read once per dataset): checks every run up front."""
    from ditkit.training.setup import build_data, model_config

    data: dict[str, Any] = {}
    configs = []
    for plan in plans:
        cfg = plan.config
        key = json.dumps([cfg.data, cfg.data_dir, cfg.image_size, cfg.first_stage])
        if key not in data:
            data[key] = build_data(cfg, lambda _: None)
        try:
            configs.append(model_config(cfg, data[key]))
        except UserError as err:
            raise UserError(f"run {plan.name}: {err}") from None
    return configs


def meta_models(plans: list[RunPlan]) -> list[Any]:
    """The DiT of every run on the meta device (no memory): what its parameters and Gflops are counted on."""
    import torch

    from ditkit.model.dit import DiT

    with torch.device("meta"):
        return [DiT(config) for config in model_configs(plans)]


def _record(spec: StudySpec, options: StudyOptions) -> dict[str, Any]:
    return {"spec": spec.to_dict(), "options": dataclasses.asdict(options)}


def _what(record: dict[str, Any]) -> dict[str, Any]:
    spec = json.loads(json.dumps(record["spec"]))
    spec.setdefault("seeds", 1)  # studies written before seeds were an option have one
    for name in WHERE_FIELDS:
        spec["base"].pop(name, None)
    return spec


def selected(plans: list[RunPlan], only: Sequence[str]) -> list[RunPlan]:
    """The plans `only` names (by run or configuration name); all of them when it names none.

    Raises:
        UserError: a name that is no run or configuration of the study.
    """
    if not only:
        return plans
    known = {p.name for p in plans} | {p.configuration for p in plans}
    unknown = [name for name in only if name not in known]
    if unknown:
        raise UserError(f"--only {unknown[0]!r} is no run of this study; `--plan` lists them")
    return [p for p in plans if p.name in only or p.configuration in only]


def claim_folder(spec: StudySpec, options: StudyOptions) -> None:
    """Write DIR/study.json, or check that the study already there is this one."""
    out = Path(options.out)
    path = out / STUDY_FILE
    record = _record(spec, options)
    if path.is_file():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            raise UserError(f"{path} is unreadable; remove it or use a new --out") from None
        if _what(saved) != _what(record):
            old, new = _what(saved), _what(record)
            changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise UserError(
                f"{out} holds study {saved['spec'].get('name')!r} with other settings ({', '.join(changed)}); "
                "rerun it with the same options, or use a new --out"
            )
    elif out.exists() and any(out.iterdir()):
        raise UserError(f"--out {out} holds files that are not a ditkit study; pass an empty or new folder")
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")


def run_study(
    spec: StudySpec,
    options: StudyOptions,
    *,
    echo: Callable[[str], None] = _stderr,
) -> list[dict[str, Any]]:
    """Train and evaluate every run of `spec` not done yet, then write the results; returns the rows.

    Raises:
        UserError: a bad spec, a folder holding another study, a stopped or failed run or worker.
    """
    from ditkit.study.results import write_results

    plans = plan_runs(spec, options)
    todo = selected(plans, options.only)
    model_configs(todo)  # a run that cannot be built fails now, not after the others trained
    Path(options.out).mkdir(parents=True, exist_ok=True)
    claim_folder(spec, options)
    jobs = options.jobs if options.jobs is not None else default_jobs(options.device, len(todo))
    echo(
        f"study {spec.name}: {plural(len(todo), 'run')} -> {options.out}"
        + (f" ({jobs} workers)" if jobs > 1 else "")
        + (f" (--only: {len(todo)} of {len(plans)})" if options.only else "")
    )
    if jobs > 1:
        _run_workers(options, jobs, echo)
    else:
        evaluators: dict[str, Evaluator] = {}
        for plan in todo:
            run_one(plan, spec, options, echo=echo, evaluators=evaluators)
            write_results(spec, plans, options.out, plots=False)  # the tables grow run by run
    rows = write_results(spec, plans, options.out)
    echo(f"results: {Path(options.out) / 'results.md'}")
    return rows


def _gpu_count(device: str) -> int:
    import torch

    return torch.cuda.device_count() if device != "cpu" and torch.cuda.is_available() else 0


def cpu_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def default_jobs(device: str, runs: int) -> int:
    """Workers when --jobs is not given: one per GPU; on a CPU one per core, at most one per run."""
    return _gpu_count(device) or max(1, min(cpu_cores(), runs))


def deal_runs(costs: list[float], jobs: int) -> list[int]:
    """The worker of each run: largest cost first, each to the worker with the least work so far."""
    load = [0.0] * jobs
    worker = [0] * len(costs)
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        k = min(range(jobs), key=lambda k: (load[k], k))
        worker[i] = k
        load[k] += costs[i]
    return worker


def run_costs(plans: list[RunPlan]) -> list[float]:
    """Each run's training compute in FLOPs, the measure the runs are dealt out by."""
    from ditkit.model.flops import count_gflops
    from ditkit.study.results import train_compute

    return [
        train_compute(count_gflops(model), plan.config.global_batch, int(plan.config.steps or 0))
        for plan, model in zip(plans, meta_models(plans), strict=True)
    ]


def _run_workers(options: StudyOptions, jobs: int, echo: Callable[[str], None]) -> None:
    """Start `jobs` worker processes (worker k on GPU k when there are GPUs; on a CPU each with an
    equal share of the cores) and wait for all of them."""
    gpus = _gpu_count(options.device)
    threads = max(1, cpu_cores() // jobs)
    procs = []
    for k in range(jobs):
        env = dict(os.environ)
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(k % gpus)
        else:
            env["OMP_NUM_THREADS"] = str(threads)  # torch reads it at start-up
        cmd = [sys.executable, "-m", "ditkit.study.worker", options.out, str(k), str(jobs)]
        procs.append(subprocess.Popen(cmd, env=env))
    failed = [k for k, p in enumerate(procs) if p.wait() != 0]
    if failed:
        raise UserError(
            f"study workers {', '.join(map(str, failed))} failed (see their messages above); "
            "rerun the same command to continue"
        )
    echo(f"{jobs} workers finished")


def _prefixed(name: str) -> Callable[[str], None]:
    """Messages of a worker's run, prefixed with the run's name (several workers share the terminal)."""
    return lambda message: _stderr(f"[{name}] {message}")


def run_worker(out: str, index: int, jobs: int) -> None:
    """Worker `index` of `jobs`: runs of the study in `out`, costliest first, each taken by the first
    free worker (a lock per run, released when its process ends, so a killed study resumes). Without
    file locks (not POSIX) the runs are dealt out up front (`deal_runs`)."""
    record = json.loads((Path(out) / STUDY_FILE).read_text(encoding="utf-8"))
    spec = spec_from_dict(record["spec"], str(Path(out) / STUDY_FILE))
    options = StudyOptions(**{**record["options"], "jobs": 1, "progress": False})
    plans = selected(plan_runs(spec, options), record["options"].get("only") or ())
    costs = run_costs(plans)
    evaluators: dict[str, Evaluator] = {}
    if fcntl is None:
        mine = [plan for plan, worker in zip(plans, deal_runs(costs, jobs), strict=True) if worker == index]
        for plan in mine:
            run_one(plan, spec, options, echo=_prefixed(plan.name), evaluators=evaluators)
        return
    for i in sorted(range(len(plans)), key=lambda i: (-costs[i], i)):
        plan = plans[i]
        lock = Path(out) / RUNS_DIR / f".{plan.name}.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        with open(lock, "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # another worker has this run
            run_one(plan, spec, options, echo=_prefixed(plan.name), evaluators=evaluators)


def _evaluator(spec: StudySpec, options: StudyOptions, config: Any, cache: dict[str, Evaluator]) -> Evaluator:
    """The evaluator of a run; runs scored the same way share one (its classifier, reference statistics
    and Inception network are loaded once)."""
    fashion = options.fashion_mnist
    if fashion is None:
        fashion = config.data == "fashion-mnist"
    key = json.dumps([fashion, config.data_dir, config.device])
    if key not in cache:
        cache[key] = _new_evaluator(spec, options, config, fashion)
    return cache[key]


def _new_evaluator(spec: StudySpec, options: StudyOptions, config: Any, fashion: bool) -> Evaluator:
    from ditkit.distributed import pick_device

    return Evaluator(
        spec.eval,
        fashion_mnist=fashion,
        data_root=config.data_dir,
        reference=options.reference,
        inception=options.inception,
        device=str(pick_device(config.device)),
        progress=options.progress,
    )


def trained(plan: RunPlan) -> bool:
    from ditkit.run_folder import TRAIN_STATE_FILE, checkpoint_path

    return (checkpoint_path(plan.config.out, int(plan.config.steps or 0)) / TRAIN_STATE_FILE).is_file()


def run_one(
    plan: RunPlan,
    spec: StudySpec,
    options: StudyOptions,
    *,
    echo: Callable[[str], None] = _stderr,
    evaluators: dict[str, Evaluator] | None = None,
) -> None:
    """Train one run to its end (resuming if it was cut) and evaluate each of its evaluation steps."""
    from ditkit.run_folder import checkpoint_path, latest_checkpoint
    from ditkit.training import train

    run_dir, total = Path(plan.config.out), int(plan.config.steps or 0)
    if not trained(plan):
        echo(f"run {plan.name}: training {plan.config.model} {plan.config.model_overrides} for {total} steps")
        resume = latest_checkpoint(run_dir) is not None  # continue a cut run, else start it
        result = train(plan.config, resume=resume, progress=options.progress, echo=echo)
        if result.stopped != "finished" or result.step < total:
            raise UserError(
                f"run {plan.name} stopped at step {result.step} of {total} ({result.stopped}); "
                "rerun the same command to continue it"
            )
    run_info(plan)  # parameters and Gflops, counted once
    evaluator = _evaluator(spec, options, plan.config, {} if evaluators is None else evaluators)
    for step in spec.eval_steps(total):
        checkpoint = checkpoint_path(run_dir, step)
        if not checkpoint.is_dir():
            raise UserError(
                f"run {plan.name} has no checkpoint at step {step} ({checkpoint}); remove {run_dir}"
            )
        for record in evaluator.evaluate(checkpoint, run_dir, step, plan.config.objective):
            shown = ", ".join(f"{k} {v:.4g}" for k, v in record["metrics"].items())
            setting = f" ({record['tag'].lstrip('_').replace('_', ', ')})" if record["tag"] else ""
            echo(f"run {plan.name} step {step}{setting}: {shown}")


def run_info(plan: RunPlan) -> dict[str, Any]:
    """Parameters and forward Gflops of a trained run (counted once, on the meta device)."""
    import torch

    from ditkit.checkpoints.loader import read_checkpoint
    from ditkit.model.dit import DiT
    from ditkit.model.flops import count_gflops, count_params
    from ditkit.run_folder import checkpoint_path

    path = Path(plan.config.out) / RUN_INFO_FILE
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    raw = read_checkpoint(checkpoint_path(plan.config.out, int(plan.config.steps or 0)))
    assert raw.config is not None  # a ditkit training checkpoint stores its config
    with torch.device("meta"):
        model = DiT(raw.config)
    cfg = raw.config
    info = {
        "name": plan.name,
        "values": plan.values,
        "model": plan.config.model,
        "block": cfg.block,
        "patch_size": cfg.patch_size,
        "hidden_size": cfg.hidden_size,
        "depth": cfg.depth,
        "num_heads": cfg.num_heads,
        "tokens": model.grid_hw[0] * model.grid_hw[1],
        "params": count_params(model),
        "gflops": count_gflops(model),
        "global_batch": plan.config.global_batch,
        "steps": plan.config.steps,
        "config": plan.config.to_dict(),
    }
    atomic_write_text(path, json.dumps(info, indent=2) + "\n")
    return info
