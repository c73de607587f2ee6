"""The shipped Fashion-MNIST classifier and the offline metric built on it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import fashion_mnist_missing
from safetensors.torch import save_file

from ditkit.cli.main import main
from ditkit.data.fashion_mnist import load_fashion_mnist
from ditkit.errors import UserError
from ditkit.evaluation.fmnist_classifier import (
    ARCHITECTURE,
    FashionMNISTClassifier,
    classify,
    default_weights_path,
    load_fmnist_classifier,
    score_fmnist_samples,
    to_classifier_input,
)


@pytest.fixture(scope="module")
def fmnist():
    try:
        train, train_labels = load_fashion_mnist(split="train")
        test, test_labels = load_fashion_mnist(split="test")
    except UserError as err:
        fashion_mnist_missing(str(err))
    return train, train_labels, test, test_labels


@pytest.fixture(scope="module")
def classifier():
    return load_fmnist_classifier()


def test_shipped_weights_are_small_and_describe_themselves(classifier):
    assert default_weights_path().stat().st_size < 2 * 1024 * 1024
    assert classifier.metadata["architecture"] == ARCHITECTURE
    assert float(classifier.metadata["test_accuracy"]) >= 0.90
    assert not classifier.training
    assert 100_000 < sum(p.numel() for p in classifier.parameters()) < 300_000


def test_classifier_labels_real_test_images(classifier, fmnist):
    _, _, test, test_labels = fmnist
    result = score_fmnist_samples(
        test[:2000], test_labels[:2000], ref_images=test[2000:4000], classifier=classifier
    )
    assert result["agreement"] >= 0.88
    assert set(result["per_class_agreement"]) == {
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"
    }  # fmt: skip
    assert result["num_samples"] == 2000 and result["num_reference"] == 2000


def test_padded_grey_and_rgb_inputs_give_identical_features(classifier, fmnist):
    _, _, test, _ = fmnist
    x = test[:64]
    padded = np.pad(x, ((0, 0), (2, 2), (2, 2)))  # (64, 32, 32), as a 32x32 demo pads
    ref_feats, ref_logits = classify(classifier, x)
    for variant in (padded, padded[..., None], np.repeat(padded[..., None], 3, axis=-1), x[..., None]):
        feats, logits = classify(classifier, variant)
        assert np.array_equal(feats, ref_feats) and np.array_equal(logits, ref_logits)
    assert ref_feats.shape == (64, 128) and ref_logits.shape == (64, 10)


@pytest.mark.slow
def test_frechet_distance_separates_real_from_noise(classifier, fmnist):
    train, _, test, _ = fmnist
    real = score_fmnist_samples(train[:2000], ref_images=test[:4000], classifier=classifier)
    noise_images = np.random.default_rng(0).integers(0, 256, (2000, 28, 28), dtype=np.uint8)
    noise = score_fmnist_samples(noise_images, ref_images=test[:4000], classifier=classifier)
    assert "agreement" not in real
    # Measured with the shipped weights: about 0.3 for 2,000 train vs 10,000 test images, about 117 for noise.
    assert real["frechet_distance"] < 1.0 and noise["frechet_distance"] > 50


def test_bad_inputs_are_clear_errors(classifier):
    with pytest.raises(UserError, match="28|32"):
        to_classifier_input(np.zeros((4, 30, 30), np.uint8))
    with pytest.raises(UserError, match="uint8"):
        to_classifier_input(np.zeros((4, 28, 28), np.float32))
    x = np.zeros((4, 28, 28), np.uint8)
    with pytest.raises(UserError, match="3 labels for 4 images"):
        score_fmnist_samples(x, np.zeros(3, np.int64), ref_images=x, classifier=classifier)
    with pytest.raises(UserError, match="0..9"):
        score_fmnist_samples(x, np.array([0, 1, 2, 10]), ref_images=x, classifier=classifier)


def test_weight_file_errors(tmp_path):
    with pytest.raises(UserError, match="train_fmnist_classifier"):
        load_fmnist_classifier(tmp_path / "absent.safetensors")
    state = {k: v.contiguous() for k, v in FashionMNISTClassifier().state_dict().items()}
    save_file(state, str(tmp_path / "other.safetensors"), metadata={"architecture": "something-else"})
    with pytest.raises(UserError, match="not the ditkit-fmnist-cnn-v1"):
        load_fmnist_classifier(tmp_path / "other.safetensors")
    state["head.weight"] = torch.zeros(11, 128)
    save_file(state, str(tmp_path / "bad.safetensors"), metadata={"architecture": ARCHITECTURE})
    with pytest.raises(UserError, match="does not match"):
        load_fmnist_classifier(tmp_path / "bad.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(UserError, match="not a readable safetensors"):
        load_fmnist_classifier(tmp_path / "junk.safetensors")


@pytest.mark.slow
@pytest.mark.parametrize("label_key", ["labels", None])
def test_cli_fashion_mnist_metric(tmp_path, capsys, fmnist, label_key):
    _, _, test, test_labels = fmnist
    images = np.repeat(np.pad(test[:300], ((0, 0), (2, 2), (2, 2)))[..., None], 3, axis=-1)  # ADM-style RGB
    arrays = {"arr_0": images} if label_key is None else {"arr_0": images, label_key: test_labels[:300]}
    np.savez(tmp_path / "samples.npz", **arrays)
    assert main(["evaluate", str(tmp_path / "samples.npz"), "--fashion-mnist", "--device", "cpu"]) == 0
    result = json.loads((tmp_path / "samples.metrics.json").read_text())["fashion_mnist"]
    printed = capsys.readouterr().out
    assert result["num_samples"] == 300 and result["num_reference"] == 10_000
    assert f"{result['frechet_distance']:.4f}" in printed
    if label_key is None:
        assert "agreement" not in result and "no labels" in printed
    else:
        assert result["agreement"] >= 0.85
