"""The pipeline's fast path: precision choices, the cached fast denoiser, compile, stand-ins, CLI flags."""

import json

import pytest
import torch
from helpers import sampling_dit

import ditkit.generation.pipeline as pipeline_module
from ditkit.checkpoints import save_model
from ditkit.cli.main import build_parser, main
from ditkit.errors import UserError
from ditkit.generation.pipeline import DiTPipeline
from ditkit.generation.sharded import MANIFEST_FILE, ShardedSettings, generate_sharded
from ditkit.model.compilation import apply_compile, is_compiled
from ditkit.model.cuda_graphs import CudaGraphDenoiser
from ditkit.objectives.sampling import sample
from ditkit.samplers.settings import SamplingSettings

DDIM3 = dict(num_steps=3, sampler="ddim", progress=False)
# bf16 keeps 8 mantissa bits (relative rounding 2^-9 per op); after 3 DDIM steps of a 2-block DiT
# the latents stay within 2% of float32 (measured: 0.4%).
BF16_SAMPLE_RTOL = 0.02


def latents(pipe, labels=(1, 2, 3), seeds=(0, 1, 2), **kw):
    return pipe.sample_latents(list(labels), seeds=list(seeds), **{**DDIM3, **kw})


def test_auto_precision_on_cpu_is_exact_fp32_and_the_old_path():
    model = sampling_dit()
    auto = DiTPipeline(model, device="cpu")
    assert auto.precision == "fp32" and auto.autocast is None
    out = latents(auto)
    assert out.abs().mean() > 1e-2  # not a trivial model
    assert torch.equal(out, latents(DiTPipeline(model, device="cpu", precision="fp32")))
    assert torch.equal(out, latents(DiTPipeline(model, device="cpu", dtype=None)))
    # the path before the fast denoiser: the DiT called directly, no precision context
    old = sample(
        lambda x, t, y: model(x, t, y).float(),
        noise=auto.initial_noise([0, 1, 2]),
        labels=[1, 2, 3],
        sampler="ddim",
        steps=3,
        cfg_scale=4.0,
        null_label=model.null_class,
        seeds=[0, 1, 2],
        progress=False,
        device="cpu",
    )
    assert torch.equal(out, old)


def test_bf16_takes_effect_on_cpu_within_tolerance():
    model = sampling_dit()
    fp32 = latents(DiTPipeline(model, device="cpu"))
    pipe = DiTPipeline(model, device="cpu", precision="bf16")
    assert pipe.precision == "bf16" and pipe.autocast is torch.bfloat16
    bf16 = latents(pipe)
    assert bf16.dtype == torch.float32 and not torch.equal(bf16, fp32)
    assert (bf16 - fp32).abs().max() < BF16_SAMPLE_RTOL * fp32.abs().max()
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay float32
    legacy = DiTPipeline(model, device="cpu", dtype="bf16")  # the older argument means the same
    assert legacy.precision == "bf16" and torch.equal(latents(legacy), bf16)


def test_precision_choices_and_errors():
    model = sampling_dit()
    fp16 = DiTPipeline(model, device="cpu", dtype=torch.float16)  # no fast path: eager autocast
    assert fp16.precision == "fp16" and fp16.autocast is torch.float16
    assert fp16.model_fn() is not fp16.model_fn()
    assert DiTPipeline(model, device="cpu", dtype="bf16", precision="bf16").precision == "bf16"
    with pytest.raises(UserError, match="tf32 needs a CUDA device"):
        DiTPipeline(model, device="cpu", precision="tf32")
    with pytest.raises(UserError, match="unknown precision 'fp8'"):
        DiTPipeline(model, device="cpu", precision="fp8")
    with pytest.raises(UserError, match="unknown precision 'fp16'"):
        DiTPipeline(model, device="cpu", precision="fp16")  # only through dtype
    with pytest.raises(UserError, match="give only precision"):
        DiTPipeline(model, device="cpu", dtype="bf16", precision="fp32")
    with pytest.raises(UserError, match="dtype"):
        DiTPipeline(model, device="cpu", dtype="int8")
    with pytest.raises(UserError, match="compile choice"):
        DiTPipeline(model, device="cpu", compile="everything")


def test_the_fast_denoiser_is_built_once_and_reused(monkeypatch):
    built = []

    def counting(model, precision, cuda_graph):
        built.append((model, precision, cuda_graph))
        return CudaGraphDenoiser(model, precision, cuda_graph)

    monkeypatch.setattr(pipeline_module, "fast_denoiser", counting)
    pipe = DiTPipeline(sampling_dit(), device="cpu", cuda_graph=False)
    first = latents(pipe, batch_size=1)
    again = latents(pipe, batch_size=2)
    assert len(built) == 1 and built[0] == (pipe.model, "fp32", False)
    assert pipe.model_fn() is pipe.model_fn(pipe.model)  # passing its own DiT is the same path
    torch.testing.assert_close(first, again, rtol=1e-5, atol=1e-6)  # batch size: rounding only
    pipe.to("cpu")  # a move drops it (CUDA graphs belong to a device)
    latents(pipe)
    assert len(built) == 2


class ReplayGraph:
    """Stands in for a captured CUDA graph on the CPU: replay recomputes from the static inputs."""

    def __init__(self, denoiser, static, out):
        self.denoiser, self.static, self.out = denoiser, static, out

    def replay(self):
        self.out.copy_(self.denoiser._eager(*self.static))


