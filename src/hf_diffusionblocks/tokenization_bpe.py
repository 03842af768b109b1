"""A byte-level BPE tokenizer trained on a corpus with the `tokenizers` library, as a transformers tokenizer.

Byte-level (GPT-2 style): every text encodes, with no unknown token, and decoding is lossless. The
special tokens are `<|endoftext|>` (bos = eos, between documents) and `<|pad|>` (left padding for batched
generation). The result is a `PreTrainedTokenizerFast` saved as `tokenizer.json` + `tokenizer_config.json`,
so `AutoTokenizer.from_pretrained(folder)` loads it without this library.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

END_OF_TEXT = "<|endoftext|>"
PADDING = "<|pad|>"
# Lines per `encode_batch` call of `encode_corpus` (keeps memory flat on a 5 MB corpus).
_LINES_PER_BATCH = 20_000


def train_bpe_tokenizer(text: str, vocab_size: int = 1024, min_frequency: int = 2) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `text`.

    Args:
        text (`str`): the training corpus (e.g. `load_text_corpus("shakespeare", "train")`).
        vocab_size (`int`, defaults to 1024): size of the vocabulary, the 256 bytes and 2 special tokens included.
        min_frequency (`int`, defaults to 2): a merge needs at least this many occurrences.
    Returns:
        `PreTrainedTokenizerFast` with `eos_token = bos_token = "<|endoftext|>"`, `pad_token = "<|pad|>"`,
        `padding_side = "left"`.
    """
    minimum = 256 + 2
    if not isinstance(vocab_size, int) or vocab_size < minimum:
        raise ValueError(f"vocab_size must be an integer >= {minimum} (256 bytes + 2 special tokens), got {vocab_size!r}.")
    if not text:
        raise ValueError("train_bpe_tokenizer needs a non-empty text.")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[END_OF_TEXT, PADDING],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(text.splitlines(keepends=True), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=END_OF_TEXT,
        eos_token=END_OF_TEXT,
        pad_token=PADDING,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )


def encode_corpus(tokenizer, text: str) -> torch.Tensor:
    """Ids of a whole corpus `(num_tokens,)` int64, line by line (no special tokens).

    A `CharacterTokenizer` uses its own vectorised `encode_corpus`; any other tokenizer encodes lines in
    batches (byte-level BPE never merges across a newline, so this equals encoding the text at once up to
    whitespace runs that straddle a line end).
    """
    if hasattr(tokenizer, "encode_corpus"):
        return tokenizer.encode_corpus(text)
    lines = text.splitlines(keepends=True)
    ids: list[int] = []
    for start in range(0, len(lines), _LINES_PER_BATCH):
        batch = tokenizer(lines[start : start + _LINES_PER_BATCH], add_special_tokens=False)["input_ids"]
        for line_ids in batch:
            ids.extend(line_ids)
    return torch.tensor(ids, dtype=torch.long)
