"""The page of `ditkit serve`: a Generate tab and a Walk tab over one `DiTPipeline` (Gradio Blocks).

The handlers only read the form, call `ditkit.serve.jobs` (which calls the pipeline and the walks) and
put the results on the page. A bad request is answered in the tab's status line, in one line; the
traceback of an unexpected failure goes to the server's log, never to the page.
"""

from __future__ import annotations

import html
import itertools
import shutil
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr
import torch

from ditkit.errors import UserError
from ditkit.generation.images import DEFAULT_GIF_DURATION_MS
from ditkit.generation.pipeline import DiTPipeline
from ditkit.generation.walks import DEFAULT_FRAMES, walk_settings
from ditkit.samplers.settings import SamplingSettings
from ditkit.serve import jobs

# Result folders kept on disk (older ones are deleted): enough for every request a few users make.
MAX_KEPT_RESULTS = 64
# Range of the guidance slider: 1 is no guidance; DiT's figures use 4, its FID runs 1.5.
MAX_GUIDANCE = 15.0
GUIDANCE_STEP = 0.1
# Gradio's copies of the served files: checked every 10 minutes, removed after an hour.
CACHE_CLEANUP = (600, 3600)
# Every sampling request shares this queue: one runs at a time, on the one model.
CONCURRENCY_ID = "sampling"
# The default of the handlers' `progress` argument: Gradio gives each request its own tracker that
# follows the samplers' tqdm bars (one instance here keeps the default out of the signature, ruff B008).
TRACK_TQDM = gr.Progress(track_tqdm=True)
# How long a Stop click waits for its request to end (it ends before its next model call) before
# answering that it is stopping.
STOP_ANSWER_WAIT_S = 30.0
# Images the Generate tab's gallery keeps, newest first, over the session's requests.
MAX_HISTORY = 64
CSS = """
.ditkit-pixels img { image-rendering: pixelated; }
#generate-gallery .caption-label, #generate-gallery .caption {
  white-space: normal; max-width: 100%; overflow: visible; text-overflow: clip;
}
.ditkit-error { color: #b91c1c; font-weight: 600; margin: 0; }
.ditkit-ok { margin: 0; }
"""


class Workspace:
    """A folder of numbered result folders, of which the newest `keep` are kept."""

    def __init__(self, root: Path, keep: int = MAX_KEPT_RESULTS) -> None:
        self.root = root
        self.keep = keep
        self._count = itertools.count()
        self._lock = threading.Lock()

    def new(self, kind: str) -> Path:
        """A new empty folder `root/<n>-<kind>`; the oldest beyond `keep` are removed."""
        with self._lock:
            folder = self.root / f"{next(self._count):06d}-{kind}"
            folder.mkdir(parents=True)
            for old in sorted(p for p in self.root.iterdir() if p.is_dir())[: -self.keep]:
                shutil.rmtree(old, ignore_errors=True)
        return folder


def status_html(message: str, error: bool = False) -> str:
    """One line for a tab's status box (escaped: it may quote what the user typed)."""
    css_class = "ditkit-error" if error else "ditkit-ok"
    return f'<p class="{css_class}">{"error: " if error else ""}{html.escape(message)}</p>'


# The page has fields where the command line has flags: its messages name the field.
FIELD_NAMES = (
    ("drop --steps", "clear the steps field"),
    ("--steps", "the steps field"),
    ("--class/--all-classes", "the class box"),
    ("--class", "the class box"),
    ("--guidance-scale", "the guidance scale"),
    ("--sampler", "the sampler menu"),
    ("--seed", "the seed field"),
)
# Longest message the page shows; longer ones are cut (they may quote what the user typed).
MAX_MESSAGE_CHARS = 300


def error_line(err: BaseException) -> str:
    """The one line a failed request shows: the message of a `UserError` (naming the page's fields, not
    the command line's flags), a short note otherwise."""
    if isinstance(err, UserError):
        message = str(err)
        for flag, field in FIELD_NAMES:
            message = message.replace(flag, field)
        return message if len(message) <= MAX_MESSAGE_CHARS else message[: MAX_MESSAGE_CHARS - 3] + "..."
    if isinstance(err, torch.OutOfMemoryError):
        return "out of memory: ask for fewer images at once, or start the server with a smaller --batch-size"
    first = (str(err).strip().splitlines() or [""])[0][:200]
    return f"sampling failed ({type(err).__name__}: {first}); the server's log has the details"


