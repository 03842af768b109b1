"""Image datasets: builtins (digits, Fashion-MNIST), `datasets` folders, and the PNG grid helper."""

import struct

import datasets
import huggingface_hub.constants
import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from hf_diffusionblocks.data import FASHION_MNIST_CLASS_NAMES, ImageDataset, load_image_dataset
from hf_diffusionblocks.data import images as images_module
from hf_diffusionblocks.utils.image_grid import save_image_grid

FASHION_MNIST_INSTALLED = (images_module.FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file()


@pytest.fixture
def hub_offline(monkeypatch):
    """Makes Hub look-ups fail at once instead of retrying for half a minute."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)


def _rows(dataset: ImageDataset) -> np.ndarray:
    """One row per example: its 64 pixels then its label, sorted, to compare datasets as multisets."""
    rows = torch.cat([dataset.images.flatten(1), dataset.labels[:, None].float()], dim=1).numpy()
    return rows[np.lexsort(rows.T[::-1])]


# ---------------------------------------------------------------- digits


def test_digits_shapes_range_and_labels():
    dataset = load_image_dataset("digits", split="train")
    assert dataset.images.shape == (1617, 1, 8, 8) and dataset.images.dtype == torch.float32
    assert dataset.images.min() == -1.0 and dataset.images.max() == 1.0
    assert dataset.labels.dtype == torch.long and set(dataset.labels.tolist()) == set(range(10))
    assert (dataset.num_labels, dataset.num_channels, dataset.image_size) == (10, 1, 8)
    assert dataset.class_names == [str(digit) for digit in range(10)]
    item = dataset[3]
    assert item["pixel_values"].shape == (1, 8, 8) and item["labels"] == dataset.labels[3]


def test_digits_train_and_test_partition_sklearn_digits():
    train, test = load_image_dataset("digits", "train"), load_image_dataset("digits", "test")
    assert len(train) + len(test) == 1797 and len(test) == 180
    digits = load_digits()
    reference = ImageDataset(
        images=torch.from_numpy(digits.images).float().div(8).sub(1).unsqueeze(1),
        labels=torch.from_numpy(digits.target).long(),
        class_names=[str(digit) for digit in range(10)],
    )
    union = ImageDataset(
        torch.cat([train.images, test.images]), torch.cat([train.labels, test.labels]), train.class_names
    )
    # Same multiset of (image, label) rows: every example is used once, in exactly one split.
    np.testing.assert_array_equal(_rows(union), _rows(reference))


def test_digits_split_is_stratified_and_fixed():
    train, test = load_image_dataset("digits", "train"), load_image_dataset("digits", "test")
    test_counts = torch.bincount(test.labels, minlength=10)
    train_counts = torch.bincount(train.labels, minlength=10)
    assert set(test_counts.tolist()) <= {17, 18, 19}
    assert torch.allclose(test_counts / (test_counts + train_counts), torch.full((10,), 0.1), atol=0.01)
    assert torch.equal(load_image_dataset("digits", "test").images, test.images)


def test_digits_resize_keeps_range_and_mean():
    native = load_image_dataset("digits", "test")
    for image_size in (16, 4):
        resized = load_image_dataset("digits", "test", image_size=image_size)
        assert resized.images.shape == (180, 1, image_size, image_size) and resized.image_size == image_size
        assert resized.images.min() >= -1.0 and resized.images.max() <= 1.0
        torch.testing.assert_close(
            resized.images.mean(dim=(1, 2, 3)), native.images.mean(dim=(1, 2, 3)), atol=0.05, rtol=0
        )
        assert torch.equal(resized.labels, native.labels)


def test_builtin_refuses_bad_split_and_columns():
    with pytest.raises(ValueError, match="`split`.*'train', 'test'"):
        load_image_dataset("digits", split="validation")
    with pytest.raises(ValueError, match="`image_column`"):
        load_image_dataset("digits", image_column="image")


def test_dataloader_batches_dicts():
    dataset = load_image_dataset("digits", "test")
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=16)))
    assert batch["pixel_values"].shape == (16, 1, 8, 8) and batch["labels"].shape == (16,)


def test_image_dataset_rejects_inconsistent_fields():
    with pytest.raises(ValueError, match="`labels`"):
        ImageDataset(torch.zeros(3, 1, 4, 4), torch.zeros(2, dtype=torch.long), ["a"])
    with pytest.raises(ValueError, match="`labels` must lie"):
        ImageDataset(torch.zeros(2, 1, 4, 4), torch.tensor([0, 2]), ["a", "b"])
    with pytest.raises(ValueError, match="square"):
        ImageDataset(torch.zeros(2, 1, 4, 5), torch.zeros(2, dtype=torch.long), ["a"])


# ---------------------------------------------------------------- Fashion-MNIST


@pytest.mark.skipif(not FASHION_MNIST_INSTALLED, reason="needs `apt-get install dataset-fashion-mnist`")
def test_fashion_mnist_test_split_loads():
    dataset = load_image_dataset("fashion_mnist", split="test")
    assert dataset.images.shape == (10000, 1, 28, 28)
    assert dataset.images.min() == -1.0 and dataset.images.max() == 1.0
    assert torch.bincount(dataset.labels).tolist() == [1000] * 10
    assert dataset.class_names == FASHION_MNIST_CLASS_NAMES and dataset.class_names[9] == "Ankle boot"


def test_fashion_mnist_missing_files_say_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(images_module, "FASHION_MNIST_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist") as error:
        load_image_dataset("fashion_mnist", split="train")
    assert "`datasets`" in str(error.value) and str(tmp_path) in str(error.value)


def _write_idx(path, array: np.ndarray):
    """Writes an uncompressed unsigned-byte IDX file."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_reads_uncompressed_idx_files(monkeypatch, tmp_path):
    pixels = np.arange(3 * 28 * 28).reshape(3, 28, 28) % 256
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", pixels)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.array([9, 0, 4]))
    monkeypatch.setattr(images_module, "FASHION_MNIST_DIR", tmp_path)
    dataset = load_image_dataset("fashion_mnist", split="test", image_size=14)
    assert dataset.images.shape == (3, 1, 14, 14) and dataset.labels.tolist() == [9, 0, 4]
    native = load_image_dataset("fashion_mnist", split="test")
    torch.testing.assert_close(native.images[:, 0], torch.from_numpy(pixels).float() / 127.5 - 1)


# ---------------------------------------------------------------- `datasets` datasets


def _make_image_folder(root, colors: dict[str, tuple], size=(12, 12), mode="L"):
    """`root/<class>/<i>.png`, every image of a class filled with that class's colour."""
    for class_name, color in colors.items():
        (root / class_name).mkdir(parents=True)
        for index in range(3):
            Image.new(mode, size, color).save(root / class_name / f"{index}.png")


def test_image_folder_loads_with_labels(tmp_path):
    _make_image_folder(tmp_path / "images", {"cat": 0, "dog": 255})
    dataset = load_image_dataset(str(tmp_path / "images"), cache_dir=str(tmp_path / "cache"))
    assert dataset.class_names == ["cat", "dog"] and len(dataset) == 6
    assert dataset.images.shape == (6, 1, 12, 12)
    for image, label in zip(dataset.images, dataset.labels):
        expected = -1.0 if dataset.class_names[label] == "cat" else 1.0
        assert torch.all(image == expected)


def test_image_folder_rgb_resized(tmp_path):
    colors = {"red": (255, 0, 0), "blue": (0, 0, 255)}
    _make_image_folder(tmp_path / "images", colors, size=(20, 10), mode="RGB")
    dataset = load_image_dataset(str(tmp_path / "images"), image_size=8, cache_dir=str(tmp_path / "cache"))
    assert dataset.images.shape == (6, 3, 8, 8) and dataset.num_channels == 3
    red = dataset.images[dataset.labels == dataset.class_names.index("red")]
    assert torch.all(red[:, 0] == 1.0) and torch.all(red[:, 2] == -1.0)


def test_image_folder_of_mixed_sizes_needs_image_size(tmp_path):
    _make_image_folder(tmp_path / "images", {"small": 0, "other": 9}, size=(8, 8))
    Image.new("L", (10, 10), 0).save(tmp_path / "images" / "small" / "big.png")
    with pytest.raises(ValueError, match="`image_size`"):
        load_image_dataset(str(tmp_path / "images"), cache_dir=str(tmp_path / "cache"))


@pytest.fixture
def saved_dataset(tmp_path):
    """A `save_to_disk` folder with an image column `picture` and a string label column `kind`."""
    pictures = [Image.new("L", (4, 4), value) for value in (0, 100, 255)]
    dataset = datasets.Dataset.from_dict({"picture": pictures, "kind": ["b", "a", "b"]})
    dataset = dataset.cast_column("picture", datasets.Image())
    dataset.save_to_disk(str(tmp_path / "saved"))
    return str(tmp_path / "saved")


def test_bad_columns_list_available_columns(saved_dataset):
    with pytest.raises(ValueError, match=r"`image_column`='img'.*picture \(Image\).*kind \(Value\)"):
        load_image_dataset(saved_dataset, image_column="img", label_column="kind")
    # No ClassLabel column to auto-detect: the error names the columns to choose from.
    with pytest.raises(ValueError, match=r"`label_column`.*picture.*kind"):
        load_image_dataset(saved_dataset)


def test_saved_dataset_with_string_labels(saved_dataset):
    dataset = load_image_dataset(saved_dataset, label_column="kind")
    assert dataset.class_names == ["a", "b"] and dataset.labels.tolist() == [1, 0, 1]
    assert dataset.images[:, 0, 0, 0].tolist() == pytest.approx([-1.0, 100 / 127.5 - 1, 1.0])


def test_unknown_name_lists_builtins(hub_offline):
    with pytest.raises(ValueError, match=r"'digits', 'fashion_mnist'.*local file or folder.*Hub"):
        load_image_dataset("no_such_dataset_of_images")


# ---------------------------------------------------------------- PNG grid


def test_image_grid_upscales_tiny_images(tmp_path):
    images = load_image_dataset("digits", "test").images[:10]
    picture = save_image_grid(images, tmp_path / "grid" / "digits.png", nrow=4)
    with Image.open(tmp_path / "grid" / "digits.png") as saved:
        # 8×8 tiles enlarged ×8 to 64 px, 2 px padding: 4 columns and ceil(10 / 4) = 3 rows.
        assert saved.size == (4 * 66 + 2, 3 * 66 + 2) and saved.mode == "L"
        grid = np.asarray(saved)
    np.testing.assert_array_equal(grid, np.asarray(picture))
    # Pixel (row 5, column 3) of image 6 (grid row 1, column 2) covers an 8×8 patch.
    expected = round((images[6, 0, 5, 3].item() + 1) * 127.5)
    top, left = 2 + 66 + 5 * 8, 2 + 2 * 66 + 3 * 8
    assert np.all(grid[top : top + 8, left : left + 8] == expected)


def test_image_grid_rgb_keeps_large_images_unscaled(tmp_path):
    images = torch.rand(3, 3, 70, 70) * 2 - 1
    save_image_grid(images, tmp_path / "rgb.png", nrow=8, padding=0)
    with Image.open(tmp_path / "rgb.png") as saved:
        assert saved.size == (210, 70) and saved.mode == "RGB"
