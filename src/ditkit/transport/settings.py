"""What a flow-matching model is: its interpolant path, what it predicts, and its time cut-offs.

Plain data only (no torch), so that configs and command-line parsers can import it; the choice lists
live in `ditkit.choices`.
The names follow SiT (Ma et al. 2024, arXiv 2401.08740) and its public code, so that its options
("Linear", "velocity", ...) mean the same here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from ditkit.choices import LOSS_WEIGHTS, PATH_TYPES, PREDICTIONS
from ditkit.errors import UserError

# SD3's best logit-normal setting, lognorm(0.00, 1.00) (Esser et al. 2024, Table 1).
LOGIT_NORMAL_MEAN = 0.0
LOGIT_NORMAL_STD = 1.0
# SiT's default time cut-offs (its create_transport): the VP path is singular at t = 1 and its
# noise end is not exactly Gaussian; score and noise predictions divide by sigma_t -> 0 at t = 1.
VP_TRAIN_EPS = 1e-5
VP_SAMPLE_EPS = 1e-3
SCORE_NOISE_EPS = 1e-3


def default_eps(path_type: str, prediction: str) -> tuple[float, float]:
    """SiT's (train_eps, sample_eps) for a path and prediction: 0 where velocity is stable everywhere."""
    if path_type == "VP":
        return VP_TRAIN_EPS, VP_SAMPLE_EPS
    if prediction != "velocity":
        return SCORE_NOISE_EPS, SCORE_NOISE_EPS
    return 0.0, 0.0


def check_flow_options(path_type: str, prediction: str, loss_weight: str | None) -> None:
    """Raise UserError for an unknown path, prediction or loss weight."""
    for what, value, choices in (
        ("path", path_type, PATH_TYPES),
        ("prediction", prediction, PREDICTIONS),
    ):
        if value not in choices:
            raise UserError(f"unknown {what} {value!r}; choose one of {', '.join(choices)}")
    if loss_weight is not None and loss_weight not in LOSS_WEIGHTS:
        raise UserError(
            f"unknown loss weight {loss_weight!r}; choose one of {', '.join(LOSS_WEIGHTS)} or none"
        )


@dataclass(frozen=True)
class FlowSettings:
    """A flow model's interpolant and parametrisation (stored in checkpoints as `extra["flow"]`).

    Attributes:
        path_type: "Linear", "GVP" or "VP".
        prediction: what the network outputs: "velocity", "score" or "noise".
        loss_weight: None, "velocity" or "likelihood" (score and noise predictions only).
        train_eps, sample_eps: time cut-offs; None means SiT's default for the path and prediction.
    """

    path_type: str = "Linear"
    prediction: str = "velocity"
    loss_weight: str | None = None
    train_eps: float | None = None
    sample_eps: float | None = None

    def __post_init__(self) -> None:
        check_flow_options(self.path_type, self.prediction, self.loss_weight)
        for name in ("train_eps", "sample_eps"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value < 0.5:
                raise UserError(f"{name} must lie in [0, 0.5), got {value}")

    @property
    def eps(self) -> tuple[float, float]:
        """(train_eps, sample_eps) with SiT's defaults filled in; always 0 for velocity on Linear/GVP,
        which is stable on all of [0, 1] (SiT ignores given values there too)."""
        train, sample = default_eps(self.path_type, self.prediction)
        if self.path_type != "VP" and self.prediction == "velocity":
            return 0.0, 0.0
        return (
            train if self.train_eps is None else float(self.train_eps),
            sample if self.sample_eps is None else float(self.sample_eps),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> FlowSettings:
        """Read a checkpoint's record; keys it does not know are ignored."""
        data = dict(data or {})
        known = {
            k: data[k]
            for k in ("path_type", "prediction", "loss_weight", "train_eps", "sample_eps")
            if k in data
        }
        return cls(**known)


# Default steps of the fixed-step samplers: 50 Euler / 25 Heun steps (50 model evaluations each), and
# SiT's 250 SDE steps (its sample.py --num-sampling-steps); dopri5 picks its own steps.
DEFAULT_FLOW_STEPS = {"euler": 50, "heun": 25, "sde-euler": 250, "sde-heun": 250}
