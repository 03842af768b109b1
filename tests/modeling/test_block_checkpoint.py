"""block_checkpoint's folder writes: staged, renamed into place, marker files last."""

import os

import pytest

from hf_diffusionblocks import CharacterTokenizer
from hf_diffusionblocks import atomic_io
from hf_diffusionblocks.atomic_io import atomic_save_folder


def test_atomic_save_folder_renames_every_file_into_place_marker_last(tmp_path, monkeypatch):
    tokenizer = CharacterTokenizer(characters="abc")
    renamed, original = [], os.replace
    monkeypatch.setattr(atomic_io.os, "replace", lambda source, target: renamed.append(str(target)) or original(source, target))
    (tmp_path / "block_0.safetensors").write_bytes(b"kept")           # what the folder already holds stays
    atomic_save_folder(tmp_path, tokenizer.save_pretrained, last=("tokenizer_config.json",))

    saved = sorted(str(path) for path in tmp_path.rglob("*") if path.is_file() and path.name != "block_0.safetensors")
    assert saved and sorted(renamed) == saved                          # every file arrived by a rename
    assert os.path.basename(renamed[-1]) == "tokenizer_config.json"    # the marker readers test for comes last
    assert (tmp_path / "block_0.safetensors").read_bytes() == b"kept"
    assert not [path for path in os.listdir(tmp_path) if path.startswith(".saving-")]  # no staging folder left
    assert CharacterTokenizer.from_pretrained(tmp_path).encode("abc") == tokenizer.encode("abc")


def test_atomic_save_folder_leaves_nothing_when_the_save_fails(tmp_path):
    def failing_save(staging: str) -> None:
        with open(os.path.join(staging, "half.json"), "w") as file:
            file.write("{")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_save_folder(tmp_path, failing_save)
    assert os.listdir(tmp_path) == []
