"""The latent cache: round trip against the VAE, precision, resume, corrupt images, reading modes."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from test_data_fashion import make_fashion_idx
from test_data_imagefolder import make_image_folder
from test_first_stage import save_tiny_vae

from ditkit.data.build import build_dataset, open_image_source
from ditkit.data.cache_writer import prepare_latent_cache
from ditkit.data.imagefolder import ImageFolderDataset
from ditkit.data.latent_cache import LatentCacheDataset, read_manifest, sample_latent
from ditkit.errors import UserError
from ditkit.first_stage.base import IdentityFirstStage
from ditkit.first_stage.load import first_stage_from_dict, load_first_stage
from ditkit.first_stage.sd_vae import SD_VAE_LATENT_SCALE
from ditkit.seeding import item_generator


@pytest.fixture
def vae_setup(tmp_path):
    """A tiny VAE saved to disk, an image folder of 6 images at 16px, and the ditkit first stage."""
    vae = save_tiny_vae(tmp_path / "vae")
    root = make_image_folder(tmp_path / "images")
    return vae, root, load_first_stage(str(tmp_path / "vae"))


def _exact_posteriors(vae, root):
    """Per-image (mean, std) of both flips straight from diffusers, unbatched, float32."""
    images = ImageFolderDataset(root, 16, flip="none")
    out = []
    for i in range(len(images)):
        x = images[i][0][None]
        with torch.no_grad():
            posterior = vae.encode(torch.cat([x, x.flip(-1)])).latent_dist
        out.append((posterior.mean, posterior.std, images[i][1]))
    return out


def test_cache_round_trip_matches_the_vae(tmp_path, vae_setup):
    vae, root, first_stage = vae_setup
    source = ImageFolderDataset(root, 16)
    summary = prepare_latent_cache(
        source, first_stage, tmp_path / "cache", batch_size=4, shard_size=4, dtype="float32", progress=False
    )
    assert (summary.num_images, summary.num_shards, summary.num_skipped) == (6, 2, 0)
    cache = LatentCacheDataset(tmp_path / "cache", flip="none", posterior="mean")
    assert len(cache) == 6 and cache.latent_shape == (4, 8, 8) and cache.classes == ("cat", "dog")
    for i, (mean, std, label) in enumerate(_exact_posteriors(vae, root)):
        for flip in (0, 1):
            cached_mean, cached_std, cached_label = cache.read(i, flip)
            assert cached_label == label
            torch.testing.assert_close(cached_mean, mean[flip] * SD_VAE_LATENT_SCALE, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(cached_std, std[flip] * SD_VAE_LATENT_SCALE, rtol=1e-4, atol=1e-5)
            # Decoding the cached mean gives what the VAE decodes from its own posterior mean.
            decoded = first_stage.decode(cached_mean[None])
            with torch.no_grad():
                expected = vae.decode(mean[flip][None]).sample
            torch.testing.assert_close(decoded, expected, rtol=1e-4, atol=1e-4)
    assert json.loads((tmp_path / "cache" / "class_index.json").read_text()) == {"cat": 0, "dog": 1}


def test_float16_cache_is_within_half_precision_rounding(tmp_path, vae_setup):
    vae, root, first_stage = vae_setup
    prepare_latent_cache(ImageFolderDataset(root, 16), first_stage, tmp_path / "c16", progress=False)
    assert np.load(tmp_path / "c16" / "shard_00000.mean.npy").dtype == np.float16
    cache = LatentCacheDataset(tmp_path / "c16", flip="none")
    for i, (mean, std, _) in enumerate(_exact_posteriors(vae, root)):
        for flip in (0, 1):
            cached_mean, cached_std, _ = cache.read(i, flip)
            for cached, exact in ((cached_mean, mean[flip]), (cached_std, std[flip])):
                exact = exact * SD_VAE_LATENT_SCALE
                # float16 rounding: 2^-11 relative, plus float32 batching noise and fp16 subnormals.
                assert torch.all((cached - exact).abs() <= 2**-11 * exact.abs() + 1e-5)


def test_identity_cache_of_fashion_mnist(tmp_path):
    root = make_fashion_idx(tmp_path / "fm", n=7)
    source = open_image_source("fashion-mnist", data_dir=root, flip="none")
    summary = prepare_latent_cache(
        source, IdentityFirstStage(1), tmp_path / "cache", dtype="float32", progress=False
    )
    assert summary.num_images == 7 and summary.encoded_now == 7
    assert not list((tmp_path / "cache").glob("*.std.npy"))  # the identity's std is zero: not stored
    cache = LatentCacheDataset(tmp_path / "cache", flip="none")
    for i in range(7):
        x, label = cache[i]
        torch.testing.assert_close(x, source[i][0])
        assert label == source.label(i)
        torch.testing.assert_close(cache.read(i, 1)[0], source[i][0].flip(-1))
        assert torch.all(cache.read(i, 0)[1] == 0)


def test_flip_modes_and_posterior_sampling(tmp_path, vae_setup):
    _, root, first_stage = vae_setup
    prepare_latent_cache(ImageFolderDataset(root, 16), first_stage, tmp_path / "cache", progress=False)
    both = LatentCacheDataset(tmp_path / "cache", flip="both", posterior="mean")
    assert len(both) == 12
    torch.testing.assert_close(both[5][0], both.read(2, 1)[0])
    sampled = LatentCacheDataset(tmp_path / "cache", seed=4)
    again = LatentCacheDataset(tmp_path / "cache", seed=4)
    x, _ = sampled[3]
    torch.testing.assert_close(x, again[3][0])  # same (seed, epoch, index): same latent
    # It is mean + std * noise of the stored flip picked by the item's own stream.
    generator = item_generator(4, 0, 3)
    flip = int(torch.randint(0, 2, (1,), generator=generator).item())
    mean, std, _ = sampled.read(3, flip)
    torch.testing.assert_close(x, sample_latent(mean, std, generator))
    assert not torch.allclose(x, mean)
    sampled.set_epoch(1)
    assert not torch.equal(sampled[3][0], x)
    unflipped = both[0][0]  # item 0 of "both" is image 0 unflipped
    seeds = [
        LatentCacheDataset(tmp_path / "cache", flip="random", posterior="mean", seed=s) for s in range(12)
    ]
    flips = {not torch.allclose(dataset[0][0], unflipped) for dataset in seeds}
    assert flips == {False, True}  # both flips occur over 12 seeds


def test_interrupted_prepare_resumes_without_recomputing(tmp_path):
    root = make_fashion_idx(tmp_path / "fm", n=12)
    source = open_image_source("fashion-mnist", data_dir=root, flip="none")

    class Counting(IdentityFirstStage):
        def __init__(self, fail_on: int | None = None) -> None:
            super().__init__(1)
            self.seen: list[int] = []
            self.fail_on = fail_on

        def encode(self, images):
            if self.fail_on is not None and len(self.seen) >= self.fail_on:
                raise KeyboardInterrupt
            self.seen.append(len(images) // 2)
            return super().encode(images)

    options = dict(batch_size=5, shard_size=5, dtype="float32", progress=False)
    with pytest.raises(KeyboardInterrupt):
        prepare_latent_cache(source, Counting(fail_on=1), tmp_path / "cache", **options)
    manifest = read_manifest(tmp_path / "cache")
    assert [s["name"] for s in manifest["shards"]] == ["shard_00000"] and not manifest["complete"]
    assert not list((tmp_path / "cache").glob(".*.tmp"))
    with pytest.raises(UserError, match="incomplete"):
        LatentCacheDataset(tmp_path / "cache")

    resumed = Counting()
    summary = prepare_latent_cache(source, resumed, tmp_path / "cache", **options)
    assert resumed.seen == [5, 2] and summary.encoded_now == 7  # shard 0 was not encoded again
    prepare_latent_cache(source, IdentityFirstStage(1), tmp_path / "fresh", **options)
    for name in ("shard_00000", "shard_00001", "shard_00002"):
        for array in ("mean", "labels", "index"):
            np.testing.assert_array_equal(
                np.load(tmp_path / "cache" / f"{name}.{array}.npy"),
                np.load(tmp_path / "fresh" / f"{name}.{array}.npy"),
            )
    again = prepare_latent_cache(source, Counting(fail_on=0), tmp_path / "cache", **options)
    assert again.encoded_now == 0 and again.num_images == 12  # complete: nothing to do


def test_changed_settings_are_refused_unless_overwrite(tmp_path):
    root = make_fashion_idx(tmp_path / "fm", n=6)
    small = open_image_source("fashion-mnist", data_dir=root, image_size=28)
    prepare_latent_cache(small, IdentityFirstStage(1), tmp_path / "cache", progress=False)
    big = open_image_source("fashion-mnist", data_dir=root, image_size=32)
    with pytest.raises(UserError, match="image_size.*--overwrite"):
        prepare_latent_cache(big, IdentityFirstStage(1), tmp_path / "cache", progress=False)
    with pytest.raises(UserError, match="channels"):
        prepare_latent_cache(big, IdentityFirstStage(3), tmp_path / "other", progress=False)
    prepare_latent_cache(big, IdentityFirstStage(1), tmp_path / "cache", overwrite=True, progress=False)
    assert LatentCacheDataset(tmp_path / "cache").image_size == 32


def test_corrupt_images_are_skipped_and_listed(tmp_path):
    root = make_image_folder(tmp_path / "images", corrupt=True)
    source = ImageFolderDataset(root, 16)
    summary = prepare_latent_cache(
        source, IdentityFirstStage(3), tmp_path / "cache", shard_size=4, progress=False
    )
    assert summary.num_skipped == 2 and summary.num_images == 6
    assert sorted(e["item"].rsplit("/", 1)[1] for e in summary.skipped) == ["1a_truncated.jpg", "1b_text.png"]
    manifest = read_manifest(tmp_path / "cache")
    assert manifest["num_skipped"] == 2 and manifest["complete"]
    cache = LatentCacheDataset(tmp_path / "cache")
    assert len(cache) == 6
    indices = np.concatenate([np.load(p) for p in sorted((tmp_path / "cache").glob("*.index.npy"))])
    names = [p.name for p, _ in source.samples]
    assert [names[i] for i in indices if names[i].startswith("1")] == ["1.PNG", "1.PNG"]


def test_damaged_cache_is_reported_and_repaired(tmp_path):
    root = make_fashion_idx(tmp_path / "fm", n=6)
    source = open_image_source("fashion-mnist", data_dir=root)
    prepare_latent_cache(source, IdentityFirstStage(1), tmp_path / "cache", shard_size=4, progress=False)
    (tmp_path / "cache" / "shard_00001.labels.npy").unlink()
    with pytest.raises(UserError, match="damaged"):
        LatentCacheDataset(tmp_path / "cache")
    summary = prepare_latent_cache(
        source, IdentityFirstStage(1), tmp_path / "cache", shard_size=4, progress=False
    )
    assert summary.encoded_now == 2 and len(LatentCacheDataset(tmp_path / "cache")) == 6


def test_build_dataset_on_a_cache(tmp_path, vae_setup):
    _, root, first_stage = vae_setup
    prepare_latent_cache(ImageFolderDataset(root, 16), first_stage, tmp_path / "cache", progress=False)
    dataset, info = build_dataset(str(tmp_path / "cache"))
    assert info.kind == "latent-cache" and info.class_names == ("cat", "dog")
    assert (info.channels, info.input_size, info.image_size, info.num_items) == (4, 8, 16, 6)
    assert dataset[0][0].shape == (4, 8, 8)
    rebuilt = first_stage_from_dict(info.first_stage or {})
    assert rebuilt.decode(dataset[0][0][None]).shape == (1, 3, 16, 16)
    with pytest.raises(UserError, match="16px"):
        build_dataset(str(tmp_path / "cache"), image_size=32)
    with pytest.raises(UserError, match="already a latent cache"):
        open_image_source(str(tmp_path / "cache"))


def test_all_images_unreadable_is_an_error(tmp_path):
    (tmp_path / "images" / "a").mkdir(parents=True)
    (tmp_path / "images" / "a" / "x.jpg").write_text("not a jpeg")
    source = ImageFolderDataset(tmp_path / "images", 8)
    with pytest.raises(UserError, match="none of the 1 images"):
        prepare_latent_cache(source, IdentityFirstStage(3), tmp_path / "cache", progress=False)
    assert not read_manifest(tmp_path / "cache")["complete"]


def test_cache_dataset_pickles_without_its_memory_maps(tmp_path):
    root = make_fashion_idx(tmp_path / "fm", n=5)
    source = open_image_source("fashion-mnist", data_dir=root)
    prepare_latent_cache(source, IdentityFirstStage(1), tmp_path / "cache", progress=False)
    cache = LatentCacheDataset(tmp_path / "cache", seed=2)
    payload = pickle.dumps(cache)
    assert len(payload) < 5 * 2 * 32 * 32 * 2  # smaller than the float16 data it points to
    clone = pickle.loads(payload)
    torch.testing.assert_close(clone[4][0], cache[4][0])
