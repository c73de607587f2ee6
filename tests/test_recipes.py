"""`ditkit train --recipe lightningdit`: LightningDiT's options, the given ones taking over, and a tiny run."""

from __future__ import annotations

import pytest
from helpers import write_fake_fmnist

from ditkit.cli.main import build_parser
from ditkit.cli.train import config_from_args
from ditkit.errors import UserError
from ditkit.training import train

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _config(tmp_path, *more):
    data = tmp_path / "fmnist"
    if not data.exists():
        write_fake_fmnist(data)
    argv = ["train", "--recipe", "lightningdit", "--data-dir", str(data), "--out", str(tmp_path / "run")]
    return config_from_args(build_parser().parse_args([*argv, *more]))


def test_the_recipe_and_the_options_given_with_it(tmp_path):
    config = _config(tmp_path, "--steps", "5", "--model", "DiT-T/2", "--set", "depth=1", "--lr", "1e-3")
    assert (config.objective, config.time_sampling, config.cosine_loss) == ("flow", "logit-normal", True)
    assert config.betas == (0.9, 0.95) and config.global_batch == 1024 and config.ema_decay == 0.9999
    assert config.learn_sigma is False and config.grad_clip is None and config.warmup_steps == 0
    assert config.model == "DiT-T/2" and config.lr == 1e-3  # given: they take over
    assert config.model_overrides == {
        "norm": "rmsnorm",
        "mlp": "swiglu",
        "rope": True,
        "qk_norm": False,
        "adaln_shift": True,
        "depth": 1,
    }


def test_a_tiny_run_trains_with_lightningdits_block_and_resumes_without_the_recipe(tmp_path):
    config = _config(
        tmp_path,
        *("--model", "DiT-T/2", "--image-size", "8", "--global-batch", "8", "--steps", "2"),
        *("--device", "cpu", "--ckpt-every", "0"),
    )
    result = train(config, progress=False)
    assert result.step == 2 and result.loss is not None
    with pytest.raises(UserError, match="^drop --recipe on --resume: the run's train_config.json holds"):
        _config(tmp_path, "--resume")