def _answer(outputs: int, job: Callable[[], tuple[Any, ...]]) -> tuple[Any, ...]:
    """Run `job`; on failure leave the `outputs - 1` result outputs as they are and fill the status line."""
    try:
        return job()
    except Exception as err:
        if not isinstance(err, UserError):
            traceback.print_exc(file=sys.stderr)
        stopped = isinstance(err, jobs.Stopped)  # asked for (the Stop button), or the budget spent
        return (*[gr.skip()] * (outputs - 1), status_html(error_line(err), error=not stopped))


def served_name(checkpoint: str) -> str:
    """What the page calls the checkpoint: its name, not where it lies on the server."""
    path = Path(checkpoint)
    if path.name in ("last", "checkpoint") or path.name.isdigit():  # runs/x/checkpoints/0001000
        parts = [p for p in path.parts if p not in ("checkpoints",)]
        return "/".join(parts[-2:])
    return path.name or checkpoint


def device_note(pipe: DiTPipeline, checkpoint: str) -> str:
    """The line under the title: what is served (its name, not its path on the server), where it runs
    and in which precision."""
    height, width = pipe.image_size
    classes = f"{pipe.num_classes} classes" if pipe.num_classes else "unconditional"
    return (
        f"**{html.escape(served_name(checkpoint))}**: {height}x{width} images, {classes} · "
        f"device **{pipe.device}** · precision **{pipe.precision}** · one request at a time, others queue"
    )


def _class_box(pipe: DiTPipeline, label: str, value: list[str], elem_id: str) -> gr.Dropdown:
    return gr.Dropdown(
        choices=jobs.class_choices(pipe),
        value=value,
        multiselect=True,
        allow_custom_value=True,  # typed names go to the pipeline's resolver (synonyms, typo suggestions)
        filterable=True,
        label=label,
        info="type to search every name and synonym; several classes at once",
        visible=pipe.num_classes > 0,
        elem_id=elem_id,
    )


def _sampling_controls(pipe: DiTPipeline, defaults: SamplingSettings, prefix: str) -> tuple[Any, Any, Any]:
    """Guidance, sampler (the pipeline's list) and steps (the sampler's default, updated on change),
    starting from `defaults` (resolved: its sampler named, its guidance scale set)."""
    scale = float(defaults.guidance_scale or 1.0)
    guidance = gr.Slider(
        min(1.0, scale),  # the range holds whatever scale the checkpoint recorded
        max(MAX_GUIDANCE, scale),
        scale,
        step=GUIDANCE_STEP,
        label="guidance scale (1: none)",
        elem_id=f"{prefix}-guidance",
    )
    with gr.Row():
        sampler_box = gr.Dropdown(
            list(pipe.samplers), value=defaults.sampler, label="sampler", elem_id=f"{prefix}-sampler"
        )
        steps = jobs.shown_steps(pipe, defaults)
        steps_box = gr.Number(
            steps,
            precision=0,
            label="steps (empty: the sampler's own)",
            interactive=steps is not None,
            elem_id=f"{prefix}-steps",
        )

    def sampler_steps(sampler: str) -> Any:
        """The steps box for a newly chosen sampler: its default, disabled where it picks its own."""
        steps = pipe.default_steps(sampler)
        return gr.update(value=steps, interactive=steps is not None)

    sampler_box.change(sampler_steps, sampler_box, steps_box, queue=False)
    return guidance, sampler_box, steps_box


