"""`ditkit serve` without a browser: the jobs behind the buttons, the one-line errors, the CLI's early checks.

The page itself is driven in headless Chromium in test_serve_browser.py.
"""

import json
import os
import zipfile

import numpy as np
import pytest
from helpers import ctrl_c_reaches_it, sampling_dit
from PIL import Image

from ditkit.cli.main import main
from ditkit.errors import UserError
from ditkit.generation.pipeline import DiTPipeline
from ditkit.objectives import as_objective
from ditkit.samplers.settings import SamplingSettings
from ditkit.serve import jobs

NAMES = ["tee", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]
SCALE = 32  # 8-pixel images are shown 32 times larger (DISPLAY_MIN_SIDE 256)


@pytest.fixture(scope="module")
def pipe():
    return DiTPipeline(sampling_dit(), class_names=NAMES, device="cpu")


def asked(guidance_scale, sampler, steps, seed=0):
    """A request's settings as the page builds them from its fields (over an unrecorded checkpoint's)."""
    base = SamplingSettings(guidance_scale=4.0)
    return jobs.request_settings(as_objective("diffusion"), base, guidance_scale, sampler, steps, seed)


def test_generate_shows_the_pipeline_images_enlarged_and_writes_the_downloads(pipe, tmp_path):
    result = jobs.generate(pipe, tmp_path, ["coat", "7"], 2, asked(4.0, "ddim", 3, seed=10))
    assert result.seed == 10 and len(result.gallery) == 4
    expected = pipe([4, 4, 7, 7], 4.0, 3, "ddim", seeds=[10, 11, 12, 13], progress=False)
    for (shown, caption), image, (name, seed) in zip(
        result.gallery,
        expected,
        [("coat (4)", 10), ("coat (4)", 11), ("sneaker (7)", 12), ("sneaker (7)", 13)],
        strict=True,
    ):
        assert shown.size == (8 * SCALE, 8 * SCALE)
        big = np.asarray(shown)
        assert np.array_equal(big[::SCALE, ::SCALE], image[..., 0])  # nearest neighbour: exact pixels
        assert np.array_equal(big[SCALE - 1 :: SCALE, SCALE - 1 :: SCALE], image[..., 0])
        assert caption == f"{name} · seed {seed} · ddim, 3 steps, guidance 4"
    grid, archive = result.files
    assert grid.name == "grid.png" and Image.open(grid).format == "PNG"  # `ditkit sample`'s grid
    with zipfile.ZipFile(archive) as z:
        names = set(z.namelist())
        record = json.loads(z.read("samples.json"))
    assert names == {
        "samples.json",
        *(f"images/{i:05d}_seed{10 + i}_class{4 if i < 2 else 7}.png" for i in range(4)),
    }
    assert record["settings"]["sampler"] == "ddim" and record["images"][2]["class_name"] == "sneaker"
    assert "seeds 10..13" in result.summary


def test_generate_default_steps_are_named(pipe, tmp_path):
    result = jobs.generate(pipe, tmp_path, ["bag"], 1, asked(1.0, "dpm++2m", None))
    assert (
        result.gallery[0][1]
        == f"bag (8) · seed 0 · dpm++2m, {pipe.default_steps('dpm++2m')} steps, guidance 1"
    )


@pytest.mark.parametrize(
    "classes, per_class, steps, message",
    [
        (["zebra"], 1, 3, "unknown class 'zebra'"),
        (["sneakr"], 1, 3, r"did you mean: sneaker \(7\)"),
        ([], 1, 3, "choose at least one class"),
        (["coat"], 1, 0, "steps must be a whole number of at least 1, got 0"),
        (["coat"], 1, 2.5, "got 2.5"),
        (["coat"], 0, 3, "1..16 images per class"),
        ([str(i % 10) for i in range(8)], 9, 3, "at most 64 in all"),
        ([str(i % 10) for i in range(17)], 1, 3, "at most 16 classes"),
    ],
)
def test_generate_bad_requests_are_one_line_errors_before_sampling(
    pipe, tmp_path, classes, per_class, steps, message
):
    with pytest.raises(UserError, match=message) as err:
        jobs.generate(pipe, tmp_path, classes, per_class, asked(4.0, "ddim", steps))
    assert "\n" not in str(err.value)
    assert not (tmp_path / "grid.png").exists()


