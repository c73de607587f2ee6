"""The training loop: DiT's recipe on 1 or N processes, with exact resume and a graceful stop.

One optimizer step takes a global batch (see `data_order`), split over processes and
micro-batches; every sample's timestep, noise and label dropout come from its own keyed
generator (see `randomness`), so the weights after step s do not depend on how many processes
computed them, nor on whether the run was interrupted and resumed.
"""

from __future__ import annotations

import itertools
import json
import operator
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ditkit import distributed as D
from ditkit.atomic import atomic_write_text
from ditkit.errors import UserError
from ditkit.model.compilation import apply_compile, default_compile
from ditkit.model.precision import check_precision, default_precision
from ditkit.run_folder import checkpoint_path, link_last, resolve_resume
from ditkit.training.config import TrainConfig
from ditkit.training.data_order import BatchLayout, DataOrder, iterate_micro_batches
from ditkit.training.finetune import InitPlan, InitSource, plan_init, read_init_source, recorded_init
from ditkit.training.freeze import check_freeze, freeze_lines
from ditkit.training.lr_schedule import schedule_for
from ditkit.training.memory import check_train_memory
from ditkit.training.metrics import LOSS_CURVE_FILE, MetricsLog, plot_loss_curve
from ditkit.training.preflight import preflight
from ditkit.training.result import SUMMARY_FILE, TrainResult
from ditkit.training.setup import (
    build_data,
    build_model,
    build_repa,
    build_train_step,
    check_repa_data,
    checkpoint_extra,
    model_config,
    set_lr,
)
from ditkit.training.signals import GracefulStop
from ditkit.training.snapshot import gather_state, restore_optimizer, weights_finite, weights_holder
from ditkit.training.state import (
    load_training_checkpoint,
    prune_checkpoints,
    restore_rng,
    rng_snapshot,
    save_training_checkpoint,
)
from ditkit.training.step import LogWindow, MicroBatch, PendingSteps

# The host reads the loss, the stop request and the non-finite flag at most this many steps apart
# (and at every log, preview and checkpoint step); in between, steps run without synchronising.
HOST_READ_EVERY = 25
SAMPLES_DIR = "samples"


