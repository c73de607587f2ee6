"""Export a DiT to diffusers (a `DiTTransformer2DModel`, or a complete `DiTPipeline` folder) and import one.

A pipeline folder is complete or not written: `DiTPipeline` always decodes with an `AutoencoderKL`, so
exporting one needs the first stage's weights (`vae=`: a local diffusers AutoencoderKL folder, a
pipeline folder with a `vae/` inside, a Hub id, or an AutoencoderKL). Without them, export the
transformer alone and give diffusers the VAE when loading:
`DiTPipeline(transformer=DiTTransformer2DModel.from_pretrained(out), vae=..., scheduler=...)`.

Caveats of diffusers' side, also listed by `export_notes`: its timestep features are slightly
different from DiT's (see `ditkit.checkpoints.diffusers_keys`), and `DiTPipeline` hard-codes label
1000 as the null class, so classifier-free guidance (guidance_scale > 1) there works only for
1000-class models.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ditkit.atomic import atomic_folder
from ditkit.checkpoints.diffusers_keys import (
    DIFFUSERS_CLASS,
    LEGACY_CLASS,
    config_from_diffusers,
    diffusers_config,
    from_diffusers_state_dict,
    to_diffusers_state_dict,
)
from ditkit.checkpoints.layout import RawCheckpoint, StateDict, build_model
from ditkit.checkpoints.native import read_safetensors
from ditkit.checkpoints.official import SINGLE_WEIGHTS, load_torch_file
from ditkit.diffusion.schedule import DEFAULT_DIFFUSION_STEPS, LINEAR_BETA_END, LINEAR_BETA_START
from ditkit.errors import UserError
from ditkit.extras import optional_dependency
from ditkit.first_stage.sd_vae import SD_VAE_LATENT_SCALE
from ditkit.model.dit import DiT

PIPELINE_INDEX = "model_index.json"
# ditkit's own record in an exported folder: class names, first stage, diffusion settings (the
# checkpoint's `extra`), which a DiTTransformer2DModel config has no place for. diffusers ignores it.
EXTRA_FILE = "ditkit_extra.json"
SCHEDULERS = ("ddim", "ddpm")
# The label DiTPipeline uses as "no class" for guidance (diffusers pipeline_dit.py hard-codes it).
DIFFUSERS_NULL_CLASS = 1000
WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
# ditkit noise schedule -> diffusers beta_schedule with the same betas.
BETA_SCHEDULES = {"linear": "linear", "cosine": "squaredcos_cap_v2"}


def to_diffusers_transformer(model: DiT) -> Any:
    """A diffusers DiTTransformer2DModel (float32, eval mode) computing the same function as `model`."""
    with optional_dependency("diffusers", "diffusers export and import"):
        from diffusers import DiTTransformer2DModel

    config = model.config
    tensors = to_diffusers_state_dict({k: v.detach().cpu() for k, v in model.state_dict().items()}, config)
    transformer: Any = DiTTransformer2DModel(**diffusers_config(config))
    transformer.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True)
    return transformer.eval()


def scheduler_config(diffusion: dict[str, Any] | None = None) -> dict[str, Any]:
    """diffusers scheduler settings for DiT's diffusion: 1000 steps, linear betas 1e-4..0.02, epsilon.

    `diffusion` ({"noise_schedule": "linear" | "cosine", "diffusion_steps": T}, ditkit's `extra`
    entry) selects another schedule; linear end points scale by 1000 / T as in ditkit/ADM.
    """
    diffusion = diffusion or {}
    schedule = diffusion.get("noise_schedule", "linear")
    steps = int(diffusion.get("diffusion_steps", DEFAULT_DIFFUSION_STEPS))
    if schedule not in BETA_SCHEDULES:
        raise UserError(f"cannot express the noise schedule {schedule!r} as a diffusers scheduler")
    scale = DEFAULT_DIFFUSION_STEPS / steps
    return {
        "num_train_timesteps": steps,
        "beta_start": LINEAR_BETA_START * scale,
        "beta_end": LINEAR_BETA_END * scale,
        "beta_schedule": BETA_SCHEDULES[schedule],
        "prediction_type": "epsilon",
        "clip_sample": False,  # DiT's sample.py samples with clip_denoised=False
    }


def _load_vae(vae: Any, in_channels: int) -> Any:
    """An AutoencoderKL from an instance or a spec `ditkit.first_stage` understands (folder, file, hub id)."""
    with optional_dependency("diffusers", "diffusers export and import"):
        from diffusers import AutoencoderKL

    if isinstance(vae, (str, os.PathLike)):
        from ditkit.first_stage.sd_vae import load_sd_vae

        vae = load_sd_vae(str(vae)).vae
    if not isinstance(vae, AutoencoderKL):
        raise UserError(f"vae must be a path or an AutoencoderKL, not {type(vae).__name__}")
    channels = vae.config["latent_channels"]  # type: ignore[attr-defined]  # diffusers' ConfigMixin
    if channels != in_channels:
        raise UserError(f"the VAE has {channels} latent channels but the DiT takes {in_channels}")
    return vae


def _check_replaceable(target: Path) -> None:
    if target.is_dir() and any(target.iterdir()) and not is_diffusers_folder(target):
        raise UserError(f"refusing to replace {target}: it is a folder but not a diffusers DiT export")
    if target.exists() and not target.is_dir():
        raise UserError(f"refusing to replace the file {target} with a folder")


def export_diffusers(
    model: DiT,
    out_dir: str | os.PathLike[str],
    *,
    pipeline: bool = True,
    vae: Any = None,
    scheduler: str = "ddim",
    class_names: Sequence[str] | None = None,
    diffusion: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write `model` as a diffusers folder, atomically.

    Args:
        model: an adaLN-Zero DiT with square inputs and mlp_ratio 4 (what diffusers' DiT supports).
        out_dir: the folder to write.
        pipeline: write a complete DiTPipeline (model_index.json, transformer/, vae/, scheduler/);
            False writes only the DiTTransformer2DModel (config.json + weights) into `out_dir`.
        vae: the first stage, required for a pipeline: a diffusers AutoencoderKL folder (or a pipeline
            folder holding vae/), a Hub id, or an AutoencoderKL instance.
        scheduler: "ddim" or "ddpm" (DDIMScheduler / DDPMScheduler) with DiT's training schedule.
        class_names: names of the classes by id, stored as DiTPipeline's `id2label`.
        diffusion: ditkit's diffusion settings ({"noise_schedule", "diffusion_steps"}); default DiT's.
        extra: plain data kept for a ditkit import (class names, first stage...): written to
            `ditkit_extra.json` beside the weights, so that a round trip loses nothing.

    Returns:
        `out_dir`.
    """
    with optional_dependency("diffusers", "diffusers export and import"):
        from diffusers import DDIMScheduler, DDPMScheduler, DiTPipeline

    if scheduler not in SCHEDULERS:
        raise UserError(f"unknown scheduler {scheduler!r}; choose one of {', '.join(SCHEDULERS)}")
    if pipeline and vae is None:
        raise UserError(
            "a complete DiTPipeline needs the first-stage VAE weights: pass vae (e.g. --vae a local "
            "diffusers AutoencoderKL folder such as a copy of stabilityai/sd-vae-ft-ema), or export the "
            "transformer alone (--to diffusers)"
        )
    if class_names is not None and len(class_names) != model.num_classes:
        raise UserError(f"{len(class_names)} class names given for a model with {model.num_classes} classes")
    transformer = to_diffusers_transformer(model)
    target = Path(out_dir)
    _check_replaceable(target)
    record = {**(extra or {}), **({"class_names": list(class_names)} if class_names is not None else {})}
    if diffusion is not None:
        record["diffusion"] = diffusion
    if not pipeline:
        with atomic_folder(target) as tmp:
            transformer.save_pretrained(tmp, safe_serialization=True)
            _write_extra(tmp, record)
        return target
    cls = DDIMScheduler if scheduler == "ddim" else DDPMScheduler
    pipe: Any = DiTPipeline(
        transformer=transformer,
        vae=_load_vae(vae, model.in_channels),
        scheduler=cls(**scheduler_config(diffusion)),
    )
    with atomic_folder(target) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
        if class_names is not None:  # DiTPipeline reads id2label from model_index.json but does not save it
            index = json.loads((tmp / PIPELINE_INDEX).read_text(encoding="utf-8"))
            index["id2label"] = {str(i): name for i, name in enumerate(class_names)}
            (tmp / PIPELINE_INDEX).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
        _write_extra(tmp, record)
    return target