def test_seeds():
    assert jobs.pick_seed(7, random=False) == 7 and jobs.pick_seed(7.0, random=False) == 7
    drawn = {jobs.pick_seed(0, random=True) for _ in range(8)}
    assert len(drawn) > 1 and all(0 <= s <= jobs.MAX_SEED for s in drawn)
    for bad in (-1, 1.5, None, 2**31):
        with pytest.raises(UserError, match="seed"):
            jobs.pick_seed(bad, random=False)
    assert jobs.parse_seeds("0, 1 2,3") == [0, 1, 2, 3]
    for bad in ("", "0, x", "-1"):
        with pytest.raises(UserError, match="seed"):
            jobs.parse_seeds(bad)


def test_noise_walk_gif_and_strip(pipe, tmp_path):
    result = jobs.walk(
        pipe,
        tmp_path,
        "noise",
        ["bag"],
        "0, 1, 2",
        3,
        asked(2.0, "ddim", 3),
        loop=False,
        duration_ms=50,
    )
    gif = Image.open(result.gif)
    assert gif.format == "GIF" and gif.n_frames == 5 and gif.size == (8 * SCALE, 8 * SCALE)
    full_gif, full_strip = result.files
    assert Image.open(full_gif).n_frames == 5 and Image.open(full_strip).format == "PNG"  # as `ditkit walk`
    strip_scale = jobs.STRIP_MAX_WIDTH // (5 * 10 + 2)  # 14: the widest that fits
    assert Image.open(result.strip).size == (
        5 * 8 * strip_scale + 6 * 2,
        8 * strip_scale + 2 * 2,
    )  # 2 px gaps
    assert result.summary.startswith("bag: seeds 0 -> 1 -> 2 (5 frames, ddim, 3 steps")


def test_class_walk_and_walk_errors(pipe, tmp_path):
    options = dict(loop=True, duration_ms=80)
    ddim = asked(4.0, "ddim", 2)
    result = jobs.walk(pipe, tmp_path / "a", "class", ["coat", "bag"], "5", 3, ddim, **options)
    assert Image.open(result.gif).size == (8 * SCALE, 8 * SCALE)
    assert result.summary.startswith("seed 5: coat -> bag -> coat (4 frames")
    bad = [
        ("class", ["coat"], "5", 2, "2..8 classes"),
        ("class", ["coat", "bag"], "5, 6", 2, "give one seed"),
        ("noise", ["coat", "bag"], "0, 1", 2, "one class"),
        ("noise", ["coat"], "0", 2, "2..8 seeds"),
        ("noise", ["coat"], "0, 1", 1, "frames per segment"),
        ("noise", ["zebra"], "0, 1", 2, "unknown class"),
    ]
    for mode, classes, seeds, frames, message in bad:
        with pytest.raises(UserError, match=message):
            jobs.walk(pipe, tmp_path / "b", mode, classes, seeds, frames, ddim, **options)
    with pytest.raises(UserError, match="deterministic sampler"):  # the walk function's own check
        jobs.walk(pipe, tmp_path / "c", "noise", ["coat"], "0, 1", 2, asked(4.0, "ddpm", 2), **options)


def test_class_choices_search_every_synonym():
    named = DiTPipeline(sampling_dit(), class_names=["tee, t-shirt", *NAMES[1:]], device="cpu")
    assert jobs.class_choices(named)[:2] == [("tee, t-shirt (0)", "0"), ("trouser (1)", "1")]
    unnamed = DiTPipeline(sampling_dit(num_classes=3), device="cpu")
    assert jobs.class_choices(unnamed) == [("class 0", "0"), ("class 1", "1"), ("class 2", "2")]
    assert jobs.class_choices(DiTPipeline(sampling_dit(num_classes=1000), device="cpu"))[207] == (
        "golden retriever (207)",
        "207",
    )


