"""Building a run's pieces from its options: the data, the first stage, the model and the optimizer."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from ditkit.errors import UserError
from ditkit.model.dit import DiT, DiTConfig
from ditkit.objectives import objective_from_options
from ditkit.objectives.registry import objective_type
from ditkit.training.config import TrainConfig
from ditkit.training.ema import EMA
from ditkit.training.step import TrainStep


@dataclass
class DataSetup:
    """The training data and what the model sees of it.

    Attributes:
        dataset: items (x, label); x float32 (C, H, W): model inputs, or images when `encoder` is set.
        info: the dataset's description (ditkit.data.build.DatasetInfo).
        encoder: a first stage to encode image batches on the fly, or None when items are model inputs.
        first_stage: the stored description of the first stage (kept in checkpoints for sampling).
        sample_shape: (C, H, W) of one model input.
    """

    dataset: Dataset[Any]
    info: Any
    encoder: Any
    first_stage: dict[str, Any]
    sample_shape: tuple[int, int, int]


def build_data(config: TrainConfig, echo: Callable[[str], None]) -> DataSetup:
    """Open the training data and decide the first stage (see `TrainConfig.first_stage`).

    The dataset is opened and the model's sizes are checked against it before the first stage is
    loaded, so that a bad size or preset fails before a VAE is read or downloaded.
    """
    from ditkit.data.build import FASHION_MNIST, build_dataset
    from ditkit.data.fashion_mnist_dataset import parse_class_list
    from ditkit.first_stage.load import load_first_stage, planned_latent_shape
    from ditkit.first_stage.sd_vae import DEFAULT_SD_VAE

    dataset, info = build_dataset(
        config.data,
        data_dir=config.data_dir,
        image_size=config.image_size,
        flip=config.flip,
        seed=config.seed,
        classes=None if config.classes is None else parse_class_list(config.classes),
    )
    if info.first_stage is not None:  # a latent cache: items are already latents
        if config.first_stage is not None:
            raise UserError(
                f"{config.data} is a latent cache made with its own first stage; drop --first-stage"
            )
        shape = (info.channels, info.input_size, info.input_size)
        return DataSetup(dataset, info, None, dict(info.first_stage), shape)
    # DiT trains image folders on the Stable Diffusion VAE (Peebles & Xie 2023, sec. 3)
    spec = config.first_stage or ("identity" if config.data == FASHION_MNIST else DEFAULT_SD_VAE)
    planned = planned_latent_shape(spec, info.channels, info.image_size)
    if planned is not None:  # the model must fit these latents: checked before any weights are read
        dit_config(config, planned, info.num_classes)
    stage = load_first_stage(spec, channels=info.channels)
    c, h, _ = stage.latent_shape(info.image_size)
    if spec == "identity":
        return DataSetup(dataset, info, None, stage.to_dict(), (c, h, h))
    echo(
        f"encoding images with {spec} at every step is slow; make a latent cache once with "
        f"`ditkit prepare {config.data} --out CACHE` and train with --data CACHE"
    )
    return DataSetup(dataset, info, stage.requires_grad_(False).eval(), stage.to_dict(), (c, h, h))


def model_config(config: TrainConfig, data: DataSetup) -> DiTConfig:
    """The DiT config: the preset, sized by the data, with the run's overrides."""
    return dit_config(config, data.sample_shape, data.info.num_classes)


def dit_config(config: TrainConfig, sample_shape: tuple[int, int, int], num_classes: int) -> DiTConfig:
    """The DiT config for inputs of `sample_shape` (C, H, W) and `num_classes` classes.

    Raises:
        UserError: unknown preset, or fields that do not fit (e.g. a patch size not dividing H).
    """
    from ditkit.model.presets import get_config

    c, h, _ = sample_shape
    fields: dict[str, Any] = dict(
        input_size=h,
        in_channels=c,
        num_classes=num_classes,
        learn_sigma=config.learn_sigma,
        class_dropout_prob=config.class_dropout,
        recompute_blocks=config.recompute_blocks,
        recompute_policy=config.recompute_policy,
    )
    fields.update(config.model_overrides)
    fields.update(objective_type(config.objective).model_fields)  # what the objective needs of the model
    try:
        return get_config(config.model, **fields)
    except (TypeError, ValueError) as err:
        raise UserError(f"invalid model options for {config.model}: {err}") from err


def build_model(cfg: DiTConfig, seed: int, device: torch.device) -> DiT:
    """A freshly initialised DiT; its initialisation depends only on `seed` (the global RNG is restored)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            model = DiT(cfg)
        except ValueError as err:
            raise UserError(f"cannot build {cfg.name or 'the model'}: {err}") from err
    return model.to(device)


def fused_supported(device: torch.device, params: Iterable[nn.Parameter]) -> bool:
    """Fused AdamW runs on CUDA and CPU float tensors; FSDP's DTensors take the foreach path."""
    from torch.distributed.tensor import DTensor

    return device.type in ("cuda", "cpu") and not any(isinstance(p, DTensor) for p in params)


