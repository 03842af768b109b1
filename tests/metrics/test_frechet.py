"""Fréchet distances: the closed form, the library-trained feature classifier and its cache, the
`evaluate` module loaded by path offline, and FID with a scripted stand-in Inception network."""

import os
import socket

import numpy as np
import pytest
import scipy.linalg
import torch
from sklearn.datasets import load_digits

from hf_diffusionblocks.metrics import (
    FeatureClassifier,
    FeatureClassifierTrainingArguments,
    FrechetClassifierDistance,
    InceptionFrechetDistance,
    available_metrics,
    feature_statistics,
    frechet_distance,
    frechet_distance_from_features,
    load_metric,
    load_or_train_feature_classifier,
    metric_path,
)
from hf_diffusionblocks.metrics import feature_classifier as feature_classifier_module
from hf_diffusionblocks.metrics.feature_classifier import SETTINGS_NAME, WEIGHTS_NAME


# ---------------------------------------------------------------------------------------------
# The formula


def test_identical_statistics_give_zero():
    rng = np.random.default_rng(0)
    mean, covariance = feature_statistics(rng.normal(size=(500, 16)))
    assert frechet_distance(mean, covariance, mean, covariance) == pytest.approx(0.0, abs=1e-8)


def test_diagonal_gaussians_match_closed_form():
    mean_a, mean_b = np.array([0.0, 1.0, -2.0]), np.array([0.5, 1.0, 3.0])
    variance_a, variance_b = np.array([1.0, 4.0, 0.25]), np.array([2.0, 1.0, 0.25])
    expected = np.sum((mean_a - mean_b) ** 2) + np.sum(
        variance_a + variance_b - 2 * np.sqrt(variance_a * variance_b)
    )
    distance = frechet_distance(mean_a, np.diag(variance_a), mean_b, np.diag(variance_b))
    assert distance == pytest.approx(expected, rel=1e-10)


def test_one_dimensional_gaussians_accept_scalars():
    # (μ1 − μ2)² + σ1² + σ2² − 2σ1σ2 = (1 − 4)² + (2 − 3)²
    assert frechet_distance(1.0, 4.0, 4.0, 9.0) == pytest.approx(10.0)


def test_matches_sqrtm_formula_and_is_symmetric():
    rng = np.random.default_rng(1)
    stats_a = feature_statistics(rng.normal(size=(300, 12)) @ rng.normal(size=(12, 12)))
    stats_b = feature_statistics(rng.normal(size=(300, 12)) * 2 + 0.3)
    reference = (
        np.sum((stats_a[0] - stats_b[0]) ** 2)
        + np.trace(stats_a[1])
        + np.trace(stats_b[1])
        - 2 * np.trace(scipy.linalg.sqrtm(stats_a[1] @ stats_b[1]).real)
    )
    forward, backward = frechet_distance(*stats_a, *stats_b), frechet_distance(*stats_b, *stats_a)
    assert forward == pytest.approx(reference, rel=1e-8)
    assert forward == pytest.approx(backward, rel=1e-10)


def test_rank_deficient_covariances_match_gram_form():
    # N < D: Tr((Σ_a Σ_b)^½) equals the nuclear norm of X_a X_bᵀ / (N − 1) for centred X.
    rng = np.random.default_rng(2)
    features_a, features_b = rng.normal(size=(20, 50)), rng.normal(size=(20, 50)) + 0.5
    with pytest.warns(UserWarning, match="degenerate"):
        stats_a, stats_b = feature_statistics(features_a), feature_statistics(features_b)
    centred_a, centred_b = features_a - features_a.mean(0), features_b - features_b.mean(0)
    trace_sqrt = np.linalg.svd(centred_a @ centred_b.T, compute_uv=False).sum() / 19
    expected = (
        np.sum((stats_a[0] - stats_b[0]) ** 2) + np.trace(stats_a[1]) + np.trace(stats_b[1]) - 2 * trace_sqrt
    )
    assert frechet_distance(*stats_a, *stats_b) == pytest.approx(expected, rel=1e-6)
    with pytest.warns(UserWarning, match="degenerate"):
        assert frechet_distance_from_features(features_a, features_b) == pytest.approx(expected, rel=1e-10)


def test_feature_distance_agrees_with_statistics_distance():
    rng = np.random.default_rng(4)
    features_a, features_b = rng.normal(size=(40, 6)), rng.normal(size=(30, 6)) * 1.5
    expected = frechet_distance(*feature_statistics(features_a), *feature_statistics(features_b))
    assert frechet_distance_from_features(features_a, features_b) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="different dimensions"):
        frechet_distance_from_features(features_a, features_b[:, :5])


def test_shifted_data_is_positive_and_grows_with_the_shift():
    rng = np.random.default_rng(3)
    features = rng.normal(size=(400, 8))
    stats = feature_statistics(features)
    small, large = (frechet_distance(*stats, *feature_statistics(features + shift)) for shift in (0.5, 2.0))
    assert 0.0 < small < large
    assert small == pytest.approx(8 * 0.25)  # a pure shift only moves the mean: ||δ||² = D·shift²


