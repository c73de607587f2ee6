"""The training loop end to end on tiny runs: outputs, the update it computes, accumulation, data kinds, NaN."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from test_train_support import tiny_config

from ditkit.checkpoints import load_model
from ditkit.data.fashion_mnist_dataset import FashionMNISTDataset
from ditkit.diffusion.gaussian import GaussianDiffusion
from ditkit.diffusion.schedule import make_schedule
from ditkit.errors import UserError
from ditkit.model.dit import DiT
from ditkit.model.presets import get_config
from ditkit.run_folder import TRAIN_STATE_FILE, list_checkpoints
from ditkit.training import train
from ditkit.training.data_order import DataOrder
from ditkit.training.randomness import draw_step

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_tiny_run_writes_every_output(tmp_path):
    cfg = tiny_config(tmp_path, ckpt_every=2, sample_every=4, sample_steps=2)
    result = train(cfg, progress=False)
    out = tmp_path / "run"
    assert result.step == 4 and result.stopped == "finished"
    assert [s for s, _ in list_checkpoints(out)] == [2, 4]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert all(np.isfinite(r["loss"]) and r["loss"] == pytest.approx(r["mse"] + r["vb"]) for r in records)
    assert Image.open(out / "loss_curve.png").format == "PNG"
    grid = Image.open(out / "samples" / "step_0000004.png")
    assert grid.size[1] > grid.size[0]  # 10 rows (classes) of 8 samples
    assert json.loads((out / "train_config.json").read_text())["steps"] == 4
    assert json.loads((out / "train_summary.json").read_text())["step"] == 4
    # The checkpoint is a ditkit model folder: the generic loader reads it, with sampling metadata.
    ckpt = out / "checkpoints" / "0000004"
    ema_model = load_model(ckpt, which="ema")
    ema_file = load_file(str(ckpt / "ema.safetensors"))
    assert all(torch.equal(v, ema_file[k]) for k, v in ema_model.state_dict().items())
    extra = json.loads((ckpt / "config.json").read_text())["extra"]
    assert extra["first_stage"] == {"kind": "identity", "channels": 1}
    assert extra["class_names"][0] == "T-shirt/top" and extra["diffusion"]["learn_sigma"] is True
    state = torch.load(ckpt / TRAIN_STATE_FILE, weights_only=True)
    assert state["step"] == 4 and state["data"]["epoch"] == 0 and state["ema"]["num_updates"] == 4


def test_first_step_is_dits_update(tmp_path):
    """One step of the loop equals a hand-written step: same batch, draws, hybrid loss and AdamW update."""
    cfg = tiny_config(tmp_path, steps=1)
    train(cfg, progress=False)
    ckpt = tmp_path / "run" / "checkpoints" / "0000001"

    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        model = DiT(get_config("DiT-T/2", input_size=8, in_channels=1, num_classes=10))
    init = {k: v.clone() for k, v in model.state_dict().items()}
    data = FashionMNISTDataset(cfg.data_dir, image_size=8, seed=cfg.seed)
    items = DataOrder(len(data), 8, cfg.seed).global_batch_items(0).tolist()
    x = torch.stack([data[i][0] for i in items])
    y = torch.tensor([data[i][1] for i in items])
    draws = draw_step(cfg.seed, 0, range(8), (1, 8, 8), 1000, 0.1)
    diffusion = GaussianDiffusion(make_schedule("linear", 1000))

    def denoiser(x_t, t, labels):
        return model(x_t, t, labels, force_drop_ids=draws.drop)

    loss = diffusion.training_losses(denoiser, x, draws.t, draws.noise, y)["loss"].mean()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    loss.backward()
    optimizer.step()

    saved = load_file(str(ckpt / "model.safetensors"))
    saved_ema = load_file(str(ckpt / "ema.safetensors"))
    for k, v in model.state_dict().items():
        torch.testing.assert_close(saved[k], v, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(saved_ema[k], 0.9 * init[k] + 0.1 * v, rtol=1e-5, atol=1e-6)
    metrics = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert metrics["loss"] == pytest.approx(loss.item(), rel=1e-5)


def test_gradient_accumulation_matches_the_full_batch(tmp_path):
    full = train(tiny_config(tmp_path / "a", steps=2), progress=False)
    accumulated = train(tiny_config(tmp_path / "b", steps=2, micro_batch=2), progress=False)
    a = load_file(str(full.checkpoint / "model.safetensors"))
    b = load_file(str(accumulated.checkpoint / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    # An absurd learning rate blows the weights up after the first (checkpointed) step.
    cfg = tiny_config(tmp_path, lr=1e30, steps=6, ckpt_every=1, learn_sigma=False, grad_clip=None)
    with pytest.raises(
        UserError, match=r"loss became NaN or infinite at step 2;.*last good checkpoint is .*0000001"
    ) as err:
        train(cfg, progress=False)
    assert "--lr" in str(err.value) and "\n" not in str(err.value)
    steps = [s for s, _ in list_checkpoints(tmp_path / "run")]
    assert steps and max(steps) < 6
    good = load_file(str(list_checkpoints(tmp_path / "run")[-1][1] / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in good.values())


def test_trains_on_an_image_folder_skipping_a_corrupt_file(tmp_path):
    rng = np.random.default_rng(0)
    for label in ("cats", "dogs"):
        (tmp_path / "folder" / label).mkdir(parents=True)
        for i in range(5):
            image = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
            Image.fromarray(image).save(tmp_path / "folder" / label / f"{i}.png")
    (tmp_path / "folder" / "dogs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    cfg = tiny_config(
        tmp_path, data=str(tmp_path / "folder"), data_dir=None, image_size=8, first_stage="identity", steps=3
    )
    result = train(cfg, progress=False)
    assert result.step == 3
    model = load_model(result.checkpoint)
    assert model.in_channels == 3 and model.num_classes == 2


def test_trains_on_a_latent_cache(tmp_path):
    from ditkit.data.cache_writer import prepare_latent_cache
    from ditkit.first_stage.base import IdentityFirstStage

    cfg = tiny_config(tmp_path, steps=2)
    source = FashionMNISTDataset(cfg.data_dir, image_size=8, flip="none")
    prepare_latent_cache(source, IdentityFirstStage(1), tmp_path / "cache", progress=False)
    cache_cfg = tiny_config(tmp_path, data=str(tmp_path / "cache"), data_dir=None, image_size=None, steps=2)
    result = train(cache_cfg, progress=False)
    assert result.step == 2
    with pytest.raises(UserError, match="drop --first-stage"):
        train(
            tiny_config(
                tmp_path, data=str(tmp_path / "cache"), first_stage="identity", out=str(tmp_path / "x")
            )
        )


def test_refuses_to_overwrite_a_run_without_resume(tmp_path):
    train(tiny_config(tmp_path, steps=1), progress=False)
    with pytest.raises(UserError, match="--resume"):
        train(tiny_config(tmp_path, steps=2), progress=False)


@pytest.mark.slow
def test_encodes_images_on_the_fly_with_a_vae(tmp_path):
    from diffusers import AutoencoderKL

    tiny_vae = dict(
        block_out_channels=(32, 64),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        AutoencoderKL(**tiny_vae).save_pretrained(tmp_path / "vae")
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (tmp_path / "folder" / label).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(
                tmp_path / "folder" / label / f"{i}.png"
            )
    messages = []
    cfg = tiny_config(
        tmp_path, data=str(tmp_path / "folder"), data_dir=None, first_stage=str(tmp_path / "vae"), steps=2
    )
    result = train(cfg, progress=False, echo=messages.append)
    assert any("ditkit prepare" in m for m in messages)  # the slow path says how to avoid it
    extra = json.loads((result.checkpoint / "config.json").read_text())
    assert extra["config"]["in_channels"] == 4 and extra["config"]["input_size"] == 4  # 8 px / 2
    assert extra["extra"]["first_stage"]["kind"] == "sd-vae"


def test_bf16_autocast_keeps_float32_master_weights(tmp_path):
    fp32 = train(tiny_config(tmp_path / "a", steps=2), progress=False)
    bf16 = train(tiny_config(tmp_path / "b", steps=2, precision="bf16"), progress=False)
    assert bf16.loss == pytest.approx(fp32.loss, rel=1e-2) and bf16.loss != fp32.loss
    weights = load_file(str(bf16.checkpoint / "model.safetensors"))
    assert all(v.dtype == torch.float32 for v in weights.values())


@pytest.mark.parametrize("policy", ["full", "selective"])
def test_activation_checkpointing_trains_the_same_weights(tmp_path, policy):
    plain = train(tiny_config(tmp_path, out=str(tmp_path / "plain")), progress=False)
    cfg = tiny_config(tmp_path, out=str(tmp_path / policy), recompute_blocks=2, recompute_policy=policy)
    recomputed = train(cfg, progress=False)
    assert load_model(recomputed.checkpoint).config.recompute_policy == policy
    a = load_file(str(plain.checkpoint / "model.safetensors"))
    b = load_file(str(recomputed.checkpoint / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6)