def test_the_sampler_menu_is_the_pipelines_list(pipe):
    from ditkit.choices import DIFFUSION_SAMPLERS, FLOW_SAMPLERS
    from ditkit.objectives.diffusion import DEFAULT_STEPS

    assert pipe.samplers == DIFFUSION_SAMPLERS and pipe.default_sampler in pipe.samplers
    assert all(pipe.default_steps(s) == DEFAULT_STEPS[s] for s in pipe.samplers)
    flow = DiTPipeline(sampling_dit(), class_names=NAMES, device="cpu", objective="flow")
    assert flow.samplers == FLOW_SAMPLERS and flow.default_steps("dopri5") is None


def test_unconditional_model(tmp_path):
    pipe = DiTPipeline(sampling_dit(num_classes=0), device="cpu")
    result = jobs.generate(pipe, tmp_path, None, 3, asked(4.0, "ddim", 2, seed=5))
    assert [c for _, c in result.gallery] == [f"seed {s} · ddim, 2 steps, guidance 4" for s in (5, 6, 7)]


def test_cli_serve_checks_before_loading(tmp_path, capsys, monkeypatch):
    assert main(["serve", str(tmp_path / "absent"), "--port", "0"]) == 2
    assert "--port must lie in 1..65535" in capsys.readouterr().err
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else real(name, *a)
    )
    assert main(["serve", str(tmp_path / "absent")]) == 2
    err = capsys.readouterr().err
    assert err == "error: ditkit serve needs gradio, which is not installed: pip install 'ditkit[serve]'\n"


