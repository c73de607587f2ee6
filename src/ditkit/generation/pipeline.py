"""`DiTPipeline`: a DiT, its first stage, its objective and its sampling settings, sampled in one call.

    pipe = DiTPipeline.from_pretrained("DiT-XL-2-256x256.pt")
    images = pipe(["golden retriever", 88], guidance_scale=4.0, num_steps=250, seeds=[0, 1])
    sit = DiTPipeline.from_pretrained("SiT-XL-2-256x256.pt", objective="flow")   # flow matching (SiT)

A checkpoint that records the settings it was evaluated with (`extra["sampling"]`, e.g. the demo's) gives
them as the pipeline's defaults (`pipe.sampling`): a call that names nothing samples as its report did.

Image i depends only on its class, its seed and the settings: not on the batch it was drawn in,
the batch size or the device count (per-sample noise streams, `ditkit.diffusion.noise`).

Speed: `precision="auto"` samples in bfloat16 on CUDA (exact float32 on the CPU), the DiT's forward
is replayed as a CUDA graph per batch shape, and `compile="blocks"` compiles it (worth it only for
long runs such as FID-50K). See `ditkit.generation.denoiser`,
`ditkit.model.precision` and `ditkit.model.cuda_graphs`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from ditkit.choices import TIME_SHIFT_SAMPLERS
from ditkit.diffusion.gaussian import ModelFn
from ditkit.diffusion.noise import SeededNoise
from ditkit.distributed import pick_device
from ditkit.errors import UserError
from ditkit.first_stage.base import FirstStage, IdentityFirstStage
from ditkit.generation.class_names import ClassNames, ClassQuery, model_class_names
from ditkit.generation.denoiser import AUTOCAST_DTYPES, eager_denoiser, resolve_precision
from ditkit.model.compilation import apply_compile
from ditkit.model.cuda_graphs import fast_denoiser
from ditkit.model.dit import DiT
from ditkit.objectives import Objective, as_objective
from ditkit.samplers.settings import SamplingSettings
from ditkit.visual import images_to_uint8, to_pil

OutputType = Literal["uint8", "tensor", "pil"]


class DiTPipeline:
    """Class-conditional image generation with a DiT: labels and seeds in, images out.

    Args:
        model: the DiT.
        first_stage: decodes latents to images in [-1, 1]; default: the identity (pixel models).
        objective: what the model was trained with: an `Objective` or its name with its defaults
            (default: DiT's diffusion; `ditkit.objectives`).
        class_names: names of the labels, for asking by name; default ImageNet's for 1000 classes.
        device: where to sample (default: CUDA when present, else the CPU).
        dtype: the older way to ask for autocast ("bf16", "fp16", torch.bfloat16, None); prefer
            `precision`. A dtype and a precision that disagree are an error.
        precision: "auto" (default: bf16 on CUDA with bf16 support, else exact fp32), "fp32",
            "tf32" (CUDA only) or "bf16" (autocast; weights stay float32).
        compile: "none" (default), "blocks" or "model": `ditkit.model.compilation.apply_compile` on the
            model, once, in place. Compiling takes a while; it pays off only over long runs.
        cuda_graph: replay the DiT's forward as a CUDA graph per batch shape (CUDA only).
        sampling: the default sampling settings (a checkpoint's recorded ones); a call's arguments
            override them; a guidance scale left unset is the objective's `default_guidance_scale`.

    The model and first stage are moved to `device` and put in eval mode (in place). The pipeline's
    own DiT runs through one cached `fast_denoiser`; a stand-in passed as `model=` to
    `sample_latents` runs eagerly under the same precision.

    Example:
        >>> pipe = DiTPipeline(model, first_stage)
        >>> images = pipe(["golden retriever", "tennis ball"], num_steps=50, sampler="ddim", seeds=[0, 1])
        >>> images.shape  # (2, 256, 256, 3) uint8
    """

    def __init__(
        self,
        model: DiT,
        first_stage: FirstStage | None = None,
        objective: Objective | str | None = None,
        class_names: ClassNames | Sequence[str] | Mapping[str, int] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | str | None = None,
        precision: str | None = "auto",
        compile: str = "none",
        cuda_graph: bool = True,
        sampling: SamplingSettings | None = None,
    ) -> None:
        self.device = pick_device(device, local_rank=None)
        self._asked = (precision, dtype)  # re-resolved by `to()`: "auto" depends on the device
        self.precision = resolve_precision(precision, dtype, self.device)
        self.cuda_graph = cuda_graph
        self._denoiser: Callable[..., Tensor] | None = None
        self.model = model.eval().requires_grad_(False).to(self.device)
        if first_stage is None:
            first_stage = IdentityFirstStage(model.in_channels)
        self.first_stage = first_stage.eval().requires_grad_(False).to(self.device)
        latent_channels = int(getattr(first_stage, "latent_channels", model.in_channels))
        if latent_channels != model.in_channels:
            raise UserError(
                f"the first stage makes {latent_channels}-channel latents but the model takes "
                f"{model.in_channels} channels; pass the first stage it was trained with"
            )
        self.objective = as_objective(objective)
        self.sampling = sampling or SamplingSettings()
        self.class_names = model_class_names(class_names, int(getattr(model, "num_classes", 0) or 0))
        self.compile = compile
        apply_compile(self.model, compile)
        # What loading had to assume (e.g. the first stage of an official .pt file), one line each.
        self.notes: list[str] = []

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str],
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | str | None = None,
        precision: str | None = "auto",
        compile: str = "none",
        cuda_graph: bool = True,
        first_stage: str | None = None,
        image_size: int | None = None,
        which: str = "ema",
        config: Mapping[str, Any] | None = None,
        objective: str | None = None,
    ) -> DiTPipeline:
        """Load any checkpoint `ditkit.checkpoints` reads: ours, an official DiT .pt, a diffusers folder.

        Args:
            path: the checkpoint file or folder.
            device, dtype, precision, compile, cuda_graph: as for the constructor.
            first_stage: override the stored first stage ("sd-vae-ft-ema", a VAE folder, "identity").
            image_size: the expected image side in pixels; a checkpoint making another size is an error.
            which: "ema" (default) or "model" weights.
            config: DiTConfig fields the file does not record, e.g. {"num_classes": 1000} for an
                official .pt trained without label dropout, or {"num_heads": 16}.
            objective: "diffusion" or "flow" for checkpoints that do not say (SiT's released .pt
                files have DiT's keys: pass "flow"); None: what the checkpoint records, else diffusion.
        """
        from ditkit.generation.loading import load_for_sampling

        resolve_precision(
            precision, dtype, pick_device(device, local_rank=None)
        )  # a bad choice fails before loading
        loaded = load_for_sampling(
            path,
            first_stage=first_stage,
            image_size=image_size,
            which=which,
            config=config,
            objective=objective,
        )
        pipe = cls(
            loaded.model,
            loaded.first_stage,
            loaded.objective,
            loaded.class_names,
            device=device,
            dtype=dtype,
            precision=precision,
            compile=compile,
            cuda_graph=cuda_graph,
            sampling=loaded.sampling,
        )
        pipe.notes = loaded.notes
        return pipe

    # ---- shapes and labels ----

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, h, w) of one latent, the model's input."""
        h, w = self.model.config.size_hw
        return int(self.model.in_channels), int(h), int(w)

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the decoded images."""
        down = int(getattr(self.first_stage, "downsample", 1))
        _, h, w = self.latent_shape
        return h * down, w * down

    def objective_record(self) -> dict[str, Any]:
        """How sampling records the model's objective (its checkpoint record)."""
        return self.objective.record()

    @property
    def default_sampler(self) -> str:
        """The sampler used when none is named: the recorded one, else the objective's own."""
        return self.sampling.sampler or self.objective.default_sampler

    def settings(self, base: SamplingSettings | None = None, **given: Any) -> SamplingSettings:
        """The settings a call samples with, resolved: the given fields (None: not given) over `base`
        (default: the pipeline's `sampling`), the sampler named and the guidance scale set.

        The base's steps go with the base's sampler: naming another sampler without steps takes that
        sampler's own default (None where it picks its own, as dopri5). So does the timestep shift of a
        base euler or heun: a sampler whose time grid no shift bends (dopri5, the SDEs) samples unshifted.
        """
        base = self.sampling if base is None else base
        given = {k: v for k, v in given.items() if v is not None}
        sampler = given.get("sampler") or base.sampler or self.objective.default_sampler
        if sampler != base.sampler:
            given.setdefault("steps", None)
            if base.sampler in TIME_SHIFT_SAMPLERS and sampler not in TIME_SHIFT_SAMPLERS:
                given.setdefault("timestep_shift", 1.0)
        s = base.replace(**{**given, "sampler": sampler})
        if s.guidance_scale is None:
            s = s.replace(guidance_scale=self.objective.default_guidance_scale)
        return s

    @property
    def num_classes(self) -> int:
        return int(getattr(self.model, "num_classes", 0) or 0)

    def resolve_labels(self, class_labels: ClassQuery | Sequence[ClassQuery]) -> list[int]:
        """Class indices for ids or names (names need `class_names`)."""
        queries = [class_labels] if isinstance(class_labels, int | str) else list(class_labels)
        if self.num_classes == 0:
            raise UserError("this model is unconditional; call it with class_labels=None and seeds")
        if self.class_names is not None:
            return self.class_names.resolve_all(queries)
        labels = []
        for q in queries:
            if isinstance(q, str) and not q.strip().lstrip("+-").isdigit():
                raise UserError(
                    f"this model has no class names; give class indices 0..{self.num_classes - 1}, not {q!r}"
                )
            label = int(q)
            if not 0 <= label < self.num_classes:
                raise UserError(
                    f"class index {label} is out of range; this model has classes 0..{self.num_classes - 1}"
                )
            labels.append(label)
        return labels

    def class_name(self, label: int) -> str:
        """The display name of a label ("golden retriever"), or "class 3" without names."""
        return self.class_names.name(label) if self.class_names is not None else f"class {label}"

    @property
    def samplers(self) -> tuple[str, ...]:
        """The names `sampler=` accepts for this pipeline's objective, in the order menus show them."""
        return self.objective.samplers

    def default_steps(self, sampler: str) -> int | None:
        """The step count `sampler` takes when `num_steps` is None: the recorded one for the recorded
        sampler, else the sampler's own (None: it picks its own, dopri5)."""
        if sampler == self.sampling.sampler and self.sampling.steps is not None:
            return self.sampling.steps
        return self.objective.default_steps(sampler)

    def initial_noise(self, seeds: Sequence[int]) -> Tensor:
        """x_T for each seed, (B, C, h, w) float32 on the device: what sampling with these seeds starts from."""
        return SeededNoise(seeds, self.device).randn(self.latent_shape)

    # ---- sampling ----

    @property
    def autocast(self) -> torch.dtype | None:
        """The autocast dtype of `precision` (torch.bfloat16, torch.float16) or None."""
        return AUTOCAST_DTYPES.get(self.precision)

    def model_fn(self, model: ModelFn | None = None) -> ModelFn:
        """The denoiser the samplers call, (x, t, y) -> float32 (B, C', h, w), under `precision`.

        The pipeline's DiT (`model` None) gets the cached fast denoiser, so CUDA graphs captured for
        a batch shape are reused by every later batch and call; fp16 and stand-ins run eagerly.
        """
        if model is not None and model is not self.model:
            return eager_denoiser(model, self.precision, self.device)
        if self.precision == "fp16":
            return eager_denoiser(self.model, self.precision, self.device)
        if self._denoiser is None:
            self._denoiser = fast_denoiser(self.model, self.precision, cuda_graph=self.cuda_graph)
        return self._denoiser

    @torch.no_grad()
    def sample_latents(
        self,
        labels: Sequence[int] | None,
        *,
        seeds: Sequence[int],
        noise: Tensor | None = None,
        guidance_scale: float | None = None,
        num_steps: int | None = None,
        sampler: str | None = None,
        guided_channels: str | None = None,
        guidance_interval: tuple[float, float] | None = None,
        eta: float | None = None,
        batch_size: int | None = None,
        progress: bool = True,
        model: ModelFn | None = None,
        null_label: int | None = None,
        settings: SamplingSettings | None = None,
    ) -> Tensor:
        """Sample latents (B, C, h, w) float32 for labels (B,) (None: unconditional) and seeds (B,).

        Args:
            labels: class indices; passed to the model as they are.
            seeds: one per sample; sample i depends only on seeds[i] (and noise[i]).
            noise: (B, C, h, w) starting noise; default `initial_noise(seeds)`.
            guidance_scale, num_steps, sampler, guided_channels, guidance_interval, eta: override the
                fields of `settings` (see `SamplingSettings`; `num_steps` is its `steps`); None: not given.
            batch_size: at most this many samples per forward pass (default: all).
            progress: show progress bars.
            model: a stand-in for the DiT (e.g. a label-mixing wrapper), called as model(x, t, y),
                eagerly under the pipeline's precision (no CUDA graph).
            null_label: the label meaning "no class" for guidance (default `model.null_class`).
            settings: the settings to sample with (default: the pipeline's `sampling`); resolved by
                `settings()`. Its seed is not used here: `seeds` are.
        """
        from ditkit.objectives.sampling import sample

        s = self.settings(
            settings,
            sampler=sampler,
            steps=num_steps,
            guidance_scale=guidance_scale,
            guided_channels=guided_channels,
            guidance_interval=guidance_interval,
            eta=eta,
        )
        seeds = [int(seed) for seed in seeds]
        if labels is not None and len(labels) != len(seeds):
            raise UserError(f"got {len(labels)} labels for {len(seeds)} seeds; give one seed per image")
        x_T = self.initial_noise(seeds) if noise is None else noise.to(self.device, torch.float32)
        if x_T.shape[0] != len(seeds) or tuple(x_T.shape[1:]) != self.latent_shape:
            raise UserError(
                f"noise has shape {tuple(x_T.shape)}, expected ({len(seeds)}, {', '.join(map(str, self.latent_shape))})"
            )
        conditional = labels is not None
        null = null_label if null_label is not None else getattr(self.model, "null_class", None)
        step = batch_size or len(seeds)
        out = []
        for start in range(0, len(seeds), step):
            part = slice(start, start + step)
            out.append(
                sample(
                    self.model_fn(model),
                    noise=x_T[part],
                    labels=list(labels[part]) if conditional else None,  # type: ignore[index]
                    objective=self.objective,
                    settings=s,
                    guidance_scale=s.guidance_scale if conditional else 1.0,
                    null_label=null,
                    seeds=seeds[part],
                    progress=progress,
                    device=self.device,
                )
            )
        latents = torch.cat(out)
        if not torch.isfinite(latents).all():
            hint = "check the checkpoint" if self.precision == "fp32" else "try --precision fp32"
            raise UserError(f"sampling produced NaN or inf in {self.precision}; {hint}")
        return latents

    @torch.no_grad()
    def decode(self, latents: Tensor, batch_size: int | None = None) -> Tensor:
        """Latents (B, C, h, w) -> images (B, image channels, H, W) in about [-1, 1], float32."""
        step = batch_size or latents.shape[0]
        return torch.cat(
            [self.first_stage.decode(latents[i : i + step]).float() for i in range(0, len(latents), step)]
        )

    def __call__(
        self,
        class_labels: ClassQuery | Sequence[ClassQuery] | None,
        guidance_scale: float | None = None,
        num_steps: int | None = None,
        sampler: str | None = None,
        seeds: Sequence[int] | None = None,
        *,
        guided_channels: str | None = None,
        guidance_interval: tuple[float, float] | None = None,
        eta: float | None = None,
        noise: Tensor | None = None,
        batch_size: int | None = None,
        output_type: OutputType = "uint8",
        progress: bool = True,
        settings: SamplingSettings | None = None,
    ) -> np.ndarray | Tensor | list[Any]:
        """Generate one image per class label.

        Args:
            class_labels: ids and/or names ("golden retriever", 207, "207"); None for an
                unconditional model (then one image per seed).
            guidance_scale: classifier-free guidance scale (1: none; default: the checkpoint's recorded
                scale, else 4 as DiT's figures).
            num_steps: sampling steps (default: the recorded ones, else the sampler's: 250 for ddpm, 50 for
                ddim, 20 for dpm++2m; flow: 50 euler, 25 heun, 250 sde-euler/sde-heun, adaptive dopri5).
            sampler: the objective's samplers: "ddpm" (default), "ddim" or "dpm++2m"; flow models:
                "dopri5" (default), "euler", "heun", "sde-euler" or "sde-heun".
            seeds: one per image (default 0, 1, ...); image i depends only on seeds[i].
            guided_channels, guidance_interval, eta, noise, batch_size, progress, settings: see
                `sample_latents`.
            output_type: "uint8" -> numpy (B, H, W, C); "tensor" -> float (B, C, H, W) in [-1, 1];
                "pil" -> list of PIL images.
        """
        if output_type not in ("uint8", "tensor", "pil"):
            raise UserError(f"output_type must be uint8, tensor or pil, got {output_type!r}")
        labels = None if class_labels is None else self.resolve_labels(class_labels)
        if labels is None and self.num_classes > 0:
            raise UserError(
                "this model is class-conditional; give classes by id or name (--class on the command line)"
            )
        if seeds is None:
            if labels is None:
                raise UserError("an unconditional model needs seeds=[...] (one image per seed)")
            seeds = list(range(len(labels)))
        latents = self.sample_latents(
            labels,
            seeds=seeds,
            noise=noise,
            guidance_scale=guidance_scale,
            num_steps=num_steps,
            sampler=sampler,
            guided_channels=guided_channels,
            guidance_interval=guidance_interval,
            eta=eta,
            batch_size=batch_size,
            progress=progress,
            settings=settings,
        )
        images = self.decode(latents, batch_size)
        if output_type == "tensor":
            return images
        array = images_to_uint8(images)
        return [to_pil(a) for a in array] if output_type == "pil" else array

    def to(self, device: torch.device | str) -> DiTPipeline:
        """Move the model and first stage (and re-resolve an "auto" precision); returns self."""
        self.device = torch.device(device)
        self.precision = resolve_precision(*self._asked, self.device)
        self._denoiser = None  # its CUDA graphs belong to the old device
        self.model.to(self.device)
        self.first_stage.to(self.device)
        return self
