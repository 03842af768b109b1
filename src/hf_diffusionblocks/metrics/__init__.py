"""Offline image-quality metrics: Fréchet distances in the feature space of a classifier the library
trains itself, of the standard FID Inception network (weights from the `fid` extra), or of a
user-supplied Inception network; and the matching `evaluate` modules."""

from __future__ import annotations

from pathlib import Path

from .feature_classifier import (
    FeatureClassifier,
    FeatureClassifierConfig,
    FeatureClassifierTrainingArguments,
    dataset_fingerprint,
    default_cache_dir,
    load_or_train_feature_classifier,
    train_feature_classifier,
)
from .fid import FrechetInceptionDistance, ReferenceStatistics, default_fid_cache_dir
from .frechet import (
    FrechetClassifierDistance,
    InceptionFrechetDistance,
    feature_statistics,
    frechet_distance,
    frechet_distance_from_features,
)
from .inception import FIDInceptionV3, find_fid_weights

_METRICS_DIR = Path(__file__).resolve().parent


def available_metrics() -> tuple[str, ...]:
    """Names of the packaged `evaluate` modules: the folders `metrics/<name>/` holding `<name>.py`."""
    return tuple(
        sorted(path.parent.name for path in _METRICS_DIR.glob("*/*.py") if path.stem == path.parent.name)
    )


def metric_path(name: str) -> str:
    """Absolute path of the packaged `evaluate` module folder `name` (one of `available_metrics()`)."""
    if name not in available_metrics():
        raise ValueError(f"Unknown metric {name!r}; the packaged metrics are {available_metrics()}.")
    return str(_METRICS_DIR / name)


def load_metric(name: str, **kwargs):
    """`evaluate.load` of a packaged metric, by local path (works with HF_HUB_OFFLINE=1).

    Args:
        name (`str`): one of `available_metrics()`, e.g. `"frechet_classifier_distance"`.
        **kwargs: passed to `evaluate.load` (e.g. `cache_dir`, `experiment_id`).

    Returns:
        `evaluate.Metric`.
    """
    import evaluate

    return evaluate.load(metric_path(name), **kwargs)


__all__ = [
    "FeatureClassifier",
    "FeatureClassifierConfig",
    "FeatureClassifierTrainingArguments",
    "FIDInceptionV3",
    "FrechetClassifierDistance",
    "FrechetInceptionDistance",
    "InceptionFrechetDistance",
    "available_metrics",
    "dataset_fingerprint",
    "ReferenceStatistics",
    "default_cache_dir",
    "default_fid_cache_dir",
    "find_fid_weights",
    "feature_statistics",
    "frechet_distance",
    "frechet_distance_from_features",
    "load_metric",
    "load_or_train_feature_classifier",
    "metric_path",
    "train_feature_classifier",
]