def _stderr(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


def train(
    config: TrainConfig,
    resume: str | Path | bool | None = None,
    *,
    progress: bool = True,
    echo: Callable[[str], None] = _stderr,
) -> TrainResult:
    """Train a DiT as `config` says; under torchrun every process calls this.

    Args:
        config: the run's options.
        resume: None/False to start fresh (refusing an `out` that holds checkpoints), True/"latest" for
            the newest checkpoint in `config.out` (a fresh start if the run there has none yet; an
            error if `config.out` holds no run), or a checkpoint / run folder.
        progress: show a progress bar (on rank 0).
        echo: where rank 0's messages go.

    Returns:
        The TrainResult (the same on every process).

    Raises:
        UserError: bad options or data, an unreadable checkpoint, or a non-finite loss.
    """
    init = preflight(config, resume)  # cheap checks first: nothing built, loaded or downloaded yet
    ctx = D.init_distributed(config.device)
    try:
        trainer = Trainer(config, ctx, echo if ctx.rank == 0 else (lambda _: None), init=init)
        return trainer.run(resume, progress=progress and ctx.rank == 0)
    finally:
        D.shutdown(ctx)


class Trainer:
    """The pieces of one run and its loop; build with `train()` unless embedding it."""

    def __init__(
        self,
        config: TrainConfig,
        ctx: D.DistContext,
        echo: Callable[[str], None],
        init: InitSource | None = None,
    ) -> None:
        """`init`: the --init checkpoint as `preflight` read it (read when the run starts otherwise)."""
        self.config, self.ctx, self.echo = config, ctx, echo
        self.out = Path(config.out)
        self.data = build_data(config, echo)
        self.model_config = model_config(config, self.data)
        check_repa_data(config, self.data)
        self.init = None if init is None else self._plan_init(init)
        self.init_record: dict[str, Any] | None = None  # where the run started, kept in its checkpoints
        check_freeze(self.model_config, config.freeze)
        self.order = DataOrder(len(self.data.dataset), config.global_batch, config.seed)  # type: ignore[arg-type]
        self.layout = BatchLayout.create(config.global_batch, ctx.world_size, config.micro_batch)
        self.total_steps = config.total_steps(self.order.num_items)
        self.precision = default_precision(ctx.device) if config.precision == "auto" else config.precision
        check_precision(self.precision, ctx.device)
        # Before the model is built: a run that cannot fit is refused, naming the option that fits; each
        # process reads its own device's free memory, and a refusal on any stops them all.
        near = D.agree(
            lambda: check_train_memory(
                self.model_config,
                self.layout.micro_batch,
                self.precision,
                ctx.device,
                world_size=ctx.world_size,
                parallel=config.parallel,
                freeze=config.freeze,
            )
        )
        if near is not None:
            echo(f"warning: {near}")
        self.compile = default_compile(ctx.device) if config.compile == "auto" else config.compile
        self.lr_schedule = schedule_for(config, self.total_steps)
        if self.data.encoder is not None:
            self.data.encoder.to(ctx.device)

    # ---- setup -------------------------------------------------------------------------------------
    def _build(self, checkpoint: Any) -> None:
        cfg = self.config
        raw = build_model(self.model_config, cfg.seed, self.ctx.device)
        fresh: list[str] = []
        if checkpoint is not None:
            raw.load_state_dict(checkpoint.model)
        elif self.init is not None:  # a new run from another checkpoint's weights (the EMA starts there too)
            self.init_record, fresh = self.init.start(raw, cfg, self.echo)
        for line in freeze_lines(raw, cfg.freeze, fresh):  # before DDP wraps it: frozen stays out
            self.echo(line)
        apply_compile(raw, self.compile)  # in place: parameters and state-dict keys are unchanged
        self.raw = raw
        self.model = D.wrap_model(raw, cfg.parallel, self.ctx)
        repa = None if cfg.repa_encoder is None else build_repa(cfg, raw, self.data, self.ctx.device)
        self.train_step = build_train_step(
            self.model,
            cfg,
            self.precision,
            raw=raw,
            encoder=self.data.encoder,
            sample_shape=self.data.sample_shape,
            repa=repa,
        )
        self.optimizer, self.ema = self.train_step.optimizer, self.train_step.ema
        self.step = 0
        if checkpoint is not None:
            self._restore(checkpoint)

    def _plan_init(self, source: InitSource) -> InitPlan:
        return plan_init(source, self.model_config, self.config, self.data.info.class_names)

    def _restore(self, checkpoint: Any) -> None:
        state = checkpoint.state
        self.order.check_resumable(state["data"])
        self.ema.load_weights(checkpoint.ema)
        self.ema.load_state_dict(state["ema"])
        restore_optimizer(self.model, self.optimizer, state["optimizer"])
        if self.train_step.repa is not None:
            self.train_step.repa.load_state_dict(state["repa"])
        if "lr_schedule" in state:
            self.lr_schedule.load_state_dict(state["lr_schedule"])
        rngs = state.get("rng", [])
        if len(rngs) == self.ctx.world_size:  # the global RNGs only map back onto the same processes
            restore_rng(rngs[self.ctx.rank])
        self.step = checkpoint.step
        self.elapsed_before = float(state.get("elapsed_seconds", 0.0))

    def _start(self, resume: str | Path | bool | None) -> None:
        path = resolve_resume(resume, self.out)
        if path is None and not resume and (self.out / "checkpoints").is_dir():
            if any((self.out / "checkpoints").iterdir()):
                raise UserError(
                    f"{self.out} already holds checkpoints; pass --resume to continue that run or choose a new --out"
                )
        checkpoint = load_training_checkpoint(path) if path is not None else None
        if checkpoint is not None and self.config.init is not None:  # where the run started, recorded
            self.init_record = recorded_init(checkpoint.path, self.config)
        elif self.config.init is not None and self.init is None:  # a Trainer built without train()
            self.init = self._plan_init(read_init_source(self.config.init, self.config.init_weights))
        self.elapsed_before = 0.0
        self._build(checkpoint)
        self.last_checkpoint = path
        self.echo(
            f"{self.model_config.name} on {self.ctx.device}: precision {self.precision}, compile {self.compile}"
        )
        if checkpoint is not None:
            self.echo(f"resuming from {path} at step {self.step}")
        elif resume:
            self.echo(f"no checkpoint in {self.out}; starting a new run")
        if D.is_main():
            self.out.mkdir(parents=True, exist_ok=True)
            self.config.save(self.out)
        self.metrics = (
            MetricsLog(self.out, self.step if checkpoint is not None else None, self.config.logger)
            if D.is_main()
            else None
        )

    # ---- the loop ----------------------------------------------------------------------------------
    def run(self, resume: str | Path | bool | None = None, *, progress: bool = True) -> TrainResult:
        """Train (from scratch or from `resume`) until the last step, a stop signal or the time budget."""
        self._start(resume)
        start_step, self.t0 = self.step, time.perf_counter()
        self.pending, self.window, self.tick, self.stopped = PendingSteps(), LogWindow(), self.t0, "finished"
        self.logged: tuple[float, int, int] | None = None  # loss, first and last step of its window
        bar = tqdm(
            total=self.total_steps, initial=self.step, disable=not progress, unit="step", dynamic_ncols=True
        )
        with GracefulStop() as stop, bar:
            for step, micro_batches in self._steps():
                for optimizer in self.train_step.optimizers:
                    set_lr(optimizer, self.lr_schedule.at(step))
                out = self.train_step(step, micro_batches, self.layout.local_batch)
                self.pending.add_step(out, *self._clock(stop.requested))
                self.step = step + 1
                bar.update(1)
                if self._read_due() and self._read(bar, stop):
                    break
            if self.step > start_step and self.last_checkpoint != checkpoint_path(self.out, self.step):
                self._save()
        return self._finish(start_step)

    def _steps(self) -> Iterator[tuple[int, list[MicroBatch]]]:
        """(step, the step's micro-batches on this process), from the current step to the last."""
        rank = self.ctx.rank
        batches = iterate_micro_batches(
            self.data.dataset,
            self.order,
            self.layout,
            rank,
            self.step,
            min(self.total_steps, self.lr_schedule.end_step),
            num_workers=self.config.num_workers,
            pin_memory=self.ctx.device.type == "cuda",
        )
        for step, group in itertools.groupby(batches, key=operator.itemgetter(0)):
            yield step, [MicroBatch(self.layout.positions(rank, m), x, y) for _, m, (x, y) in group]

    def _clock(self, stop_requested: bool) -> tuple[bool, bool]:
        """(this process asks to stop: a signal or the time budget spent, the time budget says the
        learning-rate decay is due)."""
        cfg = self.config
        if cfg.time_budget_minutes is None:
            return stop_requested, False
        elapsed, budget = time.perf_counter() - self.t0, 60 * cfg.time_budget_minutes
        return stop_requested or elapsed > budget, elapsed > (1.0 - cfg.decay_fraction) * budget

    def _due(self, every: int) -> bool:
        return every > 0 and self.step % every == 0

    def _read_due(self) -> bool:
        """Whether the host reads the steps run since its last read: at every log, preview and
        checkpoint step, at the last step, and at least every `HOST_READ_EVERY` steps."""
        cfg = self.config
        periods = (cfg.log_every, cfg.sample_every, cfg.ckpt_every, HOST_READ_EVERY)
        ends = (self.total_steps, self.lr_schedule.end_step)
        return self.step in ends or any(self._due(p) for p in periods)

    def _read(self, bar: tqdm, stop: GracefulStop) -> bool:
        """Read the pending steps (the host waits for the device here, and only here); log, preview
        and checkpoint when due. Returns True when the run must stop."""
        cfg = self.config
        readout = self.pending.read(since=self.tick)
        assert readout is not None
        if readout.nonfinite:
            raise self._nonfinite_error(readout.steps)
        self.window.add(readout)
        bar.set_postfix({"recent loss": f"{readout.values['loss']:.4f}"}, refresh=False)
        if readout.decay and self.lr_schedule.start_decay(self.step):
            self.echo(
                f"time budget: the learning rate decays from step {self.step} "
                f"to 0 at step {self.lr_schedule.end_step}"
            )
        # The decay, brought forward by the time budget, is over: the budget's end.
        end = self.lr_schedule.end_step
        ended = end < self.total_steps and self.step >= end
        if self._due(cfg.log_every) or readout.stop or ended or self.step == self.total_steps:
            self._log(self.window, self.step - 1, time.perf_counter() - self.t0)
            self.window = LogWindow()
        if self._due(cfg.sample_every):
            self._preview()
        if readout.stop or ended:
            self.stopped = stop.signal_name or "time budget"
            self.echo(f"stopping at step {self.step} ({self.stopped}); saving a checkpoint")
            return True
        if self._due(cfg.ckpt_every) and self.step < self.total_steps:
            self._save()
        self.tick = time.perf_counter()
        return False

    def _finish(self, start_step: int) -> TrainResult:
        """The run's result, written to `SUMMARY_FILE` (with the loss curve if nothing new was saved)."""
        elapsed = time.perf_counter() - self.t0
        rate = (self.step - start_step) / elapsed if elapsed > 0 else 0.0
        loss, first, last = self.logged if self.logged is not None else (None, 0, 0)
        result = TrainResult(
            self.out,
            self.step,
            self.total_steps,
            self.last_checkpoint,
            self.stopped,
            loss,
            rate,
            elapsed,
            start_step=start_step,
            loss_steps=(first, last) if self.logged is not None else None,
        )
        if self.metrics is not None:
            self.metrics.close()
        if D.is_main():
            if self.step == start_step:  # nothing new was saved (and plotted)
                self._plot()
            atomic_write_text(self.out / SUMMARY_FILE, json.dumps(result.to_dict(), indent=2) + "\n")
        return result

    def _nonfinite_error(self, steps: int) -> UserError:
        where = (
            f"the last good checkpoint is {self.last_checkpoint}"
            if self.last_checkpoint
            else "no checkpoint was written yet"
        )
        when = f"at step {self.step}" if steps == 1 else f"within steps {self.step - steps + 1}-{self.step}"
        return UserError(
            f"the loss became NaN or infinite {when}; "
            f"stopped without saving, {where}; lower --lr or set --grad-clip (e.g. 1.0) and resume"
        )

    # ---- outputs -----------------------------------------------------------------------------------
    def _log(self, window: LogWindow, step: int, elapsed: float) -> None:
        if not window.count:
            return
        summary = window.summary(self.config.global_batch)
        self.logged = (summary["loss"], self.step - window.count + 1, self.step)
        if self.metrics is not None:
            record: dict[str, Any] = {"step": self.step, "epoch": self.order.position(step)[0]}
            record.update(summary)
            record.update(lr=self.lr_schedule.at(step), elapsed_sec=self.elapsed_before + elapsed)
            self.metrics.write(record)

    def _plot(self) -> None:
        if self.metrics is not None:
            plot_loss_curve(
                self.metrics.records(), self.out / LOSS_CURVE_FILE, title=f"{self.model_config.name} loss"
            )

    def _save(self) -> None:
        if not weights_finite(self.raw, self.ctx.device):
            raise UserError(
                f"the weights became non-finite by step {self.step}; stopped without saving "
                f"(last good checkpoint: {self.last_checkpoint}); lower --lr or set --grad-clip"
            )
        model_sd, ema_sd, optim_sd = gather_state(self.model, self.raw, self.optimizer, self.ema)
        rngs = D.all_gather_objects(rng_snapshot())
        path = checkpoint_path(self.out, self.step)
        if D.is_main():
            state = {
                "step": self.step,
                "optimizer": optim_sd,
                "ema": self.ema.state_dict(),
                "lr_schedule": self.lr_schedule.state_dict(),
                "data": {**self.order.state_dict(), "epoch": self.order.position(self.step)[0]},
                "rng": rngs,
                "world_size": self.ctx.world_size,
                "elapsed_seconds": self.elapsed_before + time.perf_counter() - self.t0,
            }
            if self.train_step.repa is not None:  # the projector: trained, resumed, never sampled with
                state["repa"] = self.train_step.repa.state_dict()
            sharded = self.config.parallel == "fsdp" and self.ctx.world_size > 1
            holder = weights_holder(self.raw, self.model_config, model_sd, sharded)
            extra = checkpoint_extra(self.config, self.data, self.step, self.init_record)
            save_training_checkpoint(path, holder, ema_sd, state, extra)
            link_last(path)
            prune_checkpoints(self.out, self.config.keep_checkpoints)
            self._plot()
        D.barrier()
        self.last_checkpoint = path

    def _preview(self) -> None:
        from ditkit.training.previews import write_preview

        ema_sd = self.ema.weights(self.raw)
        if D.is_main():
            encoder = self.data.encoder
            if encoder is None:
                from ditkit.first_stage.load import first_stage_from_dict

                encoder = first_stage_from_dict(self.data.first_stage)
            path = self.out / SAMPLES_DIR / f"step_{self.step:07d}.png"
            objective = self.train_step.objective
            scale = self.config.sample_guidance_scale
            write_preview(
                path,
                self.model_config,
                ema_sd,
                encoder,
                objective,
                guidance_scale=objective.default_guidance_scale if scale is None else scale,
                steps=self.config.sample_steps,
                device=self.ctx.device,
            )
            if self.metrics is not None:
                self.metrics.image(SAMPLES_DIR, path, self.step)
        D.barrier()