def test_graphs_captured_per_shape_are_reused_across_batches_and_calls(monkeypatch):
    # CudaGraphDenoiser captures on CUDA only; here `_capture` is replaced so the caching and the
    # static-buffer copies run on the CPU, and outputs must equal the eager path exactly.
    captured = []

    def capture(self, x, t, y):
        captured.append(tuple(x.shape))
        static = [x.clone(), t.clone(), None if y is None else y.clone()]
        out = self._eager(*static)
        return ReplayGraph(self, static, out), static, out

    monkeypatch.setattr(CudaGraphDenoiser, "_capture", capture)
    model = sampling_dit()
    eager = latents(DiTPipeline(model, device="cpu"), labels=[1, 2, 3, 4, 5], seeds=range(5), batch_size=2)
    pipe = DiTPipeline(model, device="cpu")
    pipe.model_fn().use_graph = True
    graphed = latents(pipe, labels=[1, 2, 3, 4, 5], seeds=range(5), batch_size=2)
    assert torch.equal(graphed, eager)
    assert captured == [(4, 1, 8, 8), (2, 1, 8, 8)]  # guidance doubles the batch: 2 + 2, then 1
    latents(pipe, labels=[6, 7], seeds=[8, 9])
    assert len(captured) == 2  # a later call reuses the (4, 1, 8, 8) graph


def test_compile_is_applied_once_in_place(monkeypatch):
    calls = []

    def traced(model, how):  # aot_eager traces like inductor but generates no code (seconds on a CPU)
        calls.append((model, how))
        return apply_compile(model, how, backend="aot_eager")

    eager = latents(DiTPipeline(sampling_dit(), device="cpu"))
    monkeypatch.setattr(pipeline_module, "apply_compile", traced)
    model = sampling_dit()
    pipe = DiTPipeline(model, device="cpu", compile="blocks")
    assert len(calls) == 1 and calls[0][0] is model and calls[0][1] == "blocks" and pipe.model is model
    assert is_compiled(model) and all("forward" in vars(block) for block in model.blocks)
    torch.testing.assert_close(latents(pipe), eager, rtol=1e-5, atol=1e-6)
    latents(pipe)
    assert len(calls) == 1


def test_stand_in_models_run_eagerly_under_the_precision():
    model = sampling_dit()
    seen = []

    def stand_in(x, t, y):
        seen.append(torch.is_autocast_enabled("cpu"))
        return model(x, t, y)

    for precision in ("fp32", "bf16"):
        pipe = DiTPipeline(model, device="cpu", precision=precision)
        assert pipe.model_fn(stand_in) is not pipe.model_fn()
        own = latents(pipe)
        assert torch.equal(latents(pipe, model=stand_in, null_label=model.null_class), own)
    assert seen[0] is False and seen[-1] is True


def test_resume_reads_older_manifests_and_refuses_another_precision(tmp_path):
    model = sampling_dit()
    settings = ShardedSettings(
        num_samples=2, shard_size=2, sampling=SamplingSettings(sampler="ddim", steps=2)
    )
    generate_sharded(DiTPipeline(model, device="cpu"), tmp_path, settings, progress=False)
    manifest = json.loads((tmp_path / MANIFEST_FILE).read_text())
    assert manifest["precision"] == "fp32"
    del manifest["precision"]
    manifest["autocast"] = None  # how runs before the precision option recorded float32
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(manifest))
    again = generate_sharded(DiTPipeline(model, device="cpu"), tmp_path, settings, progress=False)
    assert again.skipped == [0]
    with pytest.raises(UserError, match="precision: 'fp32' then, 'bf16' now"):
        generate_sharded(DiTPipeline(model, device="cpu", precision="bf16"), tmp_path, settings)


@pytest.mark.parametrize("command", ["sample", "walk"])
def test_cli_speed_flags(command):
    parse = build_parser().parse_args
    base = [command, "ckpt"] + (["--mode", "noise"] if command == "walk" else [])
    args = parse(base)
    assert (args.precision, args.compile, args.cuda_graph) == ("auto", "none", True)
    args = parse([*base, "--precision", "tf32", "--compile", "blocks", "--no-cuda-graph"])
    assert (args.precision, args.compile, args.cuda_graph) == ("tf32", "blocks", False)
    assert parse([*base, "--bf16"]).precision == "bf16"  # the shorthand


def test_cli_sample_records_precision_and_rejects_tf32_on_cpu(tmp_path, capsys):
    ckpt = tmp_path / "c.safetensors"
    save_model(sampling_dit(), ckpt, extra={"first_stage": {"kind": "identity", "channels": 1}})
    args = ["sample", str(ckpt), "--class", "3", "--num-per-class", "1", "--sampler", "ddim", "--steps", "2"]
    args += ["--device", "cpu", "--quiet", "--out", str(tmp_path / "out")]
    assert main([*args, "--bf16"]) == 0
    record = json.loads((tmp_path / "out" / "samples.json").read_text())
    assert record["settings"]["precision"] == "bf16" and record["settings"]["compile"] == "none"
    capsys.readouterr()
    assert main([*args, "--precision", "tf32"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "tf32 needs a CUDA device" in err
