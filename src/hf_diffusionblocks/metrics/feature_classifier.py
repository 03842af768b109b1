"""A small CNN classifier, trained by the library on a dataset's own images, whose penultimate
layer is the feature space of the Fréchet classifier distance.

There is no pretrained Inception network offline, so the features come from a classifier
trained on the real training images of the dataset at hand (the FCD of the digits and
Fashion-MNIST literature). A trained classifier is cached on disk, keyed by a fingerprint of
the images, labels and settings, so every evaluation of one dataset uses the same features.

Cache layout: `<cache_dir>/<fingerprint>/model.safetensors` and `feature_classifier.json`
(settings and held-out accuracy). `cache_dir` defaults to
`$HF_DIFFUSIONBLOCKS_CACHE/feature_classifiers`, and `HF_DIFFUSIONBLOCKS_CACHE` defaults to
`~/.cache/hf_diffusionblocks`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from ..atomic_io import atomic_write, atomic_write_text

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
SETTINGS_NAME = "feature_classifier.json"
CACHE_FORMAT_VERSION = 1

ImageArray = torch.Tensor | np.ndarray | Sequence


@dataclass(frozen=True)
class FeatureClassifierConfig:
    """Architecture of a `FeatureClassifier`.

    Args:
        in_channels (`int`): channels C of the input images.
        image_size (`tuple[int, int]`): (H, W) of the training images; inputs must match.
        num_labels (`int`): number of classes of the head.
        hidden_channels (`tuple[int, ...]`, defaults to `(16, 32, 64, 128)`): channels of the
            conv layers; every layer after the first halves the resolution.
        feature_dim (`int`, defaults to 64): width of the penultimate (feature) layer.
        stem_stride (`int`, defaults to 1): stride of the first conv layer (2 makes large images
            about 3.5x cheaper to train on).
    """

    in_channels: int
    image_size: tuple[int, int]
    num_labels: int
    hidden_channels: tuple[int, ...] = (16, 32, 64, 128)
    feature_dim: int = 64
    stem_stride: int = 1

    @classmethod
    def from_dict(cls, values: dict) -> FeatureClassifierConfig:
        """Inverse of `dataclasses.asdict` after a JSON round trip (lists back to tuples)."""
        image_size, hidden_channels = tuple(values["image_size"]), tuple(values["hidden_channels"])
        return cls(**{**values, "image_size": image_size, "hidden_channels": hidden_channels})


@dataclass(frozen=True)
class FeatureClassifierTrainingArguments:
    """Settings of `train_feature_classifier`; all of them enter the cache fingerprint.

    Args:
        num_epochs (`int`, defaults to 15): passes over the training split.
        batch_size (`int`, defaults to 128): images per optimizer step.
        learning_rate (`float`, defaults to 3e-3): peak AdamW learning rate (cosine decay to 0).
        weight_decay (`float`, defaults to 1e-4): AdamW weight decay.
        validation_fraction (`float`, defaults to 0.1): share of the images held out to
            measure the classifier's accuracy; they are never trained on.
        hidden_channels (`tuple[int, ...]`, defaults to `(16, 32, 64, 128)`): see `FeatureClassifierConfig`.
        feature_dim (`int`, defaults to 64): see `FeatureClassifierConfig`.
        stem_stride (`int`, *optional*): see `FeatureClassifierConfig`; `None` (default) picks 2
            for images whose smaller side is at least 16 pixels (Fashion-MNIST) and 1 otherwise (digits).
        seed (`int`, defaults to 0): seeds initialisation, the split and the batch order.
        num_threads (`int`, defaults to 1): torch intra-op threads while training (restored
            afterwards). These convolutions are too small to gain from more, and on a busy 2-core
            machine 2 threads trained over 10x slower than 1 (Fashion-MNIST, 5,000 images: 17 s
            with 1 thread, not done after 300 s with 2). A fixed count also makes the weights
            independent of the caller's thread setting.
    """

    num_epochs: int = 15
    batch_size: int = 128
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    validation_fraction: float = 0.1
    hidden_channels: tuple[int, ...] = (16, 32, 64, 128)
    feature_dim: int = 64
    stem_stride: int | None = None
    seed: int = 0
    num_threads: int = 1

    def __post_init__(self):
        if self.num_epochs < 1:
            raise ValueError(f"num_epochs must be >= 1, got {self.num_epochs}.")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}.")
        if not 0.0 < self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must lie in (0, 1), got {self.validation_fraction}.")
        if not self.hidden_channels or min(self.hidden_channels) < 1:
            raise ValueError(
                f"hidden_channels must be a non-empty tuple of positive ints, got {self.hidden_channels}."
            )
        if self.stem_stride is not None and self.stem_stride < 1:
            raise ValueError(f"stem_stride must be None or >= 1, got {self.stem_stride}.")
        if self.num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {self.num_threads}.")


class FeatureClassifier(nn.Module):
    """Conv layers → global average pool → feature layer (the Fréchet features) → linear head."""

    def __init__(self, config: FeatureClassifierConfig):
        super().__init__()
        self.config = config
        self.held_out_accuracy: float | None = None
        self.name_or_path: str | None = None
        layers: list[nn.Module] = []
        channels = config.in_channels
        for index, hidden in enumerate(config.hidden_channels):
            stride = config.stem_stride if index == 0 else 2
            convolution = nn.Conv2d(channels, hidden, kernel_size=3, stride=stride, padding=1)
            layers += [convolution, nn.GroupNorm(math.gcd(hidden, 8), hidden), nn.SiLU()]
            channels = hidden
        self.encoder = nn.Sequential(*layers)
        self.feature_layer = nn.Linear(channels, config.feature_dim)
        self.head = nn.Linear(config.feature_dim, config.num_labels)

    def extract_features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate features `(N, feature_dim)` of images `(N, C, H, W)` in [-1, 1]."""
        hidden_states = self.encoder(images)                     # (N, C', H', W')
        pooled = hidden_states.mean(dim=(2, 3))                  # (N, C')
        return F.silu(self.feature_layer(pooled))                # (N, feature_dim); SiLU: no dead dims

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits `(N, num_labels)`."""
        return self.head(self.extract_features(images))

    def save_pretrained(self, directory: str | os.PathLike, settings: dict | None = None) -> None:
        """Write `model.safetensors`, then `feature_classifier.json` (marks completion); both atomic."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {name: tensor.detach().contiguous().cpu() for name, tensor in self.state_dict().items()}
        atomic_write(directory / WEIGHTS_NAME, lambda path: save_file(state, path))
        document = {
            "format_version": CACHE_FORMAT_VERSION,
            "config": dataclasses.asdict(self.config),
            "held_out_accuracy": self.held_out_accuracy,
            **(settings or {}),
        }
        atomic_write_text(directory / SETTINGS_NAME, json.dumps(document, indent=2))

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> FeatureClassifier:
        """Load a classifier written by `save_pretrained`, in eval mode."""
        directory = Path(directory)
        settings_path, weights_path = directory / SETTINGS_NAME, directory / WEIGHTS_NAME
        for path in (settings_path, weights_path):
            if not path.is_file():
                raise FileNotFoundError(f"No feature classifier file at {path}.")
        document = json.loads(settings_path.read_text())
        classifier = cls(FeatureClassifierConfig.from_dict(document["config"]))
        classifier.load_state_dict(load_file(str(weights_path)))
        classifier.held_out_accuracy = document.get("held_out_accuracy")
        classifier.name_or_path = str(directory)
        return classifier.eval()