def build_page(
    pipe: DiTPipeline,
    checkpoint: str,
    workspace: Workspace,
    batch_size: int | None,
    defaults: SamplingSettings | None = None,
    limits: jobs.Limits | None = None,
    switch: jobs.StopSwitch | None = None,
) -> gr.Blocks:
    """The Blocks of the page; call `.queue(...)` and `.launch(...)` on it (see `ditkit.serve.server`).

    Args:
        defaults: the sampling settings the forms start from and the requests build on (default:
            `pipe.settings()`, the checkpoint's recorded ones).
        limits: the most work one request may ask for (default `jobs.Limits()`); the page's Stop
            button and these limits stop a request between two model calls (`jobs.StopSwitch`,
            installed on `pipe`).
        switch: the `jobs.StopSwitch` to install (default: a new one with `limits`); the server keeps it
            to stop the running request before it exits.
    """
    defaults = pipe.settings(defaults)
    switch = switch or jobs.StopSwitch(limits)
    switch.install(pipe)
    first = [jobs.class_choices(pipe)[0][1]] if pipe.num_classes else []
    extra = {"checkpoint": served_name(checkpoint), "precision": pipe.precision}
    with gr.Blocks(title="ditkit serve", analytics_enabled=False, delete_cache=CACHE_CLEANUP) as page:
        gr.Markdown("## ditkit · DiT playground")
        gr.Markdown(device_note(pipe, checkpoint), elem_id="device-note")
        with gr.Tab("Generate"):
            with gr.Row():
                with gr.Column(scale=1):
                    classes = _class_box(pipe, "classes", first, "generate-classes")
                    per_class = gr.Slider(
                        1,
                        jobs.MAX_PER_CLASS,
                        4,
                        step=1,
                        label="images per class" if pipe.num_classes else "images",
                        elem_id="generate-per-class",
                    )
                    guidance, sampler, steps = _sampling_controls(pipe, defaults, "generate")
                    with gr.Row():
                        seed = gr.Number(
                            defaults.seed,
                            precision=0,
                            label="seed (image i: seed + i)",
                            elem_id="generate-seed",
                        )
                        random_seed = gr.Checkbox(False, label="random seed", elem_id="generate-random")
                    with gr.Row():
                        go = gr.Button("Generate", variant="primary", elem_id="generate-button")
                        stop = gr.Button("Stop", variant="stop", elem_id="generate-stop")
                    status = gr.HTML(elem_id="generate-status")
                with gr.Column(scale=2):
                    history = gr.State([])  # what redraws each shown image: {"class", "seed"}, newest first
                    gallery = gr.Gallery(
                        label="images, newest first (enlarged; click one to reuse its class and seed)",
                        columns=4,
                        object_fit="contain",
                        format="png",
                        buttons=["download", "fullscreen"],
                        elem_id="generate-gallery",
                        elem_classes=["ditkit-pixels"],
                    )
                    files = gr.File(label="download: grid and single PNGs (zip)", file_count="multiple")

        def on_generate(
            classes: list[str],
            per_class: int,
            guidance: float,
            sampler: str,
            steps: float | None,
            seed: float | None,
            random_seed: bool,
            shown: list[Any] | None,
            kept: list[dict[str, Any]],
            request: gr.Request,
            progress: gr.Progress = TRACK_TQDM,
        ) -> tuple[Any, ...]:
            def job() -> tuple[Any, ...]:
                used = jobs.pick_seed(seed, random_seed)
                asked = jobs.request_settings(pipe.objective, defaults, guidance, sampler, steps, used)
                out = jobs.generate(
                    pipe,
                    workspace.new("generate"),
                    classes,
                    int(per_class),
                    asked,
                    batch_size=batch_size,
                    extra=extra,
                    limits=switch.limits,
                )
                # the new images first, then the session's earlier ones (kept up to MAX_HISTORY)
                pictures = [*out.gallery, *_gallery_items(shown)][:MAX_HISTORY]
                redraw = [*out.images, *kept][:MAX_HISTORY]
                return pictures, redraw, [str(p) for p in out.files], used, status_html(out.summary)

            with switch.running(_session(request)):
                return _answer(5, job)

        go.click(
            on_generate,
            [classes, per_class, guidance, sampler, steps, seed, random_seed, gallery, history],
            [gallery, history, files, seed, status],
            concurrency_id=CONCURRENCY_ID,
            concurrency_limit=1,
        )
        _stop_button(stop, switch, status)

        def on_pick(kept: list[dict[str, Any]], picked: gr.SelectData) -> tuple[Any, ...]:
            """Reuse the clicked image's class and seed: Generate then redraws it (one image per class)."""
            index = picked.index if isinstance(picked.index, int) else picked.index[0]
            if not 0 <= index < len(kept):
                return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
            image = kept[index]
            chosen = [image["class"]] if image["class"] is not None else gr.skip()
            note = f"seed {image['seed']} set: Generate redraws this image"
            return chosen, 1, image["seed"], False, status_html(note)

        gallery.select(on_pick, history, [classes, per_class, seed, random_seed, status], queue=False)
        _walk_tab(pipe, workspace, batch_size, first, walk_settings(pipe, defaults), switch)
    return page


def _gallery_items(shown: list[Any] | None) -> list[tuple[Any, str]]:
    """The gallery's current (image, caption) items as Gradio hands them back to a handler."""
    items = []
    for item in shown or []:
        if isinstance(item, dict):  # Gradio 4/5 style: {"image": ..., "caption": ...}
            image, caption = item.get("image") or item.get("path"), item.get("caption") or ""
        else:
            image, caption = item
        if isinstance(image, dict):
            image = image.get("path")
        items.append((image, caption or ""))
    return items


def _session(request: gr.Request | None) -> str | None:
    """The page session a request comes from (one browser tab)."""
    return getattr(request, "session_hash", None)