def test_too_few_samples_and_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="at least 2 samples"):
        feature_statistics(np.zeros((1, 4)))
    with pytest.raises(ValueError, match=r"shape \(N, D\)"):
        feature_statistics(np.zeros((3, 4, 5)))
    with pytest.raises(ValueError, match="different dimensions"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="covariance_a"):
        frechet_distance(np.zeros(2), np.eye(3), np.zeros(2), np.eye(2))


# ---------------------------------------------------------------------------------------------
# The feature classifier on digits


@pytest.fixture(scope="module")
def digits():
    """Digits in [-1, 1], (N, 1, 8, 8): 1,197 training images and 600 test images."""
    data = load_digits()
    images = (data.images / 16 * 2 - 1).astype(np.float32).reshape(-1, 1, 8, 8)
    order = np.random.default_rng(0).permutation(len(images))
    train, test = order[:1197], order[1197:]
    return images[train], data.target[train], images[test], data.target[test]


@pytest.fixture(scope="module")
def classifier_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("feature_classifiers")


@pytest.fixture(scope="module")
def classifier(digits, classifier_cache):
    train_images, train_labels, _, _ = digits
    return load_or_train_feature_classifier(train_images, train_labels, 10, cache_dir=classifier_cache)


def test_classifier_is_accurate_on_held_out_digits(classifier, digits):
    _, _, test_images, test_labels = digits
    assert classifier.held_out_accuracy > 0.9
    with torch.no_grad():
        predictions = classifier(torch.from_numpy(test_images)).argmax(dim=-1).numpy()
    assert (predictions == test_labels).mean() > 0.9


def test_cache_hit_loads_without_training(classifier, digits, classifier_cache, monkeypatch):
    train_images, train_labels, _, _ = digits
    weights = os.path.join(classifier.name_or_path, WEIGHTS_NAME)
    assert os.path.dirname(classifier.name_or_path) == str(classifier_cache)
    mtime = os.stat(weights).st_mtime_ns

    def refuse_to_train(*args, **kwargs):
        raise AssertionError("a cache hit must not train")

    monkeypatch.setattr(feature_classifier_module, "train_feature_classifier", refuse_to_train)
    cached = load_or_train_feature_classifier(train_images, train_labels, 10, cache_dir=classifier_cache)
    assert os.stat(weights).st_mtime_ns == mtime
    assert cached.held_out_accuracy == classifier.held_out_accuracy
    for name, tensor in classifier.state_dict().items():
        assert torch.equal(cached.state_dict()[name], tensor), name
    assert not [name for name in os.listdir(classifier.name_or_path) if name.endswith(".tmp")]


def test_cache_key_depends_on_data_and_settings(digits, classifier, classifier_cache, monkeypatch):
    train_images, train_labels, _, _ = digits
    fingerprint = feature_classifier_module.dataset_fingerprint
    arguments = FeatureClassifierTrainingArguments()
    key = fingerprint(train_images, train_labels, 10, arguments)
    assert os.path.basename(classifier.name_or_path) == key
    assert fingerprint(train_images[::-1].copy(), train_labels[::-1].copy(), 10, arguments) != key
    assert fingerprint(train_images, train_labels, 10, FeatureClassifierTrainingArguments(seed=1)) != key
    # The default cache folder follows HF_DIFFUSIONBLOCKS_CACHE.
    monkeypatch.setenv("HF_DIFFUSIONBLOCKS_CACHE", str(classifier_cache / "root"))
    assert feature_classifier_module.default_cache_dir() == classifier_cache / "root" / "feature_classifiers"


def test_training_is_deterministic_given_the_seed(digits):
    train_images, train_labels, _, _ = digits
    arguments = FeatureClassifierTrainingArguments(num_epochs=1, seed=5)
    threads = torch.get_num_threads()
    first = feature_classifier_module.train_feature_classifier(
        train_images[:300], train_labels[:300], 10, arguments
    )
    second = feature_classifier_module.train_feature_classifier(
        train_images[:300], train_labels[:300], 10, arguments
    )
    for name, tensor in first.state_dict().items():
        assert torch.equal(second.state_dict()[name], tensor), name
    assert torch.get_num_threads() == threads  # training's own thread count is restored afterwards


def test_save_and_reload_is_exact(classifier, tmp_path):
    classifier.save_pretrained(tmp_path)
    reloaded = FeatureClassifier.from_pretrained(tmp_path)
    assert reloaded.config == classifier.config
    images = torch.rand(5, 1, 8, 8) * 2 - 1
    with torch.no_grad():
        assert torch.equal(reloaded.extract_features(images), classifier.extract_features(images))
    with pytest.raises(FileNotFoundError, match=SETTINGS_NAME):
        FeatureClassifier.from_pretrained(tmp_path / "missing")


