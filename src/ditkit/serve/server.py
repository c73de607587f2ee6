"""Start the page: load the checkpoint, build the page, queue it and serve it on one address until Ctrl+C.

Offline and private by default: Gradio's telemetry and version check are off (they would call
api.gradio.app), no share link, no server-side rendering (it would need Node), no run history (it can
upload runs), no MCP server; the page's scripts, styles and fonts are Gradio's packaged files, served
by this server. It binds to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ditkit.errors import UserError
from ditkit.extras import require_extra

if TYPE_CHECKING:
    from ditkit.generation.pipeline import DiTPipeline
    from ditkit.samplers.settings import SamplingSettings
    from ditkit.serve.jobs import Limits

DEFAULT_HOST = "127.0.0.1"
# Gradio's customary port.
DEFAULT_PORT = 7860
# Requests waiting in the queue beyond the one running; more are refused with "queue full".
DEFAULT_MAX_QUEUE = 16
# Images per forward pass: bounds the memory one request takes whatever its size.
DEFAULT_BATCH_SIZE = 16
# The work of one request, so that no request holds the one model slot for long (the operator sets them:
# `ditkit serve --max-steps --max-image-steps`): sampling steps, and images x steps. 1000 is a diffusion
# model's whole chain (DiT's T); 64 images x 250 steps is the page's largest grid at DiT's FID sampler.
DEFAULT_MAX_STEPS = 1000
DEFAULT_MAX_IMAGE_STEPS = 64 * 250
# How long shutting down waits for the running request to stop (it stops before its next model call).
STOP_WAIT_S = 60
# What the page accepts as an upload: nothing (it has no upload field; Gradio's upload route stays
# open to anyone otherwise).
MAX_UPLOAD = "1kb"
# Set before Gradio is imported: its telemetry and the PyPI version check read them at import and launch.
OFFLINE_ENVIRONMENT = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1"}


def serve(
    pipe: DiTPipeline,
    checkpoint: str,
    settings: SamplingSettings | None = None,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    max_queue: int = DEFAULT_MAX_QUEUE,
    batch_size: int | None = DEFAULT_BATCH_SIZE,
    limits: Limits | None = None,
) -> None:
    """Serve the page for `pipe` at http://host:port/ until Ctrl+C or SIGTERM; results live in a temp folder.

    `settings` are the sampling settings the page starts from (default: the checkpoint's, `pipe.settings()`);
    `limits` the most work one request may ask for (default `ditkit.serve.jobs.Limits()`).

    Raises:
        UserError: Gradio missing, or the port cannot be bound.
    """
    require_extra("serve", "ditkit serve")
    root = Path(tempfile.mkdtemp(prefix="ditkit-serve-"))
    # Gradio's copies of the files it serves go under `root` too, so that stopping removes them all.
    os.environ.update(OFFLINE_ENVIRONMENT, GRADIO_TEMP_DIR=str(root / "gradio"))
    from ditkit.serve.jobs import StopSwitch
    from ditkit.serve.page import CSS, Workspace, build_page

    switch = StopSwitch(limits)
    try:
        page = build_page(pipe, checkpoint, Workspace(root), batch_size, settings, limits, switch)
        page.queue(max_size=max_queue, default_concurrency_limit=1)
        try:
            page.launch(
                server_name=host,
                server_port=port,
                prevent_thread_lock=True,
                quiet=True,
                share=False,
                show_error=True,  # Gradio's own one-line reason for a malformed API call
                max_file_size=MAX_UPLOAD,
                footer_links=[],
                run_history=False,
                ssr_mode=False,
                pwa=False,
                mcp_server=False,
                allowed_paths=[str(root)],
                css=CSS,
            )
        except OSError as err:
            raise UserError(f"cannot serve on {host}:{port} ({err}); pass another --port or --host") from err
        url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
        print(
            f"serving {checkpoint} at {url} (device {pipe.device}, precision {pipe.precision}); Ctrl+C stops",
            flush=True,
        )
        if host not in ("127.0.0.1", "localhost", "::1"):
            print(
                f"note: listening on {host}: anyone who can reach this machine can use the page", flush=True
            )
        try:
            _stop_on_sigterm()
            while True:
                time.sleep(1.0)
        except KeyboardInterrupt:
            print("stopping", flush=True)
        finally:
            # The running request ends before its next model call: a sampling thread still inside torch
            # when the interpreter exits aborts the process.
            if not switch.stop_all(STOP_WAIT_S):
                print(f"note: the running request did not stop within {STOP_WAIT_S} s", flush=True)
            page.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _stop_on_sigterm() -> None:
    """SIGTERM (kill, docker stop, systemd) stops the server as cleanly as Ctrl+C (main thread only)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_interrupt)
