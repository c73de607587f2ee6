"""LightningDiT's user path: their checkpoint and VA-VAE files -> `ditkit sample` -> images, equal to their
inference; and the timestep shift written into every sampling record and read back.

The end-to-end test writes a tiny DiT with LightningDiT's block options in their two file forms (the
plain state dict with the rotary angles they save; train.py's dict with "model" and "ema") and a tiny
VA-VAE in their layout (`test_vavae.save_tiny_vavae`), samples them through the CLI with the flags of
docs/interoperability.md, and compares with their inference.py written out below in a few lines.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import SAMPLING_WEIGHT_STD, random_dit
from PIL import Image
from test_vavae import save_tiny_vavae

from ditkit.checkpoints.loader import load_checkpoint
from ditkit.cli.main import main
from ditkit.diffusion.noise import SeededNoise
from ditkit.errors import UserError
from ditkit.generation.loading import recorded_sampling
from ditkit.generation.pipeline import DiTPipeline
from ditkit.generation.sharded import MANIFEST_FILE, ShardedSettings, check_or_write_manifest
from ditkit.model.dit import DiTConfig
from ditkit.objectives import as_objective
from ditkit.samplers.settings import SamplingSettings
from ditkit.serve.jobs import request_settings

# Their configs/reproductions/lightningdit_xl_vavae_f16d32_800ep_cfg.yaml: sample.timestep_shift,
# cfg_scale and cfg_interval_start; their forward_with_cfg guides channels [:3].
SHIFT, CFG_SCALE, CFG_START, GUIDED = 0.3, 6.7, 0.125, 3
STEPS = 8  # their num_sampling_steps 250 is 249 steps; 8 keep the test fast
CLASSES = (3, 7)
# A tiny LightningDiT-XL/1 (patch 1) on the tiny VA-VAE's 8x8x8 latents of 16x16 images, 2 heads of 32.
TINY = dict(
    input_size=8,
    patch_size=1,
    in_channels=8,
    hidden_size=64,
    depth=2,
    num_heads=2,
    num_classes=10,
    learn_sigma=False,
)
# (name, block options, file form, the --set flags the file needs)
CASES = [
    (  # their XL/1 release: RMSNorm, SwiGLU, RoPE (its saved angles tell the heads), adaLN-Zero; plain
        "released",
        dict(norm="rmsnorm", mlp="swiglu", rope=True),
        "plain",
        [],
    ),
    (  # wo_shift and QK-norm without RoPE, as train.py saves it (EMA and raw weights): no preset has
        # depth 2 and width 64, and 4 modulation vectors are also DiT's `adaln`, so both are told
        "wo_shift",
        dict(norm="rmsnorm", mlp="swiglu", qk_norm=True, adaln_shift=False),
        "training",
        ["--set", "num_heads=2", "--set", "adaln_shift=false"],
    ),
]


def their_inference(model, z, labels, num_classes, std, mean, autoencoder):
    """hustvl/LightningDiT inference.py, ODE mode with cfg: latents and uint8 images of noise z (B, C, h, w).

    transport/integrators.py `ode`: t = linspace(0, 1, num_steps) bent by compute_tm, s t / (1 + (s - 1) t),
    and torchdiffeq's fixed-grid Euler (x += (t1 - t0) v(x, t0)); models/lightningdit.py forward_with_cfg
    on the doubled batch [z, z] with labels [y, null = num_classes]: guidance on channels [:3] only when
    t >= cfg_interval_start, the rest conditional; then samples * std / latent_multiplier (1) + mean,
    decoded, and tokenizer/vavae.py decode_to_images: clamp(127.5 x + 128, 0, 255) as uint8.
    """
    t = torch.linspace(0, 1, STEPS + 1)
    t = torch.tensor([SHIFT * v / (1 + (SHIFT - 1) * v) for v in t])
    y = torch.cat([labels, torch.full_like(labels, num_classes)])

    def forward_with_cfg(x, t_now):
        half = x[: len(x) // 2]
        out = model(torch.cat([half, half]), torch.ones(len(x)) * t_now, y)
        eps, rest = out[:, :GUIDED], out[:, GUIDED:]
        cond, uncond = torch.split(eps, len(eps) // 2)
        half_eps = uncond + CFG_SCALE * (cond - uncond) if t_now >= CFG_START else cond
        return torch.cat([torch.cat([half_eps, half_eps]), rest], dim=1)

    x = torch.cat([z, z])
    with torch.no_grad():
        for t0, t1 in zip(t[:-1], t[1:], strict=True):
            x = x + (t1 - t0) * forward_with_cfg(x, t0)
        samples = x.chunk(2)[0]
        images = autoencoder.decode(samples * std / 1.0 + mean)
    pixels = torch.clamp(127.5 * images + 128.0, 0, 255).permute(0, 2, 3, 1).to(torch.uint8).numpy()
    return samples, pixels


def _save_their_checkpoint(path, options, form):
    """Their file of a random tiny LightningDiT; returns the DiT whose weights their inference loads."""
    model = random_dit(DiTConfig(**TINY, **options), seed=1, std=SAMPLING_WEIGHT_STD)
    state = dict(model.state_dict())
    if model.config.rope:  # their VisionRotaryEmbeddingFast buffers, saved in their state dict
        state["feat_rope.freqs_cos"], state["feat_rope.freqs_sin"] = model.feat_rope()
    if form == "plain":
        torch.save(state, path)
        return model
    raw = {k: v + 0.01 if k != "pos_embed" and v.is_floating_point() else v for k, v in state.items()}
    config = {"model": {"model_type": "LightningDiT-XL/1", "in_chans": TINY["in_channels"]}}
    torch.save({"model": raw, "ema": state, "opt": {}, "config": config}, path)
    return model  # inference.py: `if "ema" in checkpoint: checkpoint = checkpoint["ema"]`


@pytest.mark.parametrize(("name", "options", "form", "set_flags"), CASES, ids=[c[0] for c in CASES])
def test_sample_cli_equals_their_inference(tmp_path, monkeypatch, capsys, name, options, form, set_flags):
    autoencoder, mean, std = save_tiny_vavae(tmp_path / "vavae")
    ckpt = tmp_path / f"lightningdit-{name}.pt"
    model = _save_their_checkpoint(ckpt, options, form)
    out = tmp_path / "out"
    argv = ["sample", str(ckpt), "--objective", "flow", "--sampler", "euler", "--steps", str(STEPS)]
    argv += ["--timestep-shift", str(SHIFT), "--cfg-scale", str(CFG_SCALE), "--guided-channels", "first3"]
    argv += ["--guidance-interval", str(CFG_START), "1", "--first-stage", str(tmp_path / "vavae")]
    argv += ["--class", str(CLASSES[0]), "--class", str(CLASSES[1]), "--num-per-class", "1"]
    argv += ["--out", str(out), "--device", "cpu", "--quiet"]

    if set_flags:  # what neither the file nor its shapes say is asked for in one line naming the flag
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--set adaln_shift=false" in err

    seen = []
    decode = DiTPipeline.decode
    monkeypatch.setattr(DiTPipeline, "decode", lambda pipe, z, b=None: seen.append(z) or decode(pipe, z, b))
    assert main([*argv, *set_flags]) == 0

    files = sorted((out / "images").glob("*.png"))
    pngs = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    assert pngs.shape == (2, 16, 16, 3)  # the VA-VAE's output size
    # image i starts from ditkit's noise of seed i (theirs draws from the global RNG)
    z = SeededNoise([0, 1], "cpu").randn((TINY["in_channels"], 8, 8))
    latents, pixels = their_inference(
        model, z, torch.tensor(CLASSES), TINY["num_classes"], std, mean, autoencoder
    )
    torch.testing.assert_close(seen[0], latents, atol=1e-5, rtol=1e-5)
    assert np.abs(pngs.astype(int) - pixels.astype(int)).max() <= 1  # rounding at the half levels
    record = json.loads((out / "samples.json").read_text())["settings"]
    assert record["timestep_shift"] == SHIFT and record["guidance_interval"] == [CFG_START, 1.0]
    assert (record["sampler"], record["num_steps"], record["guided_channels"]) == ("euler", STEPS, "first3")


def test_checkpoint_records_keep_the_shift_and_older_ones_read_as_unshifted():
    flow = as_objective("flow")
    recorded = SamplingSettings(sampler="euler", steps=20, timestep_shift=SHIFT)
    assert recorded_sampling({"sampling": recorded.to_dict()}, flow, "ckpt") == recorded
    older = {k: v for k, v in recorded.to_dict().items() if k != "timestep_shift"}
    assert recorded_sampling({"sampling": older}, flow, "ckpt").timestep_shift == 1.0

    pipe = DiTPipeline(random_dit(DiTConfig(**TINY)), objective=flow, device="cpu", sampling=recorded)
    assert pipe.settings().timestep_shift == SHIFT and pipe.settings(steps=5).timestep_shift == SHIFT
    assert pipe.settings(sampler="heun").timestep_shift == SHIFT
    # the shift goes with the recorded euler, as its steps do: dopri5 named alone samples unshifted
    assert pipe.settings(sampler="dopri5") == pipe.settings(SamplingSettings(sampler="dopri5"))
    assert pipe.settings(sampler="dopri5", timestep_shift=2.0).timestep_shift == 2.0  # then refused
    # so does the page of `ditkit serve`: its sampler menu keeps the shift for heun, not for dopri5
    assert request_settings(flow, pipe.settings(), 4.0, "heun", 5).timestep_shift == SHIFT
    assert request_settings(flow, pipe.settings(), 4.0, "dopri5", None).timestep_shift == 1.0


def test_fid_manifests_record_the_shift_and_older_ones_resume(tmp_path):
    settings = ShardedSettings(
        num_samples=4, shard_size=2, sampling=SamplingSettings(sampler="euler", steps=3, timestep_shift=SHIFT)
    )
    record = json.loads(json.dumps(settings.to_dict()))
    assert record["timestep_shift"] == SHIFT and ShardedSettings.from_dict(record) == settings

    def manifest(s: ShardedSettings) -> dict:
        return {"format": "ditkit-samples", "settings": s.to_dict(), "model": "m", "precision": "fp32"}

    check_or_write_manifest(tmp_path, manifest(settings))
    unshifted = ShardedSettings.from_dict({**record, "timestep_shift": 1.0})
    with pytest.raises(UserError, match=r"settings\.timestep_shift: 0\.3 then, 1\.0 now"):
        check_or_write_manifest(tmp_path, manifest(unshifted))

    # a manifest written before the shift was recorded was sampled unshifted, and resumes as such
    older = manifest(unshifted)
    del older["settings"]["timestep_shift"]
    assert ShardedSettings.from_dict(older["settings"]) == unshifted
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(older))
    check_or_write_manifest(tmp_path, manifest(unshifted))
    with pytest.raises(UserError, match="timestep_shift: 1.0 then, 0.3 now"):
        check_or_write_manifest(tmp_path, manifest(settings))


def test_convert_takes_the_same_set_flags(tmp_path):
    _, options, form, set_flags = CASES[1]
    model = _save_their_checkpoint(tmp_path / "theirs.pt", options, form)
    assert main(["convert", str(tmp_path / "theirs.pt"), str(tmp_path / "ours"), *set_flags]) == 0
    loaded = load_checkpoint(tmp_path / "ours")
    assert loaded.config == model.config and loaded.weights == "ema"
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.model.state_dict().items())


def test_a_latent_model_read_as_pixels_is_one_line_before_sampling(tmp_path, capsys):
    ckpt = tmp_path / "theirs.pt"
    _save_their_checkpoint(ckpt, CASES[0][1], "plain")
    argv = ["sample", str(ckpt), "--objective", "flow", "--first-stage", "identity", "--class", "0"]
    assert main([*argv, "--out", str(tmp_path / "out"), "--device", "cpu", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{TINY['in_channels']}-channel images" in err and "--first-stage" in err
    assert not (tmp_path / "out").exists()
