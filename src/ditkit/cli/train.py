"""`ditkit train`: train a DiT with the official recipe (or yours), on one process or under torchrun."""

from __future__ import annotations

import argparse
import json

EPILOG = """examples:
  # the paper's recipe on a latent cache made by `ditkit prepare` (AdamW 1e-4, batch 256, EMA 0.9999)
  ditkit train --model DiT-XL/2 --data runs/cache --steps 400000 --out runs/dit-xl
  # 8 GPUs on one machine, or many machines: torchrun runs the same command
  torchrun --nproc-per-node 8 -m ditkit train --model DiT-XL/2 --data runs/cache --steps 400000 --out runs/dit-xl
  # a small pixel-space model on Fashion-MNIST (28x28), on a CPU
  ditkit train --model DiT-XS/4 --data fashion-mnist --image-size 28 --first-stage identity \\
      --lr 1e-3 --warmup-steps 100 --global-batch 128 --ema-decay 0.999 --ema-warmup --steps 1000 --out runs/x
  # continue after an interruption (SIGTERM/SIGINT save a checkpoint first); exactly as if never stopped
  ditkit train ... --out runs/x --resume

outputs in --out: train_config.json, metrics.jsonl, loss_curve.png, samples/step_*.png (EMA grids),
checkpoints/<step>/ (config.json, model.safetensors, ema.safetensors, train_state.pt), train_summary.json.
A checkpoint folder loads with `ditkit sample --checkpoint runs/x/checkpoints/0001000`.
"""


