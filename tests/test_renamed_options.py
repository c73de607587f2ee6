"""Renamed options keep working: older flags on the command line, older keys in saved files."""

from __future__ import annotations

import json

from test_cli_config_flags import _train_parser

from ditkit.choices import RENAMED_FIELDS
from ditkit.cli.train import config_from_args
from ditkit.training.config import TrainConfig, resumed_config


def test_old_flags_set_the_renamed_fields(tmp_path):
    argv = [
        "--steps",
        "1",
        "--out",
        str(tmp_path),
        "--checkpointing",
        "2",
        "--checkpoint-policy",
        "selective",
    ]
    config = config_from_args(_train_parser().parse_args(argv))
    assert (config.recompute_blocks, config.recompute_policy) == (2, "selective")
    argv = ["--steps", "1", "--out", str(tmp_path), "--recompute-blocks", "3", "--recompute-policy", "full"]
    config = config_from_args(_train_parser().parse_args(argv))
    assert (config.recompute_blocks, config.recompute_policy) == (3, "full")


def test_old_keys_of_a_saved_config_are_read(tmp_path):
    record = TrainConfig(steps=5, recompute_blocks=4, recompute_policy="selective").to_dict()
    old = {RENAMED_BACK.get(k, k): v for k, v in record.items()}
    assert "checkpointing" in old and "recompute_blocks" not in old
    assert TrainConfig.from_dict(json.loads(json.dumps(old))) == TrainConfig.from_dict(record)
    resumed = resumed_config(old, {"steps": 9})  # resuming a run saved under the old names
    assert (resumed.recompute_blocks, resumed.recompute_policy, resumed.steps) == (4, "selective", 9)


RENAMED_BACK = {new: old for old, new in RENAMED_FIELDS.items()}
