"""Loading one split of a `datasets` dataset, shared by the image and text loaders.

A name is tried, in order, as a folder written by `save_to_disk`, as a folder of raw files (read
with a packaged builder such as `"imagefolder"` or `"text"`), and as a Hub dataset name. A name that
can only be a path (`./x`, `/x`, `~/x`, `x.txt`, ...) and does not exist fails at once. A Hub name is
first looked up with one quick request: a name the Hub does not have fails at once, and when the Hub
cannot be reached the dataset is read from the `datasets` cache in offline mode — without this, a
mistyped name spent about half a minute in `datasets`' download retries before its error.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Iterator, Sequence

import datasets
import datasets.config
import huggingface_hub.constants
from huggingface_hub import HfApi
from huggingface_hub.errors import HFValidationError, RepositoryNotFoundError

# How long the one lookup of a Hub dataset name may take before the Hub counts as unreachable.
HUB_LOOKUP_TIMEOUT_SECONDS = 10.0
# Suffixes of data files: a name ending so is a path, never a Hub dataset name.
_FILE_SUFFIXES = (".txt", ".gz", ".json", ".jsonl", ".csv", ".tsv", ".parquet", ".arrow", ".zip", ".tar")
# A Hub repo id: `name` or `namespace/name`.
_HUB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")

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
    return _select_split(load_dataset_splits(name, folder_builder, builtin_names, cache_dir), split, name)


def load_dataset_splits(
    name: str,
    folder_builder: str,
    builtin_names: Sequence[str],
    cache_dir: str | None = None,
) -> datasets.DatasetDict:
    """Every split of a saved folder, a folder of raw files or a Hub dataset (see `load_dataset_split`)."""
    path = Path(name).expanduser()
    if is_saved_dataset(path):
        loaded = datasets.load_from_disk(str(path))
        return loaded if isinstance(loaded, datasets.DatasetDict) else datasets.DatasetDict({"train": loaded})
    if path.is_dir():
        return datasets.load_dataset(folder_builder, data_dir=str(path), cache_dir=cache_dir)
    accepted = (f"Accepted: a builtin name ({', '.join(repr(builtin) for builtin in builtin_names)}), an existing local "
                f"file or folder, or a Hub dataset name (which needs the network or the `datasets` cache).")
    if looks_like_path(name):
        raise ValueError(f"`name`={name!r} is not an accepted dataset: there is no file or folder {str(path)!r}. {accepted}")
    hub_reachable = _check_hub_dataset(name, accepted)
    try:
        with contextlib.nullcontext() if hub_reachable else hub_offline():
            return datasets.load_dataset(name, cache_dir=cache_dir)
    except Exception as error:  # noqa: BLE001 -- the Hub raises many types; the cause is chained
        where = "from the Hub" if hub_reachable else "from the `datasets` cache (the Hub is unreachable)"
        raise ValueError(
            f"`name`={name!r} is not an accepted dataset. {accepted} Loading it {where} failed with "
            f"{type(error).__name__}: {error}"
        ) from error


def looks_like_path(name: str) -> bool:
    """Whether `name` can only be a local path: it starts like one, ends like a data file, or is no Hub id."""
    return (
        name.startswith(("/", "./", "../", "~", "\\"))
        or name.lower().endswith(_FILE_SUFFIXES)
        or not _HUB_ID_PATTERN.match(name)
    )


def _check_hub_dataset(name: str, accepted: str) -> bool:
    """One quick lookup of `name` on the Hub: a `ValueError` at once when the Hub answers that it has no such
    dataset; True when it has it; False when the Hub cannot be reached (or offline mode is on)."""
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        return False
    try:
        HfApi().dataset_info(name, timeout=HUB_LOOKUP_TIMEOUT_SECONDS)
    except (RepositoryNotFoundError, HFValidationError) as error:
        raise ValueError(
            f"`name`={name!r} is not an accepted dataset: it is no local file or folder, and the Hub has no dataset "
            f"of that name. {accepted}"
        ) from error
    except Exception:  # noqa: BLE001 -- no network, DNS, proxy, timeout: read the cache instead
        return False
    return True


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """`HF_HUB_OFFLINE=1` for the duration of the block: `datasets` reads its cache and fails at once
    instead of retrying requests to an unreachable Hub."""
    saved = huggingface_hub.constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE
    huggingface_hub.constants.HF_HUB_OFFLINE = datasets.config.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        huggingface_hub.constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE = saved


def column_names_message(dataset: datasets.Dataset) -> str:
    """`"available columns: [...]"` with each column's feature type, for error messages."""
    described = [f"{column} ({type(feature).__name__})" for column, feature in dataset.features.items()]
    return f"available columns: {described}"
