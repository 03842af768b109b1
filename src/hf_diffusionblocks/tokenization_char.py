"""`CharacterTokenizer`: one token per character (or per byte), plus `[MASK]`, as a transformers tokenizer.

Character-level language modelling reports bits per *character* (text8, Shakespeare), so the
tokenizer maps each character to one id and back without loss. Three vocabularies:

- `"characters"`: an explicit character list, e.g. every character of a training corpus
  (`CharacterTokenizer.from_corpus(text)`; for Shakespeare the 84 characters of the train split).
  Nothing is normalised. A character outside the list raises a `ValueError` (`strict=True`) or
  becomes `[UNK]` (`strict=False`).
- `"text8"`: the text8 alphabet, lower-case `a`–`z` and space (Mahoney's `wikifil` output). The
  normaliser lower-cases; a character still outside the alphabet raises (`strict=True`) or becomes a
  space, runs of spaces collapsing into one as in text8 (`strict=False`).
- `"bytes"`: the 256 UTF-8 byte values; every text encodes, one token per byte.

Special tokens come after the base vocabulary: `[UNK]` (only for `"characters"`), then `[MASK]`
(always last), so `mask_token_id == vocab_size - 1`. The string `[MASK]` inside a text is the mask
token (transformers splits added tokens out first), which lets prompts ask for infilling.
The vocabulary is stored in `tokenizer_config.json` (the `characters` init argument): there is no
separate vocabulary file.
"""

from __future__ import annotations

import re
from typing import Literal

import numpy as np
import torch
from transformers import PreTrainedTokenizer

VOCABULARY_TYPES = ("characters", "text8", "bytes")
TEXT8_CHARACTERS = " abcdefghijklmnopqrstuvwxyz"
_SPACE_RUNS = re.compile(" {2,}")


def _byte_token(value: int) -> str:
    """The token string of byte `value` (its Latin-1 character, so every byte has a distinct one-char token)."""
    return chr(value)


