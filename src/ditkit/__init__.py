"""ditkit: Diffusion Transformers (Peebles & Xie, arXiv 2212.09748) on PyTorch.

The public API is imported lazily so that `import ditkit` stays fast and the CLI can
build its parsers without loading torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public name -> module that defines it.
_LAZY: dict[str, str] = {
    "DiT": "ditkit.model.dit",
    "DiTConfig": "ditkit.model.dit",
    "PRESETS": "ditkit.model.presets",
    "create_model": "ditkit.model.presets",
    "get_config": "ditkit.model.presets",
    "count_gflops": "ditkit.model.flops",
    "UserError": "ditkit.errors",
    "TrainConfig": "ditkit.training.config",
    "TrainResult": "ditkit.training.result",
    "train": "ditkit.training.trainer",
    "run_demo": "ditkit.demo.run",
    "make_grid": "ditkit.visual",
    "save_grid": "ditkit.visual",
    "grid_image": "ditkit.visual",
    "upscale_nearest": "ditkit.visual",
    "display_scale": "ditkit.visual",
    "load_model": "ditkit.checkpoints.loader",
    "load_checkpoint": "ditkit.checkpoints.loader",
    "LoadedCheckpoint": "ditkit.checkpoints.loader",
    "save_model": "ditkit.checkpoints.native",
    "export_diffusers": "ditkit.checkpoints.diffusers_interop",
    "import_diffusers": "ditkit.checkpoints.diffusers_interop",
    "convert_checkpoint": "ditkit.checkpoints.convert",
    "DiTPipeline": "ditkit.generation.pipeline",
    "ClassNames": "ditkit.generation.class_names",
    "resolve_class": "ditkit.generation.class_names",
    "slerp": "ditkit.generation.walks",
    "noise_walk": "ditkit.generation.walks",
    "class_walk": "ditkit.generation.walks",
    "generate_sharded": "ditkit.generation.sharded",
    "ShardedSettings": "ditkit.generation.sharded",
    "load_inception": "ditkit.evaluation.inception_weights",
    "FIDInceptionV3": "ditkit.evaluation.inception",
    "frechet_distance": "ditkit.evaluation.frechet",
    "inception_score": "ditkit.evaluation.inception_score",
    "precision_recall": "ditkit.evaluation.precision_recall",
    "evaluate_npz": "ditkit.evaluation.adm_metrics",
    "build_reference": "ditkit.evaluation.reference",
    "load_fmnist_classifier": "ditkit.evaluation.fmnist_classifier",
    "score_fmnist_samples": "ditkit.evaluation.fmnist_classifier",
    "build_dataset": "ditkit.data.build",
    "DatasetInfo": "ditkit.data.build",
    "ImageFolderDataset": "ditkit.data.imagefolder",
    "FashionMNISTDataset": "ditkit.data.fashion_mnist_dataset",
    "LatentCacheDataset": "ditkit.data.latent_cache",
    "sample_latent": "ditkit.data.latent_cache",
    "center_crop_arr": "ditkit.data.transforms",
    "prepare_latent_cache": "ditkit.data.cache_writer",
    "prepare_dataset": "ditkit.data.cache_writer",
    "FirstStage": "ditkit.first_stage.base",
    "IdentityFirstStage": "ditkit.first_stage.base",
    "SDVAEFirstStage": "ditkit.first_stage.sd_vae",
    "SD_VAE_LATENT_SCALE": "ditkit.first_stage.sd_vae",
    "load_first_stage": "ditkit.first_stage.load",
    "first_stage_from_dict": "ditkit.first_stage.load",
    "create_diffusion": "ditkit.objectives.dit_compat",
    "GaussianDiffusion": "ditkit.diffusion.gaussian",
    "Schedule": "ditkit.diffusion.schedule",
    "make_schedule": "ditkit.diffusion.schedule",
    "nll_bpd": "ditkit.diffusion.likelihood",
    "sample": "ditkit.objectives.sampling",
    "Objective": "ditkit.objectives.base",
    "DiffusionObjective": "ditkit.objectives.diffusion",
    "FlowObjective": "ditkit.objectives.flow",
    "MeanFlowObjective": "ditkit.objectives.meanflow",
    "SamplingSettings": "ditkit.samplers.settings",
    "DiffusionSettings": "ditkit.diffusion.settings",
    "create_transport": "ditkit.transport.transport",
    "Transport": "ditkit.transport.transport",
    "Sampler": "ditkit.transport.sit_sampler",
    "FlowSettings": "ditkit.transport.settings",
    "classifier_free_guidance": "ditkit.samplers.guidance",
    "ClassifierFreeGuidance": "ditkit.samplers.guidance",
    "bench_train": "ditkit.bench.train",
    "bench_sample": "ditkit.bench.sample",
    "saved_activation_bytes": "ditkit.bench.activations",
    "recompute_block": "ditkit.model.recompute",
    "compile_blocks": "ditkit.model.compilation",
    "precision_context": "ditkit.model.precision",
    "fast_denoiser": "ditkit.model.cuda_graphs",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ditkit' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
