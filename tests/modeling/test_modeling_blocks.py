"""The shared block machinery, exercised through the DiT family (the first family)."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from conftest import randomize_
from hf_diffusionblocks import DiffusionBlocksDiTConfig, DiffusionBlocksDiTModel
from hf_diffusionblocks.modeling.block_checkpoint import read_block_metadata


def inputs(config, batch=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    sample = torch.randn(batch, config.num_channels, config.image_size, config.image_size, generator=generator)
    labels = torch.randint(0, config.num_labels, (batch,), generator=generator)
    return sample, labels


def test_blocks_share_no_parameter(tiny_dit_config):
    model = DiffusionBlocksDiTModel(tiny_dit_config)
    seen = {}
    for block_index in range(3):
        for parameter in model.block_parameters(block_index):
            assert id(parameter) not in seen, "a parameter belongs to two blocks"
            seen[id(parameter)] = block_index
    assert len(seen) == len(list(model.parameters()))


def test_layers_are_assigned_to_blocks(tiny_dit_config):
    model = DiffusionBlocksDiTModel(tiny_dit_config)
    assert [len(model.get_block(b).layers) for b in range(3)] == [2, 2, 2]
    config = DiffusionBlocksDiTConfig(**{**tiny_dit_config.to_dict(), "num_hidden_layers": 7, "layers_per_block": [3, 2, 2]})
    assert [len(DiffusionBlocksDiTModel(config).get_block(b).layers) for b in range(3)] == [3, 2, 2]
    with pytest.raises(ValueError, match="not divisible"):
        DiffusionBlocksDiTConfig(**{**tiny_dit_config.to_dict(), "num_hidden_layers": 7})


def test_partial_model_builds_one_block(tiny_dit_config):
    full = DiffusionBlocksDiTModel(tiny_dit_config)
    partial = DiffusionBlocksDiTModel(tiny_dit_config, block_indices=[1])
    assert partial.loaded_block_indices == [1]
    assert sum(p.numel() for p in partial.parameters()) == full.num_block_parameters(1)
    with pytest.raises(ValueError, match="block 0 is not loaded"):
        partial.forward_block(0, *inputs(tiny_dit_config)[:1], 1.0)
    with pytest.raises(ValueError, match=r"block_index must be an int in \[0, 2\]"):
        DiffusionBlocksDiTModel(tiny_dit_config, block_indices=[3])


def test_save_writes_one_file_per_block_with_provenance(tiny_dit_config, tmp_path):
    model = randomize_(DiffusionBlocksDiTModel(tiny_dit_config))
    model.save_pretrained(tmp_path, training_steps={0: 5, 1: 6, 2: 7})
    assert sorted(os.listdir(tmp_path)) == [
        "block_0.safetensors", "block_1.safetensors", "block_2.safetensors",
        "config.json", "hf_diffusionblocks_classes.py", "model.safetensors.index.json",
    ]
    for block_index in range(3):
        weights = load_file(tmp_path / f"block_{block_index}.safetensors")
        assert all(name.startswith(f"blocks.{block_index}.") for name in weights)
        metadata = read_block_metadata(str(tmp_path / f"block_{block_index}.safetensors"))
        assert metadata["block_index"] == block_index and metadata["training_steps"] == 5 + block_index
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(model.state_dict())


def test_save_load_round_trip_is_bit_exact(tiny_dit_config, tmp_path):
    model = randomize_(DiffusionBlocksDiTModel(tiny_dit_config)).eval()
    model.save_pretrained(tmp_path)
    loaded = DiffusionBlocksDiTModel.from_pretrained(tmp_path)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    sample, labels = inputs(tiny_dit_config)
    sigma = torch.tensor([0.01, 0.3, 1.0, 50.0])
    assert torch.equal(model(sample, sigma, labels).sample, loaded(sample, sigma, labels).sample)


@pytest.mark.parametrize("block_index", [0, 1, 2])
def test_from_pretrained_one_block_loads_one_block(tiny_dit_config, tmp_path, block_index):
    model = randomize_(DiffusionBlocksDiTModel(tiny_dit_config)).eval()
    model.save_pretrained(tmp_path)
    one = DiffusionBlocksDiTModel.from_pretrained(tmp_path, block_index=block_index)
    assert one.loaded_block_indices == [block_index]
    count = sum(p.numel() for p in one.parameters())
    assert count == model.num_block_parameters(block_index)
    assert count == pytest.approx(sum(p.numel() for p in model.parameters()) / 3, rel=1e-9)
    sample, labels = inputs(tiny_dit_config)
    assert torch.equal(
        one.forward_block(block_index, sample, 0.4, labels).sample,
        model.forward_block(block_index, sample, 0.4, labels).sample,
    )


def test_forward_routes_each_sample_to_its_block(tiny_dit_config):
    model = randomize_(DiffusionBlocksDiTModel(tiny_dit_config)).eval()
    sample, labels = inputs(tiny_dit_config)
    sigma = torch.tensor([50.0, 0.3, 0.01, 0.6])
    routed = model(sample, sigma, labels).sample
    for row, block_index in enumerate([0, 1, 2, 0]):
        expected = model.forward_block(block_index, sample[row : row + 1], sigma[row : row + 1], labels[row : row + 1]).sample
        assert torch.allclose(routed[row : row + 1], expected, atol=1e-6)


def test_missing_blocks_are_listed(tiny_dit_config, tmp_path):
    model = DiffusionBlocksDiTModel(tiny_dit_config, block_indices=[0, 2])
    model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"missing blocks \[1\] \(present: \[0, 2\]"):
        DiffusionBlocksDiTModel.from_pretrained(tmp_path)
    assert DiffusionBlocksDiTModel.from_pretrained(tmp_path, block_index=2).loaded_block_indices == [2]


def test_blocks_from_different_partitions_refuse_to_assemble(tiny_dit_config, tmp_path):
    DiffusionBlocksDiTModel(tiny_dit_config).save_pretrained(tmp_path)
    other = DiffusionBlocksDiTConfig(**{**tiny_dit_config.to_dict(), "partition": "uniform_log"})
    DiffusionBlocksDiTModel(other, block_indices=[1]).save_block(tmp_path, 1)
    with pytest.raises(ValueError, match="differing fields: partition"):
        DiffusionBlocksDiTModel.from_pretrained(tmp_path)


def test_checkpoint_of_another_family_is_refused(tiny_dit_config, tmp_path):
    DiffusionBlocksDiTModel(tiny_dit_config).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["model_type"] = "llama"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="model_type='llama'"):
        DiffusionBlocksDiTModel.from_pretrained(tmp_path)


def test_bad_paths_and_arguments(tiny_dit_config, tmp_path):
    with pytest.raises(ValueError, match="no config.json"):
        DiffusionBlocksDiTModel.from_pretrained(tmp_path)
    DiffusionBlocksDiTModel(tiny_dit_config).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="block_index"):
        DiffusionBlocksDiTModel.from_pretrained(tmp_path, block_index=3)
    with pytest.raises(ValueError, match="unexpected arguments"):
        DiffusionBlocksDiTModel.from_pretrained(tmp_path, strict=False)


def test_auto_classes_load_the_model(tiny_dit_config, tmp_path):
    from transformers import AutoConfig, AutoModel

    DiffusionBlocksDiTModel(tiny_dit_config).save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), DiffusionBlocksDiTConfig)
    assert isinstance(AutoModel.from_pretrained(tmp_path), DiffusionBlocksDiTModel)


def test_zero_initialised_blocks_start_as_identity_residual_stack(tiny_dit_config):
    # AdaLN-Zero: with the modulations and readouts at zero, F = 0, so D = c_skip·z.
    model = DiffusionBlocksDiTModel(tiny_dit_config).eval()
    sample, labels = inputs(tiny_dit_config)
    denoised = model.forward_block(1, sample, 0.3, labels).sample
    assert torch.allclose(denoised, tiny_dit_config.preconditioning.c_skip(torch.tensor(0.3)) * sample)


def test_per_sample_level_broadcasts_a_scalar_and_refuses_other_shapes():
    from hf_diffusionblocks.modeling.modeling_blocks import per_sample_level

    assert per_sample_level(0.5, 3, "sigma", torch.device("cpu")).tolist() == [0.5, 0.5, 0.5]
    levels = per_sample_level(torch.tensor([1.0, 2.0]), 2, "t", torch.device("cpu"), torch.float64)
    assert levels.dtype == torch.float64 and levels.tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match=r"t must be a scalar or have shape \(3,\), got \(2,\)"):
        per_sample_level(torch.tensor([1.0, 2.0]), 3, "t", torch.device("cpu"))


@pytest.mark.parametrize("value", [0, -1, 2.0, True, None])
def test_require_positive_ints_names_the_field(value):
    from types import SimpleNamespace

    from hf_diffusionblocks.modeling.configuration_blocks import require_positive_ints

    require_positive_ints(SimpleNamespace(a=1, b=7), ("a", "b"))
    with pytest.raises(ValueError, match=r"b must be an integer >= 1, got"):
        require_positive_ints(SimpleNamespace(a=1, b=value), ("a", "b"))
