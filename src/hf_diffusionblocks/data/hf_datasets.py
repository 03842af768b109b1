"""Loading one split of a `datasets` dataset, shared by the image and text loaders.

A name is tried, in order, as a folder written by `save_to_disk`, as a folder of raw files (read
with a packaged builder such as `"imagefolder"` or `"text"`), and as a Hub dataset name. The Hub
is reached only when it is online or the dataset is already in the `datasets` cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import datasets

# Files that `Dataset.save_to_disk` / `DatasetDict.save_to_disk` write at the top of their folder.
_SAVED_DATASET_MARKERS: tuple[str, ...] = ("dataset_dict.json", "state.json")


def is_saved_dataset(path: Path) -> bool:
    """Whether `path` is a folder written by `save_to_disk`."""
    return path.is_dir() and any((path / marker).is_file() for marker in _SAVED_DATASET_MARKERS)


def _select_split(
    dataset: datasets.Dataset | datasets.DatasetDict, split: str, name: str
) -> datasets.Dataset:
    """The split `split` of a `DatasetDict`; a plain `Dataset` is returned unchanged."""
    if not isinstance(dataset, datasets.DatasetDict):
        return dataset
    if split not in dataset:
        raise ValueError(
            f"`split`={split!r} is not in the dataset {name!r}; available splits: {sorted(dataset)}."
        )
    return dataset[split]


def load_dataset_split(
    name: str,
    split: str,
    folder_builder: str,
    builtin_names: Sequence[str],
    cache_dir: str | None = None,
) -> datasets.Dataset:
    """Loads the split `split` of a saved folder, a folder of raw files or a Hub dataset.

    Args:
        name (`str`): a `save_to_disk` folder, a folder of raw files, or a Hub dataset name.
        split (`str`): the split to return, e.g. `"train"`.
        folder_builder (`str`): the packaged `datasets` builder that reads a folder of raw files,
            `"imagefolder"` or `"text"`.
        builtin_names (`Sequence[str]`): the caller's builtin names, quoted in the error message.
        cache_dir (`str`, *optional*): the `datasets` cache folder; its default when `None`.

    Returns:
        `datasets.Dataset`: the requested split.

    Raises:
        `ValueError`: when `name` is neither an existing folder nor a loadable Hub dataset.
    """
    path = Path(name).expanduser()
    if is_saved_dataset(path):
        return _select_split(datasets.load_from_disk(str(path)), split, name)
    if path.is_dir():
        return datasets.load_dataset(folder_builder, data_dir=str(path), split=split, cache_dir=cache_dir)
    try:
        return datasets.load_dataset(name, split=split, cache_dir=cache_dir)
    except Exception as error:  # noqa: BLE001 -- the Hub raises many types; the cause is chained
        raise ValueError(
            f"`name`={name!r} is not an accepted dataset. Accepted: a builtin name "
            f"({', '.join(repr(builtin) for builtin in builtin_names)}), an existing local folder, or a Hub "
            f"dataset name (which needs the network or the `datasets` cache). Loading it from the Hub "
            f"failed with {type(error).__name__}: {error}"
        ) from error


def column_names_message(dataset: datasets.Dataset) -> str:
    """`"available columns: [...]"` with each column's feature type, for error messages."""
    described = [f"{column} ({type(feature).__name__})" for column, feature in dataset.features.items()]
    return f"available columns: {described}"
