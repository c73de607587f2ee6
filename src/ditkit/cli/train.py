"""`ditkit train`: train a DiT with the official recipe (or yours), on one process or under torchrun."""

from __future__ import annotations

import argparse

from ditkit.cli.config_flags import add_config_arguments, given_config_values
from ditkit.cli.formatting import add_command, plural

SUMMARY = "train a DiT (DDP/FSDP under torchrun, exact resume, graceful stop)"
DESCRIPTION = (
    "Train a class-conditional DiT with the paper's recipe by default: AdamW at lr 1e-4 without "
    "weight decay, global batch 256, EMA decay 0.9999 (float32), label dropout 0.1, learned sigma. "
    "Under torchrun every process runs this same command (NCCL on GPUs, gloo on CPUs). "
    "Each option is a field of ditkit.TrainConfig, written to OUT/train_config.json."
)
EPILOG = """examples:
  # the paper's recipe on a latent cache made by `ditkit prepare` (AdamW 1e-4, batch 256, EMA 0.9999)
  ditkit train --model DiT-XL/2 --data runs/cache --steps 400000 --out runs/dit-xl
  # 8 GPUs on one machine, or many machines: torchrun runs the same command
  torchrun --nproc-per-node 8 -m ditkit train --model DiT-XL/2 --data runs/cache --steps 400000 --out runs/dit-xl
  # a small pixel-space model on Fashion-MNIST (28x28), on a CPU
  ditkit train --model DiT-XS/4 --data fashion-mnist --image-size 28 --first-stage identity \\
      --lr 1e-3 --warmup-steps 100 --global-batch 128 --ema-decay 0.999 --ema-warmup --steps 1000 --out runs/x
  # flow matching as in SiT (Linear path, velocity), with SD3's logit-normal times
  ditkit train --model DiT-XS/4 --data fashion-mnist --image-size 28 --objective flow \\
      --time-sampling logit-normal --lr 1e-3 --global-batch 32 --steps 1000 --out runs/flow
  # continue after an interruption (SIGTERM/SIGINT save a checkpoint first), exactly as if never
  # stopped, or train longer: the run's train_config.json supplies every option not given again
  ditkit train --out runs/x --resume --steps 2000
  # fine-tune: a new run from a checkpoint's EMA weights (a run folder, the official DiT-XL-2-256x256.pt
  # fetched by you, a diffusers folder), here on five other classes with only the adaLN layers training
  ditkit train --model DiT-XS/4 --data fashion-mnist --image-size 28 --first-stage identity \\
      --classes 5,6,7,8,9 --init runs/x --freeze all-but-adaln --lr 1e-4 --steps 500 --out runs/x-ft
  # sample the run's newest checkpoint (or name one: runs/x/checkpoints/0001000, runs/x/checkpoints/last)
  ditkit sample runs/x --class sneaker --out runs/x/grid

outputs in --out: train_config.json, metrics.jsonl, loss_curve.png, samples/step_*.png (EMA grids),
checkpoints/<step>/ (config.json, model.safetensors, ema.safetensors, train_state.pt), checkpoints/last
(a link to the newest), train_summary.json.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from ditkit.training.config import OPTIMISATION, RENAMED_OPTIONS, RUN, TrainConfig
    from ditkit.training.recipes import TRAIN_RECIPES

    p = add_command(subparsers, "train", run, SUMMARY, DESCRIPTION, EPILOG)
    groups = add_config_arguments(p, TrainConfig, renamed=RENAMED_OPTIONS)
    groups[OPTIMISATION].add_argument(
        "--recipe",
        choices=tuple(TRAIN_RECIPES),
        help="start from a published run's options (lightningdit: LightningDiT-XL/1's block, flow matching "
        "with logit-normal times and the cosine loss, AdamW 2e-4 with betas 0.9 0.95, batch 1024, EMA "
        "0.9999); the options given take over, --set merges with the recipe's model options",
    )
    groups[RUN].add_argument(
        "--resume",
        nargs="?",
        const="latest",
        metavar="PATH",
        help="continue from the newest checkpoint in --out (an error if --out holds no run), or from PATH (a run "
        "folder or a checkpoint); the run's train_config.json supplies every option not given again",
    )


def config_from_args(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """The TrainConfig the arguments describe (on --resume: the run's own options, updated by those given).

    Checked here, before torch is imported, so a bad option fails at once.
    """
    from ditkit.errors import UserError
    from ditkit.run_folder import check_resume_target, read_run_config
    from ditkit.training.config import TrainConfig, resumed_config

    given = given_config_values(args, TrainConfig)
    check_resume_target(args.resume, given["out"])
    saved = read_run_config(args.resume, given["out"])
    if saved is not None:
        if args.recipe is not None:
            raise UserError("drop --recipe on --resume: the run's train_config.json holds its options")
        return resumed_config(saved, given)
    if args.recipe is not None:
        from ditkit.training.recipes import recipe_options

        given = recipe_options(args.recipe, given)
    return TrainConfig(**given)


def run(args: argparse.Namespace) -> int:
    import os
    import shlex
    import signal

    config = config_from_args(args)
    from ditkit.training import train

    result = train(config, resume=args.resume, progress=not args.no_progress)
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 reports
        return 0
    steps = (
        f"steps {result.start_step + 1}-{result.step}" if result.step > result.start_step else "no new steps"
    )
    if result.start_step:
        steps += f" ({plural(result.step - result.start_step, 'new step')} after resuming)"
    loss = ""
    if result.loss is not None and result.loss_steps is not None:
        first, last = result.loss_steps
        loss = f"; loss {result.loss:.4f} (mean of steps {first}-{last}, as logged)"
    if result.stopped == "finished":
        print(
            f"trained {steps} ({result.steps_per_second:.2f} steps/s){loss}; checkpoint {result.checkpoint}"
        )
        return 0
    print(
        f"stopped at step {result.step} of {result.total_steps} ({result.stopped}; {steps}){loss}; "
        f"checkpoint {result.checkpoint}; continue with: ditkit train --out {shlex.quote(str(result.out))} "
        "--resume"
    )
    if result.stopped in signal.Signals.__members__:  # interrupted: the status says so (128 + signal)
        return 128 + signal.Signals[result.stopped].value
    return 0