def _write_extra(folder: Path, record: dict[str, Any]) -> None:
    if record:
        (folder / EXTRA_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def _read_extra(folder: Path) -> dict[str, Any]:
    """The `ditkit_extra.json` of an exported folder ({} when absent)."""
    path = folder / EXTRA_FILE
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read {path} ({err}); delete it to load the weights without it") from None
    return record if isinstance(record, dict) else {}


def export_notes(model: DiT) -> list[str]:
    """What a user of the exported diffusers model should know about it (one line each)."""
    notes = [
        "diffusers' DiT computes timestep features with slightly different frequencies (i/(half-1) instead "
        "of DiT's i/half), so its outputs differ slightly from ditkit's and the official DiT's for t > 0"
    ]
    if model.num_classes != DIFFUSERS_NULL_CLASS:
        notes.append(
            f"DiTPipeline uses label {DIFFUSERS_NULL_CLASS} as the null class; with {model.num_classes} classes "
            "call it with guidance_scale=1 (classifier-free guidance there needs a 1000-class model)"
        )
    return notes


def _transformer_dir(path: Path) -> Path:
    return path / "transformer" if (path / PIPELINE_INDEX).is_file() else path


def is_diffusers_folder(path: Path) -> bool:
    """True for a diffusers DiTPipeline folder or a DiTTransformer2DModel folder."""
    config = _transformer_dir(path) / "config.json"
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("_class_name") in (
            DIFFUSERS_CLASS,
            LEGACY_CLASS,
        )
    except (OSError, ValueError, AttributeError):
        return False


def _read_weights(folder: Path) -> StateDict:
    for name in WEIGHT_NAMES:
        if (folder / name).is_file():
            if name.endswith(".safetensors"):
                return read_safetensors(folder / name)[0]
            obj = load_torch_file(folder / name)
            if isinstance(obj, dict):
                return obj
    raise UserError(f"{folder} has no {' or '.join(WEIGHT_NAMES)}; is the export complete?")


def _diffusion_from_scheduler(sched: dict[str, Any]) -> dict[str, Any] | None:
    """ditkit's diffusion settings equivalent to a diffusers scheduler config, if there are any."""
    schedule = {v: k for k, v in BETA_SCHEDULES.items()}.get(sched.get("beta_schedule", "linear"))
    if schedule is None:
        return None
    steps = int(sched.get("num_train_timesteps", 0))
    diffusion: dict[str, Any] = {"noise_schedule": schedule, "diffusion_steps": steps}
    if steps < 1:
        return None
    if schedule == "linear":
        want = scheduler_config(diffusion)
        for key in ("beta_start", "beta_end"):
            if not math.isclose(float(sched.get(key, -1.0)), want[key], rel_tol=1e-6):
                return None
    return diffusion


def _pipeline_extra(path: Path, num_classes: int) -> tuple[dict[str, Any], list[str]]:
    """class_names, first_stage and diffusion settings recorded in a DiTPipeline folder."""
    extra: dict[str, Any] = {}
    notes: list[str] = []
    index = json.loads((path / PIPELINE_INDEX).read_text(encoding="utf-8"))
    id2label = index.get("id2label") or {}
    if id2label and all(str(i) in id2label for i in range(num_classes)):
        extra["class_names"] = [id2label[str(i)] for i in range(num_classes)]
    if (path / "vae" / "config.json").is_file():  # as ditkit's FirstStage.to_dict() describes it
        vae = json.loads((path / "vae" / "config.json").read_text(encoding="utf-8"))
        extra["first_stage"] = {
            "kind": "sd-vae",
            "source": str((path / "vae").resolve()),
            "scale": float(vae.get("scaling_factor", SD_VAE_LATENT_SCALE)),
            "latent_channels": int(vae.get("latent_channels", 4)),
            # Each encoder block but the last halves the resolution.
            "downsample": 2 ** (len(vae.get("block_out_channels", [0] * 4)) - 1),
        }
    sched_file = path / "scheduler" / "scheduler_config.json"
    if sched_file.is_file():
        sched = json.loads(sched_file.read_text(encoding="utf-8"))
        diffusion = _diffusion_from_scheduler(sched)
        if diffusion is not None:
            extra["diffusion"] = diffusion
        else:
            notes.append(
                f"the scheduler's betas ({sched.get('beta_schedule')}) are not a ditkit schedule; not kept"
            )
    return extra, notes


def read_diffusers(path: Path) -> RawCheckpoint:
    """Read a DiTPipeline or DiTTransformer2DModel folder as official-layout weights and a config."""
    folder = _transformer_dir(path)
    source = str(path)
    try:
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read {folder / 'config.json'}: {err}") from None
    config, notes = config_from_diffusers(cfg, source)
    extra = _read_extra(path)
    if folder != path:  # what the pipeline's own files say wins (its VAE may have moved with it)
        pipeline_extra, more = _pipeline_extra(path, config.num_classes)
        extra.update(pipeline_extra)
        notes += more

    def weights() -> StateDict:
        return from_diffusers_state_dict(_read_weights(folder), config, source)

    return RawCheckpoint("diffusers", source, {SINGLE_WEIGHTS: weights}, config, extra, notes)


def import_diffusers(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> DiT:
    """A ditkit DiT (eval mode) from a diffusers DiTPipeline folder or DiTTransformer2DModel folder."""
    raw = read_diffusers(Path(path))
    assert raw.config is not None
    return build_model(raw.config, raw.weights[SINGLE_WEIGHTS](), raw.source).to(device)
