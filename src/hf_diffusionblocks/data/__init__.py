"""Real datasets that load offline: labelled images for diffusion/classification, and text corpora."""

from .images import BUILTIN_IMAGE_DATASETS, FASHION_MNIST_CLASS_NAMES, ImageDataset, load_image_dataset
from .text import BUILTIN_TEXT_CORPORA, TEXT_SPLITS, TrainingTexts, default_cache_dir, load_text_corpus, load_training_texts

__all__ = [
    "BUILTIN_IMAGE_DATASETS",
    "BUILTIN_TEXT_CORPORA",
    "FASHION_MNIST_CLASS_NAMES",
    "ImageDataset",
    "TEXT_SPLITS",
    "TrainingTexts",
    "default_cache_dir",
    "load_image_dataset",
    "load_text_corpus",
    "load_training_texts",
]
