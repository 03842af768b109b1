"""Fréchet distances between image sets: the Gaussian formula, feature statistics, and two feature
spaces: a classifier the library trains itself (`FrechetClassifierDistance`, offline) and a
user-supplied TorchScript Inception network (`InceptionFrechetDistance`, the usual FID). The
standard FID network itself, with cached reference statistics, is `FrechetInceptionDistance`
(metrics/fid.py), built on the latter.

The Fréchet (2-Wasserstein) distance between N(μ_a, Σ_a) and N(μ_b, Σ_b) is

    d² = ||μ_a − μ_b||² + Tr(Σ_a) + Tr(Σ_b) − 2·Tr((Σ_a Σ_b)^{1/2}).

Tr((Σ_a Σ_b)^{1/2}) is computed as Tr((Σ_a^{1/2} Σ_b Σ_a^{1/2})^{1/2}), the same number (the two
matrices are similar), through two symmetric eigendecompositions. Eigenvalues that rounding
makes slightly negative are clipped to 0, so singular covariances (fewer samples than feature
dimensions) need no epsilon on the diagonal and no imaginary part ever appears. It is faster than
`scipy.linalg.sqrtm(Σ_a Σ_b)`, whose trace is also off on rank-deficient covariances unless an
epsilon is added (timings: docs/results/dit.md).
`frechet_distance_from_features` skips the D×D matrices when there are fewer samples than
dimensions (an exact identity, see there).
"""

from __future__ import annotations

import os
import warnings
from typing import Literal

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F

from .feature_classifier import FeatureClassifier, ImageArray, as_image_batch

InputRange = Literal["0_255", "-1_1"]
INPUT_RANGES = ("0_255", "-1_1")


def _checked_features(features: np.ndarray | torch.Tensor) -> np.ndarray:
    """Features `(N, D)` as float64; the minimum-sample guard of every Fréchet distance."""
    features = np.asarray(
        features.detach().cpu() if isinstance(features, torch.Tensor) else features, dtype=np.float64
    )
    if features.ndim != 2:
        raise ValueError(f"`features` must have shape (N, D); got shape {features.shape}.")
    num_samples, feature_dim = features.shape
    if num_samples < 2:
        raise ValueError(f"A Fréchet distance needs at least 2 samples per set; got {num_samples}.")
    if num_samples <= feature_dim:
        warnings.warn(
            f"Only {num_samples} samples for {feature_dim}-dimensional features: the covariance is singular "
            f"and the Fréchet distance is degenerate (strongly biased). "
            f"Use more than {feature_dim} samples per set.",
            UserWarning,
            stacklevel=3,
        )
    if not np.isfinite(features).all():
        raise ValueError("`features` contain NaN or infinite values.")
    return features