def _stop_button(stop: gr.Button, switch: jobs.StopSwitch, status: gr.HTML) -> None:
    """Stop this tab's running request before its next model call (another user's is not touched).

    The request answers "stopped" through the queue's stream, and this click's answer comes back on
    its own HTTP response: the two write the same status line and may arrive in either order. So the
    click waits for the request to end and answers what the request answers ("stopped"), or leaves
    the line alone (nothing of the tab's runs, or the request finished before its next model call); a
    first answer sent while the request still runs would overwrite the request's later one whenever
    it arrived last, and the page kept "stopping..." for good (issue 28).
    """

    def on_stop(request: gr.Request) -> Any:
        running = switch.stop(_session(request))
        if running is None:
            return gr.skip()
        if running.ended.wait(STOP_ANSWER_WAIT_S):
            return status_html("stopped") if running.stopped else gr.skip()
        # a model call longer than the wait: say so (the request answers "stopped" when it ends)
        return status_html("stopping after the current model call")

    # Not queued: it must run while the request it stops holds the queue's one slot.
    stop.click(on_stop, None, status, queue=False, show_progress="hidden")


def _walk_tab(
    pipe: DiTPipeline,
    workspace: Workspace,
    batch_size: int | None,
    first: list[str],
    defaults: SamplingSettings,
    switch: jobs.StopSwitch,
) -> None:
    with gr.Tab("Walk"):
        with gr.Row():
            with gr.Column(scale=1):
                mode = gr.Radio(
                    [("noise walk: slerp through the seeds' noises", "noise")]
                    + (
                        [("class walk: the class embedding moves, the noise stays", "class")]
                        if pipe.num_classes
                        else []
                    ),
                    value="noise",
                    label="walk",
                    elem_id="walk-mode",
                )
                classes = _class_box(
                    pipe, "class (noise walk) or classes (class walk)", first, "walk-classes"
                )
                seeds = gr.Textbox(
                    "0, 1, 2",
                    label="seeds (noise walk: the path; class walk: one seed)",
                    elem_id="walk-seeds",
                )
                frames = gr.Slider(
                    2,
                    jobs.MAX_FRAMES,
                    DEFAULT_FRAMES,
                    step=1,
                    label="frames per segment",
                    elem_id="walk-frames",
                )
                with gr.Row():
                    loop = gr.Checkbox(False, label="loop back to the first point")
                    duration = gr.Number(DEFAULT_GIF_DURATION_MS, precision=0, label="GIF frame time (ms)")
                guidance, sampler, steps = _sampling_controls(pipe, defaults, "walk")
                with gr.Row():
                    go = gr.Button("Walk", variant="primary", elem_id="walk-button")
                    stop = gr.Button("Stop", variant="stop", elem_id="walk-stop")
                status = gr.HTML(elem_id="walk-status")
            with gr.Column(scale=2):
                gif = gr.Image(
                    label="animation (enlarged)",
                    type="filepath",
                    format="gif",
                    buttons=["download", "fullscreen"],
                    elem_id="walk-gif",
                    elem_classes=["ditkit-pixels"],
                )
                gr.Markdown("every frame, left to right and row by row", elem_id="walk-strip-label")
                strip = gr.Image(
                    label="every frame",
                    show_label=False,  # a label drawn over the picture would hide its first frames
                    type="filepath",
                    format="png",
                    buttons=["download", "fullscreen"],
                    elem_id="walk-strip",
                    elem_classes=["ditkit-pixels"],
                )
                files = gr.File(
                    label="download: GIF and strip (as ditkit walk writes them)", file_count="multiple"
                )

    def on_walk(
        mode: str,
        classes: list[str],
        seeds: str,
        frames: int,
        loop: bool,
        guidance: float,
        sampler: str,
        steps: float | None,
        duration: float | None,
        request: gr.Request,
        progress: gr.Progress = TRACK_TQDM,
    ) -> tuple[Any, ...]:
        def job() -> tuple[Any, ...]:
            out = jobs.walk(
                pipe,
                workspace.new("walk"),
                mode,
                classes,
                seeds,
                int(frames),
                jobs.request_settings(pipe.objective, defaults, guidance, sampler, steps),
                loop=loop,
                duration_ms=duration,
                batch_size=batch_size,
                limits=switch.limits,
            )
            return str(out.gif), str(out.strip), [str(p) for p in out.files], status_html(out.summary)

        with switch.running(_session(request)):
            return _answer(4, job)

    go.click(
        on_walk,
        [mode, classes, seeds, frames, loop, guidance, sampler, steps, duration],
        [gif, strip, files, status],
        concurrency_id=CONCURRENCY_ID,
        concurrency_limit=1,
    )
    _stop_button(stop, switch, status)