def test_cli_serve_missing_checkpoint_is_one_line(tmp_path, capsys):
    pytest.importorskip("gradio")
    assert main(["serve", str(tmp_path / "absent")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1 and "absent" in err


def test_page_errors_are_one_escaped_line():
    pytest.importorskip("gradio")
    from ditkit.serve.page import error_line, status_html

    assert status_html("unknown class '<b>'", error=True) == (
        '<p class="ditkit-error">error: unknown class &#x27;&lt;b&gt;&#x27;</p>'
    )
    line = error_line(RuntimeError("CUDA error: device-side assert\nline two\nline three"))
    assert "\n" not in line and "RuntimeError: CUDA error" in line and "server's log" in line
    assert error_line(UserError("steps must be at least 1")) == "steps must be at least 1"


def test_page_is_built_with_analytics_off(tmp_path):
    pytest.importorskip("gradio")
    from ditkit.serve.page import Workspace, build_page

    page = build_page(DiTPipeline(sampling_dit(), device="cpu"), "c", Workspace(tmp_path / "w", keep=2), 4)
    assert page.analytics_enabled is False
    workspace = Workspace(tmp_path / "w", keep=2)
    folders = [workspace.new("generate") for _ in range(4)]
    assert [f.exists() for f in folders] == [False, False, True, True]


def test_sigterm_stops_the_server_cleanly(tmp_path):
    """kill / docker stop / systemd send SIGTERM: the server stops as after Ctrl+C, exit status 0."""
    pytest.importorskip("gradio")
    import signal
    import socket
    import subprocess
    import sys
    import time

    from ditkit.checkpoints import save_model

    save_model(sampling_dit(), tmp_path / "ckpt", extra={"first_stage": {"kind": "identity", "channels": 1}})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log_path = tmp_path / "server.log"
    with open(log_path, "w") as log:
        command = [sys.executable, "-m", "ditkit", "serve", str(tmp_path / "ckpt"), "--port", str(port)]
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"}
        )
        deadline = time.monotonic() + 180
        while "Ctrl+C stops" not in log_path.read_text():
            assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()[-2000:]
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            pytest.fail(f"ditkit serve did not stop within 120 s of SIGTERM: {log_path.read_text()[-2000:]}")
    assert code == 0 and "stopping" in log_path.read_text()


def _page_values(page, prefix):
    """The starting values of a tab's sampling fields, as the browser shows them before any edit."""
    fields = {}
    for block in page.blocks.values():
        elem_id = getattr(block, "elem_id", None) or ""
        if elem_id.startswith(f"{prefix}-"):
            fields[elem_id.removeprefix(f"{prefix}-")] = block.value
    return fields


@pytest.mark.parametrize(
    "objective, recorded, expected",
    [
        ("diffusion", None, ("ddpm", 250, 4.0)),
        ("flow", None, ("dopri5", None, 4.0)),
        ("flow", SamplingSettings(sampler="heun", steps=2, guidance_scale=3.0, seed=7), ("heun", 2, 3.0)),
    ],
)
def test_the_first_click_with_the_pages_defaults_works(tmp_path, objective, recorded, expected):
    """Generate with every field as the page starts: the checkpoint's resolved settings (a flow model's
    adaptive dopri5 leaves the steps empty, never 0)."""
    pytest.importorskip("gradio")
    from ditkit.serve.page import Workspace, build_page

    pipe = DiTPipeline(
        sampling_dit(), class_names=NAMES, device="cpu", objective=objective, sampling=recorded
    )
    page = build_page(pipe, "c", Workspace(tmp_path / "w"), 4)
    shown = _page_values(page, "generate")
    assert (shown["sampler"], shown["steps"], shown["guidance"]) == expected
    assert shown["seed"] == (recorded.seed if recorded else 0)
    defaults = pipe.settings()
    asked = jobs.request_settings(
        pipe.objective, defaults, shown["guidance"], shown["sampler"], shown["steps"], shown["seed"]
    )
    result = jobs.generate(pipe, tmp_path / "out", shown["classes"], 1, asked)
    assert result.summary.endswith(
        f"({expected[0]}, {expected[1] or 'adaptive'} steps, guidance {expected[2]:g})"
    )
    walk = _page_values(page, "walk")
    assert walk["sampler"] == ("heun" if recorded else pipe.objective.walk_sampler)  # deterministic: kept
    if objective == "flow":  # the browser sends dopri5's empty steps box as 0: it takes no steps
        assert jobs.request_settings(pipe.objective, defaults, 4.0, "dopri5", 0).steps is None


# ---- one request's work is bounded, and Stop ends it within one model call (issue 28) -------------------


@pytest.mark.parametrize(
    "per_class, steps, message",
    [
        (1, 100_000, "at most 1000 steps"),
        (16, 999, "16 images x 999 steps is more than this server's 4000 image-steps"),
    ],
)
def test_a_request_too_large_is_refused_before_sampling(pipe, tmp_path, per_class, steps, message):
    limits = jobs.Limits(max_steps=1000, max_image_steps=4000)
    with pytest.raises(UserError, match=message) as err:
        jobs.generate(pipe, tmp_path, ["coat"], per_class, asked(4.0, "ddim", steps), limits=limits)
    assert "\n" not in str(err.value) and not (tmp_path / "grid.png").exists()
    assert "at most 4 images at 999 steps" in str(err.value) or steps > 1000


def test_a_walk_too_large_and_a_bad_frame_time_are_refused_before_sampling(pipe, tmp_path):
    small = jobs.Limits(max_image_steps=100)
    settings = asked(4.0, "ddim", 50)
    with pytest.raises(UserError, match="image-steps"):
        jobs.walk(pipe, tmp_path, "noise", ["coat"], "0, 1, 2", 8, settings, loop=False, duration_ms=50,
                  limits=small)  # fmt: skip
    for bad in (0, 2.5, 10**9):
        with pytest.raises(UserError, match="GIF frame time"):
            jobs.walk(pipe, tmp_path, "noise", ["coat"], "0, 1", 2, settings, loop=False, duration_ms=bad)
    assert not any(tmp_path.iterdir())


def _counted(pipe, on_call):
    """`pipe` with its denoiser counting calls (and calling `on_call(n)` before call n)."""
    calls = []
    model_fn = pipe.model_fn

    def counting(model=None):
        denoise = model_fn(model)

        def call(*args, **kwargs):
            calls.append(1)
            on_call(len(calls))
            return denoise(*args, **kwargs)

        return call

    pipe.model_fn = counting
    return calls


def test_stop_ends_the_sampling_loop_within_one_model_call(tmp_path):
    """The Stop button of the request's own page session stops it before the next model call; another
    session's Stop does nothing."""
    pipe = DiTPipeline(sampling_dit(), class_names=NAMES, device="cpu")
    switch = jobs.StopSwitch()

    stopping = []

    def stop_during_call(n):
        if n == 2:
            assert switch.stop("someone else") is None
            stopping.append(switch.stop("me"))
            assert not stopping[0].ended.is_set()

    calls = _counted(pipe, stop_during_call)
    switch.install(pipe)
    with switch.running("me"), pytest.raises(jobs.Stopped, match="stopped"):
        jobs.generate(pipe, tmp_path / "a", ["coat"], 1, asked(1.0, "ddim", 20))
    assert len(calls) == 2  # the call under way finished; no other began
    # what the Stop click waits for before it answers (the page's status line: tests/test_serve_browser.py)
    assert stopping[0].ended.is_set() and stopping[0].stopped
    with switch.running("me"):  # the next request runs in full
        jobs.generate(pipe, tmp_path / "b", ["coat"], 1, asked(1.0, "ddim", 3))
    assert len(calls) == 5


def test_a_solver_that_picks_its_own_steps_is_stopped_past_the_budget(tmp_path):
    pipe = DiTPipeline(sampling_dit(), class_names=NAMES, device="cpu", objective="flow")
    switch = jobs.StopSwitch(jobs.Limits(max_image_steps=2))
    calls = _counted(pipe, lambda n: None)
    switch.install(pipe)
    with switch.running("me"), pytest.raises(jobs.Stopped, match="model evaluations"):
        jobs.generate(pipe, tmp_path, ["coat"], 1, asked(1.0, "dopri5", None))
    assert len(calls) <= jobs.ROWS_PER_IMAGE_STEP * 2


def test_serve_flags_bound_the_work(monkeypatch):
    from ditkit.cli.main import build_parser

    args = build_parser().parse_args(["serve", "ckpt", "--max-steps", "50", "--max-image-steps", "800"])
    assert (args.max_steps, args.max_image_steps) == (50, 800)


def _start_server(tmp_path, *extra):
    """`ditkit serve` on a tiny checkpoint in a subprocess whose temp folder is tmp_path/tmp."""
    import socket
    import subprocess
    import sys
    import time

    from ditkit.checkpoints import save_model

    save_model(sampling_dit(), tmp_path / "ckpt", extra={"first_stage": {"kind": "identity", "channels": 1}})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "tmp").mkdir()
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115  # closed by the caller's process end
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path / "tmp")}
    command = [sys.executable, "-m", "ditkit", "serve", str(tmp_path / "ckpt"), "--port", str(port), *extra]
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=ctrl_c_reaches_it
    )
    deadline = time.monotonic() + 180
    while "Ctrl+C stops" not in (tmp_path / "server.log").read_text():
        assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "server.log").read_text()
        time.sleep(0.2)
    return process, f"http://127.0.0.1:{port}/"


