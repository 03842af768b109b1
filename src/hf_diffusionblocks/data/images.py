"""Labelled image datasets for class-conditional diffusion and classification, offline by default.

Builtins ship with installed packages, so nothing is downloaded at run time:
- `"digits"`: scikit-learn's `load_digits`, 1,797 grayscale 8×8 digits in 10 classes. It has no
  official split; a fixed stratified split (10% test, `random_state=0`) gives 1,617 train and
  180 test images that never overlap.
- `"fashion_mnist"`: Fashion-MNIST, 60,000 train and 10,000 test grayscale 28×28 images in 10
  classes, read from the IDX files of the Debian package `dataset-fashion-mnist`
  (`/usr/share/datasets/fashion-mnist/*-idx?-ubyte.gz`).
Any other name is read with `datasets`: a `save_to_disk` folder, a folder of images in one
sub-folder per class (`"imagefolder"`), or a Hub dataset (online, or already cached).
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .hf_datasets import column_names_message, load_dataset_split

BUILTIN_IMAGE_DATASETS: tuple[str, ...] = ("digits", "fashion_mnist")
BUILTIN_IMAGE_SPLITS: tuple[str, ...] = ("train", "test")

DIGITS_TEST_FRACTION = 0.1
DIGITS_SPLIT_SEED = 0
DIGITS_MAX_VALUE = 16.0  # `load_digits` pixels are integers in [0, 16]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILE_PREFIXES: dict[str, str] = {"train": "train", "test": "t10k"}
FASHION_MNIST_CLASS_NAMES: list[str] = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
FASHION_MNIST_INSTALL_MESSAGE = (
    "Install the Debian package with `sudo apt-get update && sudo apt-get install dataset-fashion-mnist` "
    f"(it puts the IDX files in {FASHION_MNIST_DIR}), or pass the name of any `datasets` image dataset "
    "(a local image folder, a `save_to_disk` folder, or a Hub dataset) instead."
)

# PIL modes that hold one channel; images of any other mode are read as RGB.
_GRAYSCALE_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})


@dataclass
class ImageDataset(torch.utils.data.Dataset):
    """Labelled square images, held in memory and scaled to [-1, 1].

    Items are dicts `{"pixel_values": (C, H, W) float tensor, "labels": () long tensor}`, the
    keys the library's models and collators expect.

    Args:
        images (`torch.FloatTensor` of shape `(N, C, H, W)`): pixel values in [-1, 1], `H == W`.
        labels (`torch.LongTensor` of shape `(N,)`): class indices in `[0, len(class_names))`.
        class_names (`list[str]`): the name of each class, indexed by label.
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]

    def __post_init__(self):
        if self.images.ndim != 4 or self.images.shape[-1] != self.images.shape[-2]:
            raise ValueError(f"`images` must be square, of shape (N, C, H, H); got {tuple(self.images.shape)}.")
        if self.labels.shape != self.images.shape[:1]:
            expected, got = tuple(self.images.shape[:1]), tuple(self.labels.shape)
            raise ValueError(f"`labels` must have shape (N,) = {expected}, got {got}.")
        num_labels = len(self.class_names)
        if self.labels.numel() and not 0 <= int(self.labels.min()) <= int(self.labels.max()) < num_labels:
            raise ValueError(f"`labels` must lie in [0, len(class_names)) = [0, {len(self.class_names)}).")

    @property
    def num_labels(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    @property
    def num_channels(self) -> int:
        """Channels per image: 1 (grayscale) or 3 (RGB)."""
        return self.images.shape[1]

    @property
    def image_size(self) -> int:
        """Side of the square images, in pixels."""
        return self.images.shape[-1]

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.images[index], "labels": self.labels[index]}


