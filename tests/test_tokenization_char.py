"""CharacterTokenizer: round trips, save/load, normalisers, strict mode, the mask token."""

import pytest
import torch

from hf_diffusionblocks import CharacterTokenizer

@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: intra-op threads only add synchronisation (several times slower on a busy 2-core machine)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


CORPUS = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n"


@pytest.fixture(params=["characters", "text8", "bytes"])
def tokenizer(request):
    if request.param == "characters":
        return CharacterTokenizer.from_corpus(CORPUS)
    return CharacterTokenizer(vocabulary_type=request.param, strict=False)


def test_corpus_vocabulary_layout():
    tokenizer = CharacterTokenizer.from_corpus(CORPUS)
    characters = sorted(set(CORPUS))
    assert tokenizer.vocab_size == len(characters)
    assert tokenizer.convert_ids_to_tokens(list(range(len(characters)))) == characters
    # [UNK] then [MASK] come after the characters; the mask is the last id
    assert (tokenizer.unk_token_id, tokenizer.mask_token_id, len(tokenizer)) == (len(characters), len(characters) + 1, len(characters) + 2)
    assert len(CharacterTokenizer(vocabulary_type="text8")) == 28 and CharacterTokenizer(vocabulary_type="text8").mask_token_id == 27
    assert len(CharacterTokenizer(vocabulary_type="bytes")) == 257


@pytest.mark.parametrize(
    "vocabulary_type, text, expected",
    [
        ("characters", "Speak, speak.\nAll:", "Speak, speak.\nAll:"),
        ("text8", "Speak,  SPEAK!\nall", "speak speak all"),
        ("bytes", "naïve – ünïcode ✓", "naïve – ünïcode ✓"),
    ],
)
def test_encode_decode_round_trip(vocabulary_type, text, expected):
    if vocabulary_type == "characters":
        tokenizer = CharacterTokenizer.from_corpus(CORPUS)
    else:
        tokenizer = CharacterTokenizer(vocabulary_type=vocabulary_type, strict=False)
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert len(ids) == (len(text.encode("utf-8")) if vocabulary_type == "bytes" else len(expected))
    assert tokenizer.decode(ids) == expected
    assert tokenizer.encode_corpus(text).tolist() == ids


def test_save_and_load_round_trip(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    loaded = CharacterTokenizer.from_pretrained(tmp_path)
    assert loaded.get_vocab() == tokenizer.get_vocab()
    assert (loaded.vocabulary_type, loaded.strict, loaded.mask_token_id) == (tokenizer.vocabulary_type, tokenizer.strict, tokenizer.mask_token_id)
    text = "speak [MASK] further"
    assert loaded.encode(text) == tokenizer.encode(text)
    assert loaded.decode(loaded.encode(text)) == tokenizer.decode(tokenizer.encode(text))


def test_mask_token_inside_text_is_one_token(tokenizer):
    ids = tokenizer.encode("ap[MASK]e", add_special_tokens=False)
    assert ids.count(tokenizer.mask_token_id) == 1 and len(ids) == 4
    assert tokenizer.decode(ids, skip_special_tokens=True) == "ape"


def test_strict_mode_names_the_characters_outside_the_vocabulary():
    with pytest.raises(ValueError, match=r"outside the 'text8' vocabulary.*','.*'1'"):
        CharacterTokenizer(vocabulary_type="text8").encode("Hello, world 1")
    with pytest.raises(ValueError, match=r"outside the 'characters' vocabulary.*'q'"):
        CharacterTokenizer.from_corpus(CORPUS).encode("quiz")
    lenient = CharacterTokenizer.from_corpus(CORPUS, strict=False)
    assert lenient.encode("qA", add_special_tokens=False)[0] == lenient.unk_token_id
    assert lenient.encode_corpus("qA").tolist() == lenient.encode("qA", add_special_tokens=False)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="vocabulary_type must be one of"):
        CharacterTokenizer(vocabulary_type="words")
    with pytest.raises(ValueError, match="repeated"):
        CharacterTokenizer(characters="abca")
    with pytest.raises(ValueError, match="needs `characters`"):
        CharacterTokenizer()
    with pytest.raises(ValueError, match="applies to vocabulary_type='characters' only"):
        CharacterTokenizer(characters="ab", vocabulary_type="text8")


def test_encode_corpus_is_fast_path_of_encode():
    tokenizer = CharacterTokenizer.from_corpus(CORPUS)
    ids = tokenizer.encode_corpus(CORPUS * 3)
    assert ids.dtype == torch.long and ids.tolist() == tokenizer.encode(CORPUS * 3, add_special_tokens=False)
