"""`ditkit serve`: a web page to try a checkpoint (generate images, walk latents), local and offline."""

from __future__ import annotations

import argparse

from ditkit.cli.formatting import add_command, positive_int
from ditkit.cli.sample import add_pipeline_arguments, open_pipeline
from ditkit.cli.sampling_flags import add_sampling_arguments, given_sampling

SUMMARY = "a local web page to try a checkpoint: generate images, walk latents (needs ditkit[serve])"
DESCRIPTION = (
    "Serve a web page (Gradio) over one checkpoint: generate class-conditional images with "
    "any sampler and seed, and draw noise and class-embedding walks. Binds to 127.0.0.1 by default."
)
EPILOG = """examples:
  ditkit serve runs/demo/checkpoint                 # then open http://127.0.0.1:7860/
  ditkit serve DiT-XL-2-256x256.pt --port 8000 --precision fp32
  ditkit serve runs/demo/checkpoint --host 0.0.0.0  # reachable from other machines: mind who can reach it

needs the serve extra: pip install 'ditkit[serve]' (make serve installs it and serves the demo's checkpoint).
The page has a Generate tab (classes by name, images per class, guidance, sampler, steps, seed; a gallery
and downloads) and a Walk tab (noise and class-embedding walks as a GIF and a strip); its sampling fields
start from the flags given, else the checkpoint's recorded settings. Requests run one at a time; up to
--max-queue more wait. A request may ask for at most --max-steps steps and --max-image-steps images x
steps; its Stop button ends it before the next model call. Nothing is fetched from the network and no analytics are sent.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from ditkit.serve.server import (
        DEFAULT_BATCH_SIZE,
        DEFAULT_HOST,
        DEFAULT_MAX_IMAGE_STEPS,
        DEFAULT_MAX_QUEUE,
        DEFAULT_MAX_STEPS,
        DEFAULT_PORT,
    )

    p = add_command(subparsers, "serve", run, SUMMARY, DESCRIPTION, EPILOG)
    p.add_argument("checkpoint", help="checkpoint file or folder")
    p.add_argument("--host", default=DEFAULT_HOST, help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port")
    p.add_argument(
        "--max-queue",
        type=int,
        default=DEFAULT_MAX_QUEUE,
        help="requests that may wait while one runs; more are refused",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help="images per forward pass, bounding memory",
    )
    p.add_argument(
        "--max-steps",
        type=positive_int,
        default=DEFAULT_MAX_STEPS,
        help="the most sampling steps one request may ask for",
    )
    p.add_argument(
        "--max-image-steps",
        type=positive_int,
        default=DEFAULT_MAX_IMAGE_STEPS,
        help="the most images x steps one request may ask for (a solver that picks its own steps is "
        "stopped past a few times this many model evaluations)",
    )
    add_sampling_arguments(p)  # the page's starting values
    add_pipeline_arguments(p)
    p.add_argument("--device", help="device (default: cuda when present, else cpu)")


def run(args: argparse.Namespace) -> int:
    from ditkit.errors import UserError
    from ditkit.extras import require_extra
    from ditkit.serve.jobs import Limits
    from ditkit.serve.server import serve

    if not 0 < args.port < 65536:
        raise UserError(f"--port must lie in 1..65535, got {args.port}")
    if args.max_queue < 1 or args.batch_size < 1:
        raise UserError("--max-queue and --batch-size must be at least 1")
    given = given_sampling(args)
    require_extra("serve", "ditkit serve")  # before the checkpoint is loaded
    pipe = open_pipeline(args, args.device)
    serve(
        pipe,
        str(args.checkpoint),
        pipe.settings(**given),
        host=args.host,
        port=args.port,
        max_queue=args.max_queue,
        batch_size=args.batch_size,
        limits=Limits(args.max_steps, args.max_image_steps),
    )
    return 0