def load_image_dataset(
    name: str,
    split: str = "train",
    image_column: str | None = None,
    label_column: str | None = None,
    image_size: int | None = None,
    cache_dir: str | None = None,
) -> ImageDataset:
    """Loads a labelled image dataset into memory, as square images in [-1, 1].

    Args:
        name (`str`): `"digits"` (8×8, 1 channel), `"fashion_mnist"` (28×28, 1 channel), a local
            folder (`save_to_disk` output, or images in one sub-folder per class), or a Hub dataset
            name (needs the network or the `datasets` cache).
        split (`str`, defaults to `"train"`): `"train"` or `"test"` for builtins; any split of a
            `datasets` dataset (an image folder without split sub-folders has only `"train"`).
        image_column (`str`, *optional*): the image column of a `datasets` dataset; defaults to
            the first `Image` feature.
        label_column (`str`, *optional*): the label column of a `datasets` dataset; defaults to
            the first `ClassLabel` feature. Integer or string columns are accepted when named.
        image_size (`int`, *optional*): resize every image to `image_size × image_size`
            (bilinear, antialiased when shrinking). Defaults to the native size, which for a
            `datasets` dataset must then be one square size shared by all images.
        cache_dir (`str`, *optional*): the `datasets` cache folder; builtins do not use it.

    Returns:
        `ImageDataset`: images `(N, C, H, W)` in [-1, 1] (C = 1 for grayscale data, else 3),
        labels `(N,)` and class names.
    """
    if image_size is not None and image_size < 1:
        raise ValueError(f"`image_size` must be a positive integer or None, got {image_size!r}.")
    if name in BUILTIN_IMAGE_DATASETS:
        _check_builtin_arguments(name, split, image_column, label_column)
        dataset = _load_digits(split) if name == "digits" else _load_fashion_mnist(split)
        if image_size is not None and image_size != dataset.image_size:
            dataset.images = resize_images(dataset.images, image_size)
        return dataset
    hf_dataset = load_dataset_split(name, split, "imagefolder", BUILTIN_IMAGE_DATASETS, cache_dir=cache_dir)
    return image_dataset_from_hf(hf_dataset, image_column, label_column, image_size)


def _check_builtin_arguments(name: str, split: str, image_column: str | None, label_column: str | None):
    """Builtins have fixed splits and no columns to choose; refuse arguments they would ignore."""
    if split not in BUILTIN_IMAGE_SPLITS:
        raise ValueError(f"`split` for {name!r} must be one of {BUILTIN_IMAGE_SPLITS}, got {split!r}.")
    for field, value in (("image_column", image_column), ("label_column", label_column)):
        if value is not None:
            raise ValueError(f"`{field}` applies to `datasets` datasets only, not to the builtin {name!r}.")


def resize_images(images: torch.Tensor, image_size: int) -> torch.Tensor:
    """Bilinear resize of `(N, C, H, W)` images to `(N, C, image_size, image_size)`.

    The filter is antialiased, which only matters when shrinking; values stay in [-1, 1].
    """
    resized = F.interpolate(images, size=(image_size, image_size), mode="bilinear", antialias=True)
    return resized.clamp_(-1.0, 1.0)


def _load_digits(split: str) -> ImageDataset:
    """scikit-learn's 8×8 digits, with the fixed stratified split described in the module docstring."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    indices = np.arange(len(digits.target))
    train_indices, test_indices = train_test_split(
        indices, test_size=DIGITS_TEST_FRACTION, random_state=DIGITS_SPLIT_SEED, stratify=digits.target
    )
    chosen = np.sort(train_indices if split == "train" else test_indices)
    pixels = torch.from_numpy(digits.images[chosen]).float()                  # (N, 8, 8) in [0, 16]
    images = (pixels / (DIGITS_MAX_VALUE / 2) - 1.0).unsqueeze(1)            # (N, 1, 8, 8) in [-1, 1]
    labels = torch.from_numpy(digits.target[chosen]).long()                  # (N,)
    return ImageDataset(images=images, labels=labels, class_names=[str(digit) for digit in range(10)])


def read_idx(path: Path) -> np.ndarray:
    """Reads an IDX file (the MNIST format), gzipped when its name ends in `.gz`.

    Layout: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions D,
    D big-endian int32 sizes, then the values in row-major order.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as file:
        data = file.read()
    if data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file (header {data[:4]!r}).")
    num_dims = data[3]
    shape = tuple(int(size) for size in np.frombuffer(data, dtype=">i4", count=num_dims, offset=4))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * num_dims).reshape(shape)


def _find_idx_file(data_dir: Path, stem: str) -> Path:
    """`data_dir/stem.gz` or `data_dir/stem`, whichever exists."""
    for candidate in (data_dir / f"{stem}.gz", data_dir / stem):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"Fashion-MNIST file {stem}(.gz) was not found in {data_dir}. {FASHION_MNIST_INSTALL_MESSAGE}"
    )