def test_real_halves_are_much_closer_than_noise_or_blur(classifier, digits):
    _, _, test_images, _ = digits
    metric = FrechetClassifierDistance(classifier)
    assert metric.classifier_accuracy == classifier.held_out_accuracy
    halves = metric.compute(test_images[:300], test_images[300:])
    noise = np.random.default_rng(0).uniform(-1, 1, size=test_images.shape).astype(np.float32)
    blurred = torch.nn.functional.avg_pool2d(torch.from_numpy(test_images), 3, 1, 1, count_include_pad=False)
    assert metric.compute(test_images, noise) > 4 * halves
    assert metric.compute(test_images, blurred) > 3 * halves


def test_classifier_distance_rejects_mismatched_images(classifier):
    metric = FrechetClassifierDistance(classifier)
    with pytest.raises(ValueError, match="generated_images"):
        metric.compute(np.zeros((4, 1, 8, 8)), np.zeros((4, 1, 16, 16)))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        metric.compute(np.zeros((4, 8, 8)), np.zeros((4, 1, 8, 8)))


# ---------------------------------------------------------------------------------------------
# The evaluate module


def test_evaluate_module_loads_offline_and_matches_python_api(classifier, digits, tmp_path, monkeypatch):
    import evaluate.config

    _, _, test_images, _ = digits
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")
    monkeypatch.setattr(evaluate.config, "HF_EVALUATE_OFFLINE", True)

    def no_network(*args, **kwargs):
        raise OSError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    assert "frechet_classifier_distance" in available_metrics()
    assert os.path.isfile(
        os.path.join(metric_path("frechet_classifier_distance"), "frechet_classifier_distance.py")
    )
    metric = load_metric("frechet_classifier_distance", cache_dir=str(tmp_path))
    generated = test_images[300:] * 0.8  # a lower-contrast "generator"
    result = metric.compute(
        predictions=generated, references=test_images[:300], classifier_path=classifier.name_or_path
    )
    expected = FrechetClassifierDistance(classifier).compute(test_images[:300], generated)
    assert result["frechet_classifier_distance"] == pytest.approx(expected, rel=1e-6)
    assert result["classifier_accuracy"] == classifier.held_out_accuracy
    with pytest.raises(ValueError, match="Unknown metric"):
        load_metric("no_such_metric")


# ---------------------------------------------------------------------------------------------
# FID with a stand-in TorchScript network


class _StandInInception(torch.nn.Module):
    """Pools (N, 3, 299, 299) to (N, 3, 4, 4) and projects to `feature_dim` with fixed weights."""

    def __init__(self, feature_dim: int = 2048):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.projection = torch.nn.Parameter(torch.randn(48, feature_dim, generator=generator) / 48**0.5)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        assert images.shape[1:] == (3, 299, 299)
        pooled = torch.nn.functional.adaptive_avg_pool2d(images / 255.0, 4).flatten(1)
        return torch.tanh(pooled @ self.projection)


@pytest.fixture(scope="module")
def stand_in_network(tmp_path_factory):
    path = tmp_path_factory.mktemp("inception") / "stand_in_inception.pt"
    torch.jit.save(torch.jit.script(_StandInInception()), str(path))
    return path


def test_inception_distance_with_stand_in_network(stand_in_network):
    generator = torch.Generator().manual_seed(0)
    grayscale = torch.rand(6, 1, 16, 16, generator=generator) * 2 - 1
    metric = InceptionFrechetDistance(stand_in_network)
    features = metric.features(grayscale)
    assert features.shape == (6, 2048)
    # One channel is repeated to three; inputs reach the network in [0, 255].
    np.testing.assert_allclose(features, metric.features(grayscale.expand(-1, 3, -1, -1)), atol=1e-6)
    scaled = InceptionFrechetDistance(stand_in_network, input_range="-1_1").features(grayscale)
    assert not np.allclose(scaled, features)
    # 6 samples in 2048 dims: degenerate, and said so. (One 2048-d distance costs seconds on 2 cores.)
    with pytest.warns(UserWarning, match="degenerate"):
        shifted = metric.compute(grayscale, (grayscale + 0.5).clamp(-1, 1))
    assert shifted > 1e-3


def test_inception_distance_rejects_bad_networks_and_inputs(tmp_path, stand_in_network):
    missing = tmp_path / "no_such_inception.pt"
    with pytest.raises(FileNotFoundError, match="no_such_inception.pt"):
        InceptionFrechetDistance(missing)
    wrong_path = tmp_path / "wrong_dims.pt"
    torch.jit.save(torch.jit.script(_StandInInception(feature_dim=1000)), str(wrong_path))
    with pytest.raises(ValueError, match=r"\(2, 2048\); got \(2, 1000\)"):
        InceptionFrechetDistance(wrong_path).features(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="input_range"):
        InceptionFrechetDistance(stand_in_network, input_range="0_1")
    with pytest.raises(ValueError, match="1 or 3 channels"):
        InceptionFrechetDistance(stand_in_network).features(torch.zeros(2, 2, 8, 8))