def feature_statistics(features: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean `(D,)` and unbiased covariance `(D, D)` (float64) of features `(N, D)`.

    Raises a ValueError for N < 2 (no covariance) and warns for N <= D: the covariance is then
    singular and the Fréchet distance is biased by the few samples (use N well above D).
    """
    features = _checked_features(features)
    feature_dim = features.shape[1]
    return features.mean(axis=0), np.cov(features, rowvar=False).reshape(feature_dim, feature_dim)


def _symmetric_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Principal square root of a symmetric PSD matrix; negative rounding eigenvalues become 0."""
    eigenvalues, eigenvectors = scipy.linalg.eigh(matrix)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T


def _check_gaussian(mean: np.ndarray, covariance: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    mean = np.atleast_1d(np.asarray(mean, dtype=np.float64))
    covariance = np.atleast_2d(np.asarray(covariance, dtype=np.float64))
    if mean.ndim != 1 or covariance.shape != (mean.shape[0], mean.shape[0]):
        raise ValueError(
            f"`mean_{name}` must have shape (D,) and `covariance_{name}` shape (D, D); "
            f"got {mean.shape} and {covariance.shape}."
        )
    return mean, (covariance + covariance.T) / 2  # symmetrise away rounding asymmetry


def frechet_distance(
    mean_a: np.ndarray, covariance_a: np.ndarray, mean_b: np.ndarray, covariance_b: np.ndarray
) -> float:
    """Squared Fréchet distance between N(mean_a, covariance_a) and N(mean_b, covariance_b).

    Args:
        mean_a, mean_b (`np.ndarray` of shape `(D,)`): means (a scalar is read as D = 1).
        covariance_a, covariance_b (`np.ndarray` of shape `(D, D)`): symmetric PSD covariances.

    Returns:
        `float` ≥ 0 (the usual "FID" value, which is the *squared* distance).
    """
    mean_a, covariance_a = _check_gaussian(mean_a, covariance_a, "a")
    mean_b, covariance_b = _check_gaussian(mean_b, covariance_b, "b")
    if mean_a.shape != mean_b.shape:
        raise ValueError(
            f"The two Gaussians have different dimensions: {mean_a.shape[0]} and {mean_b.shape[0]}."
        )
    sqrt_a = _symmetric_sqrt(covariance_a)
    middle = sqrt_a @ covariance_b @ sqrt_a  # similar to Σ_a Σ_b, symmetric PSD
    trace_sqrt_product = np.sqrt(np.clip(scipy.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)).sum()
    difference = mean_a - mean_b
    distance = (
        difference @ difference + np.trace(covariance_a) + np.trace(covariance_b) - 2.0 * trace_sqrt_product
    )
    return float(max(distance, 0.0))


def frechet_distance_from_features(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """`frechet_distance` of the statistics of features `(N_a, D)` and `(N_b, D)`.

    With no more samples than dimensions (max(N_a, N_b) <= D) it uses the exact sample form
    instead of D×D matrices: for centred features X (Σ = XᵀX / (N − 1)),
    Tr(Σ_a) = ||X_a||²_F / (N_a − 1) and Tr((Σ_a Σ_b)^{1/2}) = ||X_a X_bᵀ||_* / √((N_a − 1)(N_b − 1))
    (nuclear norm), which costs an N_a×N_b SVD instead of two D×D eigendecompositions.
    """
    features_a, features_b = _checked_features(features_a), _checked_features(features_b)
    if features_a.shape[1] != features_b.shape[1]:
        raise ValueError(
            "The two feature sets have different dimensions: "
            f"{features_a.shape[1]} and {features_b.shape[1]}."
        )
    if max(features_a.shape[0], features_b.shape[0]) > features_a.shape[1]:
        return frechet_distance(*feature_statistics(features_a), *feature_statistics(features_b))
    return _frechet_distance_from_samples(features_a, features_b)


def _frechet_distance_from_samples(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """The sample form of `frechet_distance_from_features` (no D×D matrix)."""
    centred_a = features_a - features_a.mean(axis=0)                  # (N_a, D)
    centred_b = features_b - features_b.mean(axis=0)                  # (N_b, D)
    scale_a, scale_b = features_a.shape[0] - 1, features_b.shape[0] - 1
    singular_values = np.linalg.svd(centred_a @ centred_b.T, compute_uv=False)
    trace_sqrt_product = singular_values.sum() / np.sqrt(scale_a * scale_b)
    difference = features_a.mean(axis=0) - features_b.mean(axis=0)
    traces = np.sum(centred_a**2) / scale_a + np.sum(centred_b**2) / scale_b
    return float(max(difference @ difference + traces - 2.0 * trace_sqrt_product, 0.0))


class FrechetClassifierDistance:
    """Fréchet distance in the penultimate feature space of a library-trained `FeatureClassifier`.

    Args:
        classifier (`FeatureClassifier`): e.g. from `load_or_train_feature_classifier` on the
            dataset's training images. Its `held_out_accuracy` says how far to trust its features.
        batch_size (`int`, defaults to 256): images per forward pass.
    """

    def __init__(self, classifier: FeatureClassifier, batch_size: int = 256):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        self.classifier = classifier.eval()
        self.batch_size = batch_size

    @classmethod
    def from_pretrained(
        cls, classifier_path: str | os.PathLike, batch_size: int = 256
    ) -> FrechetClassifierDistance:
        """Build from a classifier folder (`FeatureClassifier.save_pretrained`, or a cache entry)."""
        return cls(FeatureClassifier.from_pretrained(classifier_path), batch_size=batch_size)

    @property
    def classifier_accuracy(self) -> float | None:
        """Held-out accuracy of the classifier whose features are compared."""
        return self.classifier.held_out_accuracy

    @torch.no_grad()
    def features(self, images: ImageArray, name: str = "images") -> np.ndarray:
        """Penultimate features `(N, feature_dim)` (float64) of images `(N, C, H, W)` in [-1, 1]."""
        images = as_image_batch(images, name)
        config = self.classifier.config
        expected = (config.in_channels, *config.image_size)
        if tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"`{name}` must be (N, {expected[0]}, {expected[1]}, {expected[2]}) like the classifier's "
                f"training images; got {tuple(images.shape)}."
            )
        device = next(self.classifier.parameters()).device
        batches = [
            self.classifier.extract_features(batch.to(device)).cpu()
            for batch in images.split(self.batch_size)
        ]
        return torch.cat(batches).double().numpy()

    def compute(self, real_images: ImageArray, generated_images: ImageArray) -> float:
        """Fréchet classifier distance between real and generated images, each `(N, C, H, W)` in [-1, 1]."""
        return frechet_distance_from_features(
            self.features(real_images, "real_images"), self.features(generated_images, "generated_images")
        )


class InceptionFrechetDistance:
    """FID with a user-supplied TorchScript Inception network mapping images to 2048-d pool features.

    Images `(N, C, H, W)` in [-1, 1] with C = 1 (repeated to 3) or 3 are resized to 299×299
    (bilinear, no antialiasing) and scaled to `input_range` before the network sees them.

    Args:
        network_path (`str`): TorchScript file (`torch.jit.save`), e.g. a pt_inception-2015-12-05 export.
        input_range (`"0_255"` or `"-1_1"`, defaults to `"0_255"`): `"0_255"` feeds floats in
            [0, 255] (uint8-style, what the common TorchScript FID networks expect); `"-1_1"`
            feeds the images as they are.
        batch_size (`int`, defaults to 50): images per forward pass.
        device (`str` or `torch.device`, defaults to `"cpu"`): where the network runs.
        forward_kwargs (`dict`, *optional*): extra keyword arguments of the network's forward,
            e.g. `{"return_features": True}` for the NVlabs `inception-2015-12-05.pt` file.
    """

    feature_dim = 2048
    image_size = 299

    def __init__(
        self,
        network_path: str | os.PathLike,
        input_range: InputRange = "0_255",
        batch_size: int = 50,
        device: str | torch.device = "cpu",
        forward_kwargs: dict | None = None,
    ):
        if input_range not in INPUT_RANGES:
            raise ValueError(f"input_range must be one of {INPUT_RANGES}, got {input_range!r}.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        if not os.path.isfile(network_path):
            raise FileNotFoundError(f"Inception network file not found: {os.fspath(network_path)!r}.")
        try:
            self.network = torch.jit.load(os.fspath(network_path), map_location=device).eval()
        except RuntimeError as error:
            raise ValueError(
                f"{os.fspath(network_path)!r} is not a loadable TorchScript file: {error}"
            ) from error
        self.input_range = input_range
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.forward_kwargs = dict(forward_kwargs or {})

    def _network_input(self, images: torch.Tensor, name: str) -> torch.Tensor:
        """Images `(n, 1|3, H, W)` in [-1, 1] → `(n, 3, 299, 299)` in `input_range`."""
        if images.shape[1] not in (1, 3):
            raise ValueError(f"`{name}` must have 1 or 3 channels; got {images.shape[1]}.")
        size = (self.image_size, self.image_size)
        images = images.clamp(-1.0, 1.0).expand(-1, 3, -1, -1)                           # (n, 3, H, W)
        images = F.interpolate(images, size=size, mode="bilinear", align_corners=False)  # (n, 3, 299, 299)
        return (images + 1.0) * 127.5 if self.input_range == "0_255" else images

    def _pool_features(self, batch: torch.Tensor) -> torch.Tensor:
        """Run the network and check that it returned `(n, 2048)` (or `(n, 2048, 1, 1)`)."""
        output = self.network(batch, **self.forward_kwargs)
        if not isinstance(output, torch.Tensor):
            raise ValueError(
                f"The Inception network must return a tensor; it returned {type(output).__name__}."
            )
        if output.ndim == 4 and output.shape[2:] == (1, 1):
            output = output.flatten(1)
        if output.shape != (batch.shape[0], self.feature_dim):
            raise ValueError(
                f"The Inception network must map {batch.shape[0]} images to features of shape "
                f"({batch.shape[0]}, {self.feature_dim}); got {tuple(output.shape)}."
            )
        return output

    @torch.no_grad()
    def features(self, images: ImageArray, name: str = "images") -> np.ndarray:
        """Pool features `(N, 2048)` (float64) of images `(N, C, H, W)` in [-1, 1]."""
        images = as_image_batch(images, name)
        batches = [
            self._pool_features(self._network_input(batch, name).to(self.device)).cpu()
            for batch in images.split(self.batch_size)
        ]
        return torch.cat(batches).double().numpy()

    def compute(self, real_images: ImageArray, generated_images: ImageArray) -> float:
        """FID between real and generated images, each `(N, C, H, W)` in [-1, 1]."""
        return frechet_distance_from_features(
            self.features(real_images, "real_images"), self.features(generated_images, "generated_images")
        )