def _load_fashion_mnist(split: str) -> ImageDataset:
    """Fashion-MNIST from the IDX files in `FASHION_MNIST_DIR`, gzipped or not."""
    data_dir = FASHION_MNIST_DIR
    prefix = FASHION_MNIST_FILE_PREFIXES[split]
    pixels = read_idx(_find_idx_file(data_dir, f"{prefix}-images-idx3-ubyte"))    # (N, 28, 28) uint8
    targets = read_idx(_find_idx_file(data_dir, f"{prefix}-labels-idx1-ubyte"))   # (N,) uint8
    images = torch.from_numpy(pixels.copy()).float().div_(127.5).sub_(1.0).unsqueeze(1)  # (N, 1, 28, 28)
    labels = torch.from_numpy(targets.astype(np.int64))                           # (N,)
    return ImageDataset(images=images, labels=labels, class_names=list(FASHION_MNIST_CLASS_NAMES))


def image_dataset_from_hf(
    dataset: datasets.Dataset,
    image_column: str | None = None,
    label_column: str | None = None,
    image_size: int | None = None,
) -> ImageDataset:
    """Converts a `datasets` image dataset into an in-memory `ImageDataset`.

    All images become 1-channel when every image is grayscale, else RGB. See `load_image_dataset`
    for the arguments.
    """
    image_column = _resolve_column(dataset, image_column, datasets.Image, "image_column")
    label_column = _resolve_column(dataset, label_column, datasets.ClassLabel, "label_column")
    pil_images = dataset[image_column]
    mode = "L" if all(image.mode in _GRAYSCALE_MODES for image in pil_images) else "RGB"
    if image_size is not None:
        size = (image_size, image_size)
        pil_images = [image.convert(mode).resize(size, Image.BILINEAR) for image in pil_images]
    _check_one_square_size(pil_images)
    arrays = np.stack([np.asarray(image.convert(mode), dtype=np.uint8) for image in pil_images])
    images = torch.from_numpy(arrays).float().div_(127.5).sub_(1.0)     # (N, H, W) or (N, H, W, 3)
    images = images.unsqueeze(1) if mode == "L" else images.permute(0, 3, 1, 2).contiguous()  # (N, C, H, W)
    labels, class_names = _labels_and_names(dataset, label_column)
    return ImageDataset(images=images, labels=labels, class_names=class_names)


def _resolve_column(dataset: datasets.Dataset, column: str | None, feature_type: type, field: str) -> str:
    """`column` if the dataset has it, else the first column whose feature is a `feature_type`."""
    if column is not None:
        if column not in dataset.column_names:
            raise ValueError(f"`{field}`={column!r} is not a column; {column_names_message(dataset)}.")
        return column
    for name, feature in dataset.features.items():
        if isinstance(feature, feature_type):
            return name
    raise ValueError(
        f"No {feature_type.__name__} column found to use as `{field}`; pass `{field}` explicitly; "
        f"{column_names_message(dataset)}."
    )


def _check_one_square_size(pil_images: list[Image.Image]):
    """Refuses images of several sizes, or non-square ones, when no `image_size` was given."""
    sizes = {image.size for image in pil_images}
    if len(sizes) > 1 or any(width != height for width, height in sizes):
        shown = sorted(sizes)[:5]
        raise ValueError(
            f"Images must share one square size unless `image_size` is given; found sizes (W, H) {shown}"
            f"{' ...' if len(sizes) > 5 else ''}. Pass `image_size` to resize them."
        )


def _labels_and_names(dataset: datasets.Dataset, label_column: str) -> tuple[torch.Tensor, list[str]]:
    """Labels `(N,)` and class names from a `ClassLabel`, integer, or string column."""
    feature = dataset.features[label_column]
    values = dataset[label_column]
    if isinstance(feature, datasets.ClassLabel):
        return torch.tensor(values, dtype=torch.long), list(feature.names)
    if all(isinstance(value, str) for value in values):
        class_names = sorted(set(values))
        index = {class_name: position for position, class_name in enumerate(class_names)}
        return torch.tensor([index[value] for value in values], dtype=torch.long), class_names
    if all(isinstance(value, int) and value >= 0 for value in values):
        labels = torch.tensor(values, dtype=torch.long)
        num_labels = int(labels.max()) + 1 if len(values) else 0
        return labels, [str(label) for label in range(num_labels)]
    raise ValueError(
        f"`label_column`={label_column!r} must hold class labels, non-negative integers, or strings; "
        f"its feature is {feature}."
    )
