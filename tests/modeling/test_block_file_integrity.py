"""Block files verify themselves: truncation, flipped bits and foreign tensors are refused by name."""

import pytest
import torch
from safetensors.torch import load_file, save_file
from safetensors import safe_open

from conftest import randomize_
from hf_diffusionblocks import DiffusionBlocksDiTModel
from hf_diffusionblocks.modeling.block_checkpoint import load_block_file, metadata_digest, read_block_metadata, tensors_digest


@pytest.fixture
def saved(tiny_dit_config, tmp_path):
    model = randomize_(DiffusionBlocksDiTModel(tiny_dit_config))
    model.save_pretrained(tmp_path)
    return model, tmp_path


def flip_one_bit_in_tensor_data(path):
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01                      # the data section ends the file; the header stays valid
    path.write_bytes(bytes(data))


def test_every_block_file_records_the_checksum_of_its_tensors(saved):
    model, folder = saved
    for block_index in range(3):
        path = folder / f"block_{block_index}.safetensors"
        assert read_block_metadata(str(path))["weights_sha256"] == tensors_digest(model.block_state_dict(block_index))


def test_flipped_bits_are_refused_on_load_and_skippable(saved):
    model, folder = saved
    flip_one_bit_in_tensor_data(folder / "block_1.safetensors")
    with pytest.raises(ValueError, match=r"block 1 \(.*block_1\.safetensors\) is corrupt"):
        DiffusionBlocksDiTModel.from_pretrained(folder)
    DiffusionBlocksDiTModel.from_pretrained(folder, block_index=[0, 2])      # the intact blocks still load
    loaded = DiffusionBlocksDiTModel.from_pretrained(folder, verify_checksums=False)
    assert not all(torch.equal(a, b) for a, b in zip(loaded.get_block(1).state_dict().values(),
                                                    model.get_block(1).state_dict().values()))


def test_truncated_block_file_is_named(saved):
    _, folder = saved
    path = folder / "block_2.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"block_2\.safetensors cannot be read as safetensors .* truncated or corrupt"):
        DiffusionBlocksDiTModel.from_pretrained(folder)
    with pytest.raises(ValueError, match=r"block_2\.safetensors cannot be read"):
        load_block_file(str(path))


def test_extra_or_missing_tensors_are_listed(saved, tiny_dit_config):
    _, folder = saved
    path = folder / "block_0.safetensors"
    with safe_open(str(path), framework="pt") as file:
        metadata = file.metadata()
    tensors = load_file(path)
    dropped = sorted(tensors)[0]
    del tensors[dropped]
    tensors["blocks.0.extra"] = torch.zeros(2)
    metadata["weights_sha256"] = tensors_digest(tensors)        # a consistent file of the wrong model
    metadata["metadata_sha256"] = metadata_digest(metadata)
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(ValueError, match=rf"block 0 .* missing tensor {dropped}; unexpected tensor blocks\.0\.extra"):
        DiffusionBlocksDiTModel.from_pretrained(folder)


def rewrite_metadata(path, **changes):
    """The same tensors, with some metadata strings changed and nothing else (as an editor of the header would)."""
    with safe_open(str(path), framework="pt") as file:
        metadata = dict(file.metadata())
    save_file(load_file(path), str(path), metadata={**metadata, **changes})


@pytest.mark.parametrize("changes", [{"training_steps": "9"}, {"num_blocks": "4"}, {"weights_sha256": "0" * 64}],
                         ids=lambda changes: next(iter(changes)))
def test_the_checksum_covers_the_metadata(saved, changes, capsys):
    model, folder = saved
    model.save_pretrained(folder, training_steps={1: 5})
    path = folder / "block_1.safetensors"
    rewrite_metadata(path, **changes)
    with pytest.raises(ValueError, match=r"block_1\.safetensors's metadata .* does not match the metadata_sha256"):
        read_block_metadata(str(path))
    with pytest.raises(ValueError, match=r"block_1\.safetensors's metadata"):
        DiffusionBlocksDiTModel.from_pretrained(folder)
    from hf_diffusionblocks_cli import main

    assert main(["info", str(folder)]) == 1
    assert "foreign block 1: its metadata (block_index, config, training_steps, ...) was edited" in capsys.readouterr().out


def test_a_file_written_before_checksums_loads_with_a_warning_naming_it(saved, caplog):
    model, folder = saved
    path = folder / "block_2.safetensors"
    with safe_open(str(path), framework="pt") as file:
        metadata = {k: v for k, v in file.metadata().items() if k not in ("weights_sha256", "metadata_sha256")}
    save_file(load_file(path), path, metadata=metadata)  # the header of a file saved before checksums existed
    with caplog.at_level("WARNING", logger="hf_diffusionblocks.modeling.block_checkpoint"):
        loaded = DiffusionBlocksDiTModel.from_pretrained(folder)
    warned = [record.getMessage() for record in caplog.records if "records no checksum" in record.getMessage()]
    assert len(warned) == 1 and str(path) in warned[0]
    assert all(torch.equal(a, b) for a, b in zip(loaded.get_block(2).state_dict().values(), model.get_block(2).state_dict().values()))