@pytest.mark.slow
def test_stopping_the_server_during_a_job_exits_cleanly_and_leaves_no_files(tmp_path):
    """Ctrl+C while a request samples: the request stops at its next model call, the server exits 0
    (no SIGABRT), and nothing stays in the temp folder (Gradio's copies included)."""
    pytest.importorskip("gradio")
    import signal
    import time

    from gradio_client import Client

    process, url = _start_server(tmp_path, "--max-steps", "100000", "--max-image-steps", "10000000")
    try:
        client = Client(url, verbose=False)
        job = client.submit(["1", "2", "3", "4"], 16, 4.0, "ddpm", 1000, 0, False, api_name="/on_generate")
        deadline = time.monotonic() + 120
        while job.status().code.name not in ("PROCESSING", "PROGRESS"):  # sampling began (~a minute)
            assert time.monotonic() < deadline and not job.done(), (job.status(), job.done() and job.result())
            time.sleep(0.2)
        time.sleep(2)
        client.close()
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    output = (tmp_path / "server.log").read_text()
    assert code == 0, output[-2000:]
    assert "stopping" in output and "terminate called" not in output
    assert list((tmp_path / "tmp").iterdir()) == []


@pytest.mark.slow
def test_the_api_refuses_uploads_and_wrong_types_in_one_line_and_hides_the_path(tmp_path):
    pytest.importorskip("gradio")
    import urllib.error
    import urllib.request

    process, url = _start_server(tmp_path)
    try:
        page = urllib.request.urlopen(url, timeout=30).read().decode()
        assert str(tmp_path) not in page  # the page names the checkpoint, not where it lies
        body = b'--x\r\nContent-Disposition: form-data; name="files"; filename="a.bin"\r\n\r\n'
        body += b"0" * 100_000 + b"\r\n--x--\r\n"
        request = urllib.request.Request(
            f"{url}gradio_api/upload", data=body, headers={"Content-Type": "multipart/form-data; boundary=x"}
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code in (400, 413)
        from gradio_client import Client

        client = Client(url, verbose=False)
        with pytest.raises(Exception) as wrong:
            client.predict({"not": "a list"}, "four", 4.0, "ddpm", 3, 0, False, api_name="/on_generate")
        assert "None" not in str(wrong.value) and str(wrong.value).strip()
        client.close()
    finally:
        process.kill()
        process.wait()


def test_page_messages_name_fields_not_flags_and_do_not_echo_long_input(pipe, tmp_path):
    pytest.importorskip("gradio")
    from ditkit.serve.page import error_line, served_name

    assert error_line(UserError("dopri5 chooses its own steps; drop --steps, or pick euler")) == (
        "dopri5 chooses its own steps; clear the steps field, or pick euler"
    )
    with pytest.raises(UserError, match="at most 200 characters, not 1,000,000") as err:
        jobs.generate(pipe, tmp_path, ["x" * 1_000_000], 1, asked(4.0, "ddim", 3))
    assert len(error_line(err.value)) < 300
    assert served_name("/home/me/secret/runs/demo/checkpoint") == "demo/checkpoint"
    assert served_name("/srv/models/DiT-XL-2-256x256.pt") == "DiT-XL-2-256x256.pt"


# ---- presentation (issue 28, item 4) -----------------------------------------------------------------------


def _handler(page, name):
    return next(f.fn for f in page.fns.values() if getattr(f.fn, "__name__", "") == name)


def test_the_gallery_keeps_a_history_and_reuses_a_seed(tmp_path):
    pytest.importorskip("gradio")
    from types import SimpleNamespace

    from ditkit.serve.page import Workspace, build_page

    pipe = DiTPipeline(sampling_dit(), class_names=NAMES, device="cpu")
    page = build_page(pipe, "c", Workspace(tmp_path / "w"), 4)
    generate, pick = _handler(page, "on_generate"), _handler(page, "on_pick")
    me = SimpleNamespace(session_hash="me")
    first = generate(["4"], 1, 4.0, "ddim", 2, 5, False, None, [], me)
    shown = [(image, caption) for image, caption in first[0]]  # what the browser sends back
    second = generate(["7"], 2, 4.0, "ddim", 2, 9, False, shown, first[1], me)
    pictures, kept = second[0], second[1]
    assert [c.split(" · ")[:2] for _, c in pictures] == [
        ["sneaker (7)", "seed 9"], ["sneaker (7)", "seed 10"], ["coat (4)", "seed 5"]
    ]  # fmt: skip
    assert kept == [{"class": "7", "seed": 9}, {"class": "7", "seed": 10}, {"class": "4", "seed": 5}]
    classes, per_class, seed, random_seed, status = pick(kept, SimpleNamespace(index=2))
    assert (classes, per_class, seed, random_seed) == (["4"], 1, 5, False) and "redraws" in status


def test_the_walk_strip_is_shown_large_in_rows(pipe, tmp_path):
    from PIL import Image as PILImage

    out = jobs.walk(pipe, tmp_path, "noise", ["coat"], "0, 1, 2", 8, asked(4.0, "ddim", 2), loop=False,
                    duration_ms=50)  # fmt: skip
    with PILImage.open(out.strip) as strip:
        width, height = strip.size
    assert height >= jobs.STRIP_FRAME_SIDE and width <= jobs.STRIP_MAX_WIDTH  # 15 frames of 8 px