def as_image_batch(images: ImageArray, name: str = "images") -> torch.Tensor:
    """A float32 tensor `(N, C, H, W)` from a tensor, an array or nested lists; ValueError otherwise."""
    if isinstance(images, torch.Tensor):
        tensor = images.detach().to(device="cpu", dtype=torch.float32)
    else:
        tensor = torch.from_numpy(np.array(images, dtype=np.float32))  # a copy: inputs may be read-only
    if tensor.ndim != 4:
        raise ValueError(f"`{name}` must have shape (N, C, H, W); got shape {tuple(tensor.shape)}.")
    return tensor


def _as_labels(
    labels: torch.Tensor | np.ndarray | Sequence[int], num_images: int, num_labels: int
) -> torch.Tensor:
    labels = torch.tensor(np.asarray(labels), dtype=torch.long)
    if labels.shape != (num_images,):
        raise ValueError(
            f"`labels` must have shape ({num_images},) to match the images; got {tuple(labels.shape)}."
        )
    if labels.min() < 0 or labels.max() >= num_labels:
        raise ValueError(
            f"`labels` must lie in [0, {num_labels}); got range [{labels.min()}, {labels.max()}]."
        )
    return labels


def _split(
    num_images: int, validation_fraction: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random (train, held-out) index split; the held-out part has at least one image."""
    order = torch.randperm(num_images, generator=generator)
    num_held_out = max(1, round(num_images * validation_fraction))
    if num_held_out >= num_images:
        raise ValueError(f"Need at least 2 images to train and measure a classifier; got {num_images}.")
    return order[num_held_out:], order[:num_held_out]


@torch.no_grad()
def classifier_accuracy(classifier: FeatureClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of `images` `(N, C, H, W)` whose argmax logit equals `labels` `(N,)`."""
    classifier.eval()
    predictions = torch.cat([classifier(batch).argmax(dim=-1) for batch in images.split(512)])
    return (predictions == labels).float().mean().item()


def train_feature_classifier(
    images: ImageArray,
    labels: torch.Tensor | np.ndarray | Sequence[int],
    num_labels: int,
    arguments: FeatureClassifierTrainingArguments | None = None,
) -> FeatureClassifier:
    """Train a `FeatureClassifier` on images `(N, C, H, W)` in [-1, 1] with labels `(N,)`.

    Deterministic given `arguments.seed` (on one machine and thread count): the global torch RNG
    is neither used nor advanced. A share `arguments.validation_fraction` of the images is held
    out; the returned classifier's `held_out_accuracy` is measured on it.

    Returns:
        `FeatureClassifier` in eval mode.
    """
    arguments = arguments or FeatureClassifierTrainingArguments()
    images = as_image_batch(images)
    labels = _as_labels(labels, images.shape[0], num_labels)
    generator = torch.Generator().manual_seed(arguments.seed)
    train_index, held_out_index = _split(images.shape[0], arguments.validation_fraction, generator)
    config = FeatureClassifierConfig(
        in_channels=images.shape[1],
        image_size=(images.shape[2], images.shape[3]),
        num_labels=num_labels,
        hidden_channels=tuple(arguments.hidden_channels),
        feature_dim=arguments.feature_dim,
        stem_stride=_stem_stride(arguments.stem_stride, images.shape[2:]),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(arguments.seed)
        classifier = FeatureClassifier(config)
    with _torch_threads(arguments.num_threads):
        _fit(classifier, images[train_index], labels[train_index], arguments, generator)
        classifier.held_out_accuracy = classifier_accuracy(
            classifier, images[held_out_index], labels[held_out_index]
        )
    logger.info("Trained feature classifier: held-out accuracy %.4f", classifier.held_out_accuracy)
    return classifier.eval()


@contextlib.contextmanager
def _torch_threads(num_threads: int) -> Iterator[None]:
    """Run the block with `num_threads` torch intra-op threads, then restore the previous count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _stem_stride(stem_stride: int | None, image_size: Sequence[int]) -> int:
    if stem_stride is not None:
        return stem_stride
    return 2 if min(image_size) >= 16 else 1


def _fit(
    classifier: FeatureClassifier,
    images: torch.Tensor,
    labels: torch.Tensor,
    arguments: FeatureClassifierTrainingArguments,
    generator: torch.Generator,
) -> None:
    """AdamW with a cosine learning-rate decay over all steps, cross-entropy loss."""
    steps_per_epoch = math.ceil(images.shape[0] / arguments.batch_size)
    optimizer = torch.optim.AdamW(
        classifier.parameters(), lr=arguments.learning_rate, weight_decay=arguments.weight_decay
    )
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=arguments.num_epochs * steps_per_epoch
    )
    classifier.train()
    for _ in range(arguments.num_epochs):
        for batch_index in torch.randperm(images.shape[0], generator=generator).split(arguments.batch_size):
            loss = F.cross_entropy(classifier(images[batch_index]), labels[batch_index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    classifier.eval()


def default_cache_dir() -> Path:
    """Folder of cached classifiers: `$HF_DIFFUSIONBLOCKS_CACHE/feature_classifiers`, where
    `HF_DIFFUSIONBLOCKS_CACHE` defaults to `~/.cache/hf_diffusionblocks`."""
    root = os.environ.get("HF_DIFFUSIONBLOCKS_CACHE") or os.path.join("~", ".cache", "hf_diffusionblocks")
    return Path(root).expanduser() / "feature_classifiers"


def dataset_fingerprint(
    images: ImageArray,
    labels: torch.Tensor | np.ndarray | Sequence[int],
    num_labels: int,
    arguments: FeatureClassifierTrainingArguments,
) -> str:
    """Hex sha256 (32 chars) of the image bytes (float32), labels (int64), `num_labels` and the settings."""
    images = as_image_batch(images)
    labels = _as_labels(labels, images.shape[0], num_labels)
    digest = hashlib.sha256()
    settings = {
        "format_version": CACHE_FORMAT_VERSION,
        "num_labels": num_labels,
        **dataclasses.asdict(arguments),
    }
    digest.update(json.dumps(settings, sort_keys=True).encode())
    digest.update(str(tuple(images.shape)).encode())
    digest.update(images.contiguous().numpy().tobytes())
    digest.update(labels.numpy().astype(np.int64).tobytes())
    return digest.hexdigest()[:32]


def load_or_train_feature_classifier(
    images: ImageArray,
    labels: torch.Tensor | np.ndarray | Sequence[int],
    num_labels: int,
    arguments: FeatureClassifierTrainingArguments | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> FeatureClassifier:
    """The cached classifier for these images, labels and settings, training and caching it on a miss.

    Args:
        images (`(N, C, H, W)` in [-1, 1]), labels (`(N,)`), num_labels, arguments: as in
            `train_feature_classifier`.
        cache_dir (`str`, *optional*): folder of cached classifiers; defaults to `default_cache_dir()`.

    Returns:
        `FeatureClassifier` in eval mode, its `name_or_path` set to its cache folder (the path to
        give to `FrechetClassifierDistance.from_pretrained` or the evaluate module).
    """
    arguments = arguments or FeatureClassifierTrainingArguments()
    fingerprint = dataset_fingerprint(images, labels, num_labels, arguments)
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    directory = directory / fingerprint
    if (directory / SETTINGS_NAME).is_file():
        logger.info("Loading cached feature classifier from %s", directory)
        return FeatureClassifier.from_pretrained(directory)
    classifier = train_feature_classifier(images, labels, num_labels, arguments)
    settings = {"fingerprint": fingerprint, "training_arguments": dataclasses.asdict(arguments)}
    classifier.save_pretrained(directory, settings)
    classifier.name_or_path = str(directory)
    return classifier
