"""Training DiTs: the official recipe on 1 or N processes, with exact resume and a graceful stop.

from ditkit.training import TrainConfig, train
result = train(TrainConfig(model="DiT-XS/4", data="fashion-mnist", image_size=28, steps=1000, out="runs/x"))
"""

from ditkit.training.config import TrainConfig
from ditkit.training.state import latest_checkpoint, load_training_checkpoint
from ditkit.training.trainer import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "latest_checkpoint", "load_training_checkpoint", "train"]