def build_optimizer(model: nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW over all parameters, as DiT (frozen ones, the positional table, never get a gradient), or
    Muon on the blocks' weight matrices and AdamW on the rest (`--optimizer muon`). With `--freeze`
    only the trainable parameters (the run's own layout, so no older checkpoint is concerned)."""
    params = [p for p in model.parameters() if p.requires_grad or config.freeze is None]
    if config.optimizer == "muon":
        from ditkit.training.muon import MuonAdamW, muon_parameters

        return MuonAdamW(
            *muon_parameters(model),
            lr=config.lr,
            betas=config.betas,
            weight_decay=config.weight_decay,
            fused=fused_supported(device, params),
        )
    return torch.optim.AdamW(
        params,
        lr=config.lr,
        betas=config.betas,
        weight_decay=config.weight_decay,
        fused=fused_supported(device, params) or None,
    )


def build_train_step(
    model: nn.Module,
    config: TrainConfig,
    precision: str,
    *,
    raw: nn.Module | None = None,
    encoder: Any = None,
    sample_shape: tuple[int, int, int] | None = None,
    repa: Any = None,
) -> TrainStep:
    """The run's optimizer step (`TrainStep`) with its own AdamW, EMA and objective, as the trainer
    builds them; `ditkit.bench` builds the step it times here too.

    Args:
        model: the model the forward runs (wrapped or compiled as the run chose).
        config: the run's options (optimizer, EMA, dropout, clipping, objective, seed).
        precision: the resolved precision ("fp32", "tf32" or "bf16"; not "auto").
        raw: the unwrapped model (default `model`).
        encoder, sample_shape: the first stage that encodes images on the fly, and the latents' shape.
        repa: the run's REPA term (`build_repa`), or None.
    """
    raw = model if raw is None else raw
    device = next(raw.parameters()).device
    return TrainStep(
        model,
        objective_from_options(config),
        build_optimizer(model, config, device),
        EMA(raw, config.ema_decay, config.ema_warmup),
        seed=config.seed,
        class_dropout=config.class_dropout,
        precision=precision,
        grad_clip=config.grad_clip,
        raw=raw,
        encoder=encoder,
        sample_shape=sample_shape,
        repa=repa,
    )


def build_repa(config: TrainConfig, raw: DiT, data: DataSetup, device: torch.device) -> Any:
    """The run's REPA term (`ditkit.training.repa.Repa`): the frozen encoder, probed once on a blank image
    for its token width, and the projector (seeded by the run's seed) with its own AdamW."""
    from ditkit.training.repa import Projector, Repa
    from ditkit.training.repa_encoders import load_repa_encoder

    assert config.repa_encoder is not None
    encoder = load_repa_encoder(config.repa_encoder, device)
    blank = torch.zeros(1, data.info.channels, data.info.image_size, data.info.image_size, device=device)
    with torch.no_grad():
        probe = encoder(blank)
    if probe.ndim != 3:
        raise UserError(
            f"--repa-encoder {config.repa_encoder} must return patch tokens (B, N, D); it returned "
            f"{tuple(probe.shape)} for one image"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        projector = Projector(raw.config.hidden_size, config.repa_projector_dim, probe.shape[-1]).to(device)
    params = list(projector.parameters())
    optimizer = torch.optim.AdamW(
        params,
        lr=config.lr,
        betas=config.betas,
        weight_decay=config.weight_decay,
        fused=fused_supported(device, params) or None,
    )
    block = raw.blocks[config.repa_depth - 1]
    return Repa(encoder, projector, optimizer, block, raw.grid_hw, config.repa_coeff)


def check_repa_data(config: TrainConfig, data: DataSetup) -> None:
    """REPA's encoder sees images: refuse a latent cache (it holds none) in one line (`preflight` has
    checked the depth and the encoder)."""
    if config.repa_encoder is not None and data.info.first_stage is not None:
        raise UserError(
            f"--repa-encoder needs the training images, and {config.data} is a latent cache (latents only); "
            "train on the image folder itself (encoded at every step) or in pixel space"
        )


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Give every parameter group of `optimizer` the learning rate `lr` (before its step)."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def checkpoint_extra(
    config: TrainConfig, data: DataSetup, step: int, init: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Metadata stored with the weights: what `ditkit sample` needs, the run's options, and the
    checkpoint the run started from (`init`: path, weight set, sha256; see `finetune.InitSource.record`)."""
    extra = {
        "first_stage": data.first_stage,
        **objective_from_options(config).record(),
        "class_names": list(data.info.class_names),
        "image_size": int(data.info.image_size),
        "train": {"step": step, "config": config.to_dict()},
    }
    if init is not None:
        extra["init"] = init
    return extra
