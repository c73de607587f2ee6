"""FID, sFID, Inception Score, precision and recall of a sample batch against a reference batch.

The numbers follow the ADM evaluator (openai/guided-diffusion `evaluations/evaluator.py`), which
the DiT paper used: the TF FID Inception (see `inception.py`), statistics and matrix square root in
float64, IS over splits of 5,000, precision/recall with k = 3 against 10,000 reference images.
Images stream through the network in batches; only the 2048-d pool features (for precision/recall)
and the 1008 logits (for IS) of the samples are kept, about 12 KB per image.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ditkit.distributed import pick_device
from ditkit.errors import UserError
from ditkit.evaluation.frechet import FeatureStats, frechet_distance
from ditkit.evaluation.inception import POOL_DIM, SPATIAL_DIM
from ditkit.evaluation.inception_score import inception_score
from ditkit.evaluation.npz_io import NpzImages, read_reference_stats
from ditkit.evaluation.precision_recall import PR_REFERENCE_SIZE, precision_recall

# ADM's evaluator batch size.
DEFAULT_BATCH_SIZE = 64


@dataclass
class Activations:
    """What is kept from one pass of a batch of images through Inception."""

    pool_stats: FeatureStats  # pool_3, (2048,)
    spatial_stats: FeatureStats  # mixed_6/conv[..., :7], (2023,)
    pool: np.ndarray  # float32 (min(N, keep_pool), 2048)
    logits: np.ndarray | None  # float32 (N, 1008), if asked for


@contextlib.contextmanager
def no_tf32() -> Iterator[None]:
    """Full float32 matmuls and convolutions on Ampere+ GPUs (TF32 would perturb the features)."""
    prev = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = prev


@torch.inference_mode()
def compute_activations(
    model: torch.nn.Module,
    batches: Iterable[np.ndarray],
    total: int,
    keep_pool: int | None = None,
    keep_logits: bool = False,
    progress: bool = True,
    desc: str = "inception",
) -> Activations:
    """Stream image batches through Inception, accumulating float64 statistics.

    Args:
        model: the FID Inception (its device is used).
        batches: uint8 (B, H, W, 3) image batches.
        total: the number of images, for the progress bar.
        keep_pool: keep the pool features of the first `keep_pool` images (all if None).
        keep_logits: keep the logits of every image.
        progress: show a tqdm bar.
        desc: the bar's label.
    """
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    acts = Activations(
        FeatureStats(POOL_DIM), FeatureStats(SPATIAL_DIM), np.empty((0, POOL_DIM), np.float32), None
    )
    pools, logits, kept = [], [], 0
    bar = tqdm(total=total, desc=desc, unit="img", disable=not progress)
    with no_tf32(), bar:
        for batch in batches:
            out = model(torch.from_numpy(np.array(batch)).to(device))  # uint8 (B, H, W, 3) in
            if not torch.isfinite(out["pool"]).all():
                raise UserError("Inception produced NaN/inf features; check the weights file")
            acts.pool_stats.update(out["pool"])
            acts.spatial_stats.update(out["spatial"])
            if keep_pool is None or kept < keep_pool:
                take = len(batch) if keep_pool is None else min(len(batch), keep_pool - kept)
                pools.append(out["pool"][:take].cpu().numpy())
                kept += take
            if keep_logits:
                logits.append(out["logits"].cpu().numpy())
            bar.update(len(batch))
    if pools:
        acts.pool = np.concatenate(pools)
    if keep_logits:
        acts.logits = np.concatenate(logits)
    return acts


def evaluate_npz(
    samples: str | os.PathLike[str],
    reference: str | os.PathLike[str],
    inception: torch.nn.Module | str | os.PathLike[str] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str | None = None,
    progress: bool = True,
    frechet_method: str = "sqrtm",
) -> dict[str, float | int]:
    """FID, sFID, IS, precision and recall of a sample batch against an ADM reference batch.

    Args:
        samples: `.npz` whose `arr_0` holds uint8 (N, H, W, 3) samples (grey (N, H, W[, 1]) works).
        reference: `.npz` in ADM's layout: `arr_0` images, optionally `mu`, `sigma`, `mu_s`, `sigma_s`.
            Without them the statistics are those of all of `arr_0`. Precision/recall use the first
            10,000 images of `arr_0`.
        inception: a loaded network, a weights path, or None for the cached/downloaded weights.
        batch_size: images per forward pass.
        device: "cuda", "cpu", ...; the GPU when there is one by default.
        progress: show progress bars.
        frechet_method: "sqrtm" (ADM's) or "eigh" (same value up to rounding, faster on CPU).

    Returns:
        {"fid", "sfid", "inception_score", "precision", "recall", "num_samples", "num_reference"}.
    """
    from ditkit.evaluation.inception_weights import load_inception

    ref_images, sample_images = NpzImages(reference), NpzImages(samples)  # check the files first
    if len(sample_images) < 2:
        raise UserError(f"{samples} holds 1 image; FID needs at least 2 (the paper uses 50,000)")
    ref_stats = read_reference_stats(reference)
    device = str(pick_device(device, local_rank=None))
    model = inception if isinstance(inception, torch.nn.Module) else load_inception(inception, device=device)
    model = model.to(device)

    # With precomputed statistics only the precision/recall images need a pass.
    ref_count = min(len(ref_images), PR_REFERENCE_SIZE) if ref_stats is not None else len(ref_images)
    ref_batches = ref_images.batches(batch_size, limit=ref_count)
    ref = compute_activations(
        model, ref_batches, ref_count, keep_pool=PR_REFERENCE_SIZE, progress=progress, desc="reference"
    )
    if ref_stats is None:
        (mu, sigma), (mu_s, sigma_s) = ref.pool_stats.mean_cov(), ref.spatial_stats.mean_cov()
        ref_stats = {"mu": mu, "sigma": sigma, "mu_s": mu_s, "sigma_s": sigma_s}
    sam = compute_activations(
        model,
        sample_images.batches(batch_size),
        len(sample_images),
        keep_logits=True,
        progress=progress,
        desc="samples",
    )
    assert sam.logits is not None
    mu, sigma = sam.pool_stats.mean_cov()
    mu_s, sigma_s = sam.spatial_stats.mean_cov()
    precision, recall = precision_recall(ref.pool, sam.pool, device=device)
    return {
        "fid": frechet_distance(mu, sigma, ref_stats["mu"], ref_stats["sigma"], method=frechet_method),
        "sfid": frechet_distance(
            mu_s, sigma_s, ref_stats["mu_s"], ref_stats["sigma_s"], method=frechet_method
        ),
        "inception_score": inception_score(sam.logits),
        "precision": precision,
        "recall": recall,
        "num_samples": len(sample_images),
        "num_reference": len(ref_images),
    }