class CharacterTokenizer(PreTrainedTokenizer):
    """Character- or byte-level tokenizer with a `[MASK]` token, for masked diffusion language models.

    Args:
        characters (`str`, *optional*): the vocabulary of `vocabulary_type="characters"`, one token per
            character in this order (duplicates are refused). Ignored (must be None) for the other types.
        vocabulary_type (`"characters" | "text8" | "bytes"`, defaults to `"characters"`): see the module docstring.
        strict (`bool`, defaults to `True`): raise a `ValueError` for characters outside the vocabulary
            (after normalisation) instead of mapping them to `[UNK]` (characters) or space (text8).
        mask_token (`str`, defaults to `"[MASK]"`), unk_token (`str`, defaults to `"[UNK]"`).
    """

    model_input_names = ["input_ids", "attention_mask"]

    def __init__(
        self,
        characters: str | None = None,
        vocabulary_type: Literal["characters", "text8", "bytes"] = "characters",
        strict: bool = True,
        mask_token: str = "[MASK]",
        unk_token: str = "[UNK]",
        **kwargs,
    ):
        if vocabulary_type not in VOCABULARY_TYPES:
            raise ValueError(f"vocabulary_type must be one of {list(VOCABULARY_TYPES)}, got {vocabulary_type!r}.")
        if vocabulary_type == "characters":
            if not characters:
                raise ValueError("vocabulary_type='characters' needs `characters`, a non-empty string of the vocabulary.")
            duplicates = sorted({c for c in characters if characters.count(c) > 1})
            if duplicates:
                raise ValueError(f"`characters` must list each character once; repeated: {duplicates!r}.")
            tokens = list(characters)
        elif characters is not None:
            raise ValueError(f"`characters` applies to vocabulary_type='characters' only, not {vocabulary_type!r}.")
        else:
            tokens = list(TEXT8_CHARACTERS) if vocabulary_type == "text8" else [_byte_token(b) for b in range(256)]
        for special in (mask_token, unk_token):
            if special in tokens:
                raise ValueError(f"the special token {special!r} collides with a vocabulary character.")
        self.characters = characters
        self.vocabulary_type = vocabulary_type
        self.strict = bool(strict)
        self._token_to_id = {token: index for index, token in enumerate(tokens)}
        self._id_to_token = tokens
        kwargs["unk_token"] = unk_token if vocabulary_type == "characters" else None
        kwargs.setdefault("clean_up_tokenization_spaces", False)
        super().__init__(
            characters=characters, vocabulary_type=vocabulary_type, strict=strict, mask_token=mask_token, **kwargs
        )

    @classmethod
    def from_corpus(cls, text: str, **kwargs) -> "CharacterTokenizer":
        """A `"characters"` tokenizer whose vocabulary is the sorted set of characters of `text`."""
        if not text:
            raise ValueError("from_corpus needs a non-empty text.")
        return cls(characters="".join(sorted(set(text))), vocabulary_type="characters", **kwargs)

    # ---- vocabulary ------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Size of the base vocabulary (characters or bytes), special tokens excluded."""
        return len(self._id_to_token)

    def get_vocab(self) -> dict[str, int]:
        return {**self._token_to_id, **self.added_tokens_encoder}

    def _convert_token_to_id(self, token: str) -> int:
        if token in self._token_to_id:
            return self._token_to_id[token]
        if self.unk_token_id is None:
            raise ValueError(f"token {token!r} is not in the {self.vocabulary_type} vocabulary.")
        return self.unk_token_id

    def _convert_id_to_token(self, index: int) -> str:
        return self._id_to_token[index]

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str, ...]:
        """The vocabulary lives in tokenizer_config.json (`characters`, `vocabulary_type`): no extra file."""
        return ()

    # ---- normalisation and splitting -------------------------------------------------------
    def normalize(self, text: str) -> str:
        """The text as the vocabulary sees it (text8: lower-cased, other characters → space or error).

        Raises:
            `ValueError` (strict mode): naming the characters outside the vocabulary.
        """
        if self.vocabulary_type == "bytes":
            return text
        if self.vocabulary_type == "text8":
            text = text.lower()
        unknown = sorted(set(text) - self._token_to_id.keys())
        if unknown and self.strict:
            shown = ", ".join(repr(c) for c in unknown[:20]) + (" ..." if len(unknown) > 20 else "")
            raise ValueError(
                f"{len(unknown)} character(s) are outside the {self.vocabulary_type!r} vocabulary "
                f"of {self.vocab_size} characters: {shown}. Clean the text, or build the tokenizer with strict=False "
                f"({'map them to space' if self.vocabulary_type == 'text8' else 'map them to [UNK]'})."
            )
        if unknown and self.vocabulary_type == "text8":
            text = _SPACE_RUNS.sub(" ", "".join(c if c in self._token_to_id else " " for c in text))
        return text

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        if self.vocabulary_type == "bytes":
            return [_byte_token(b) for b in text.encode("utf-8")]
        return list(self.normalize(text))

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        if self.vocabulary_type == "bytes":
            raw = bytearray()
            pieces: list[str] = []
            for token in tokens:
                if token in self._token_to_id:
                    raw.append(ord(token))
                else:  # a special token between bytes
                    pieces.append(raw.decode("utf-8", errors="replace"))
                    pieces.append(token)
                    raw = bytearray()
            return "".join(pieces) + raw.decode("utf-8", errors="replace")
        return "".join(tokens)

    # ---- whole corpora ---------------------------------------------------------------------
    def encode_corpus(self, text: str) -> torch.Tensor:
        """Ids of a whole corpus `(num_tokens,)` int64, vectorised (a 5 MB text in about a second).

        Equal to `encode(text, add_special_tokens=False)` for text without special-token strings
        (the string `[MASK]` inside a corpus is encoded character by character here).
        """
        if self.vocabulary_type == "bytes":
            return torch.from_numpy(np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64))
        codes = np.frombuffer(self.normalize(text).encode("utf-32-le"), dtype=np.uint32)
        table_size = max(max(ord(c) for c in self._id_to_token), int(codes.max(initial=0))) + 1
        table = np.full(table_size, -1 if self.unk_token_id is None else self.unk_token_id, dtype=np.int64)
        for token, index in self._token_to_id.items():
            table[ord(token)] = index
        return torch.from_numpy(table[codes])