def _override(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.replace("-", "_"), json.loads(value)
    except ValueError:
        return key.replace("-", "_"), value


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a DiT (DDP/FSDP under torchrun, exact resume, graceful stop)",
        description="Train a class-conditional DiT with the paper's recipe by default: AdamW at lr 1e-4 without "
        "weight decay, global batch 256, EMA decay 0.9999 (float32), label dropout 0.1, learned sigma. "
        "Under torchrun every process runs this same command (NCCL on GPUs, gloo on CPUs).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = p.add_argument_group("model and data")
    g.add_argument("--model", default="DiT-XL/2", help="preset (see `ditkit models --all`; default DiT-XL/2)")
    g.add_argument(
        "--set",
        dest="overrides",
        action="append",
        type=_override,
        default=[],
        metavar="KEY=VALUE",
        help="override a model field, e.g. --set hidden_size=256 --set depth=6 --set block=in-context",
    )
    g.add_argument(
        "--data", default="fashion-mnist", help="fashion-mnist, an image folder, or a latent cache"
    )
    g.add_argument("--data-dir", help="folder of the Fashion-MNIST IDX files (default: Debian's location)")
    g.add_argument(
        "--image-size", type=int, help="image side in pixels (default 32 Fashion-MNIST, 256 folders)"
    )
    g.add_argument(
        "--first-stage",
        help="for image data: identity (pixels) or a VAE (sd-vae-ft-ema, a folder), encoded every step (slow); "
        "default identity for fashion-mnist, sd-vae-ft-ema for folders",
    )
    g.add_argument(
        "--flip", default="random", choices=["random", "none"], help="horizontal flips (default random)"
    )
    g.add_argument(
        "--learn-sigma",
        default=True,
        action=argparse.BooleanOptionalAction,
        help="learn the variance with the hybrid loss (default, DiT) or use a fixed one",
    )
    g.add_argument("--noise-schedule", default="linear", choices=["linear", "cosine"])
    g.add_argument("--diffusion-steps", type=int, default=1000)

    o = p.add_argument_group("optimisation")
    o.add_argument("--steps", type=int, help="optimizer steps (or --epochs)")
    o.add_argument("--epochs", type=float, help="passes over the data")
    o.add_argument("--global-batch", type=int, default=256, help="samples per step over all processes (256)")
    o.add_argument(
        "--micro-batch", type=int, help="samples per pass per process; smaller accumulates gradients"
    )
    o.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate (1e-4)")
    o.add_argument("--weight-decay", type=float, default=0.0)
    o.add_argument("--warmup-steps", type=int, default=0, help="linear learning-rate warmup (0: none)")
    o.add_argument(
        "--lr-schedule",
        default="constant",
        choices=("constant", "wsd"),
        help="constant (DiT) or wsd: hold, then decay linearly to 0 over the last --decay-fraction of "
        "the run (with --time-budget-minutes, of the budget)",
    )
    o.add_argument("--decay-fraction", type=float, default=0.5, help="share of the run the wsd decay takes")
    o.add_argument(
        "--min-snr-gamma",
        type=float,
        default=None,
        help="weight the noise loss by min(SNR, gamma)/SNR (min-SNR, Hang et al. 2023; 5 is theirs)",
    )
    o.add_argument(
        "--grad-clip", type=float, help="clip the gradient norm to this value (default: no clipping)"
    )
    o.add_argument("--ema-decay", type=float, default=0.9999)
    o.add_argument(
        "--ema-warmup", action="store_true", help="EMA decay min(decay, (1+n)/(10+n)) for short runs"
    )
    o.add_argument("--class-dropout", type=float, default=0.1, help="label dropout for guidance (0.1)")
    o.add_argument("--seed", type=int, default=0)

    r = p.add_argument_group("run")
    r.add_argument("--out", required=True, help="run folder")
    r.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        help="continue from the newest checkpoint in --out (or a fresh start if none), or from PATH",
    )
    r.add_argument("--time-budget-minutes", type=float, help="save and stop after this long")
    r.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "tf32", "bf16"],
        help="auto: bf16 autocast on GPU (float32 weights, optimizer state and EMA), fp32 on CPU; "
        "tf32: TensorFloat-32 matmuls (CUDA)",
    )
    r.add_argument(
        "--compile",
        default="auto",
        choices=["auto", "none", "blocks", "model"],
        help="torch.compile each block (one shared graph) or the whole model; auto: blocks on GPU, "
        "none on CPU (compiling rarely pays off in short CPU runs)",
    )
    r.add_argument("--checkpointing", type=int, default=0, help="recompute activations of N blocks (memory)")
    r.add_argument(
        "--checkpoint-policy",
        default="full",
        choices=["full", "selective"],
        help="what checkpointed blocks recompute: everything (full), or only elementwise ops, keeping "
        "matmul and attention outputs (selective: less memory saved, less recompute)",
    )
    r.add_argument("--parallel", default="ddp", choices=["ddp", "fsdp"], help="under torchrun (default ddp)")
    r.add_argument("--device", default="auto", help="auto (GPU if any), cpu or cuda")
    r.add_argument("--num-workers", type=int, default=0, help="DataLoader workers per process")
    r.add_argument(
        "--ckpt-every", type=int, default=5000, help="checkpoint period in steps (0: only at the end)"
    )
    r.add_argument("--keep-checkpoints", type=int, default=0, help="keep the newest N (0: all)")
    r.add_argument("--log-every", type=int, default=50)
    r.add_argument("--sample-every", type=int, default=0, help="EMA sample grid period (0: never)")
    r.add_argument("--sample-cfg-scale", type=float, default=4.0)
    r.add_argument("--sample-steps", type=int, default=25, help="DDIM steps of the sample grids")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """The TrainConfig the arguments describe."""
    from ditkit.training.config import TrainConfig

    return TrainConfig(
        model=args.model,
        model_overrides=dict(args.overrides),
        data=args.data,
        data_dir=args.data_dir,
        image_size=args.image_size,
        first_stage=args.first_stage,
        flip=args.flip,
        global_batch=args.global_batch,
        micro_batch=args.micro_batch,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps,
        lr_schedule=args.lr_schedule,
        decay_fraction=args.decay_fraction,
        min_snr_gamma=args.min_snr_gamma,
        grad_clip=args.grad_clip,
        ema_decay=args.ema_decay,
        ema_warmup=args.ema_warmup,
        class_dropout=args.class_dropout,
        steps=args.steps,
        epochs=args.epochs,
        time_budget_minutes=args.time_budget_minutes,
        precision=args.precision,
        compile=args.compile,
        checkpointing=args.checkpointing,
        checkpoint_policy=args.checkpoint_policy,
        parallel=args.parallel,
        learn_sigma=args.learn_sigma,
        noise_schedule=args.noise_schedule,
        diffusion_steps=args.diffusion_steps,
        seed=args.seed,
        ckpt_every=args.ckpt_every,
        log_every=args.log_every,
        sample_every=args.sample_every,
        keep_checkpoints=args.keep_checkpoints,
        sample_cfg_scale=args.sample_cfg_scale,
        sample_steps=args.sample_steps,
        num_workers=args.num_workers,
        device=args.device,
        out=args.out,
    )


def run(args: argparse.Namespace) -> int:
    import os

    from ditkit.training import train

    result = train(config_from_args(args), resume=args.resume, progress=not args.no_progress)
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 reports
        return 0
    if result.stopped == "finished":
        print(
            f"trained {result.step} steps ({result.steps_per_second:.2f} steps/s); checkpoint {result.checkpoint}"
        )
    else:
        print(
            f"stopped at step {result.step} of {result.total_steps} ({result.stopped}); checkpoint {result.checkpoint}"
        )
    return 0
