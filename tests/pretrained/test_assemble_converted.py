"""Blocks of a converted model fine-tuned in separate folders merge with `assemble`: same conversion and stems checked,
each block's trained version kept over the converted one, conflicts and foreign folders named."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from hf_diffusionblocks.command_assemble import assemble
from hf_diffusionblocks.pretrained.conversion import convert_pretrained_transformer
from hf_diffusionblocks.pretrained.converted_pipeline import convert_pipeline
from hf_diffusionblocks.pretrained.finetuning import BlockFinetuningModel, NativeObjective, finetuning_loss, prepare_output_folder
from hf_diffusionblocks.pretrained.lora import LoraSettings
from hf_diffusionblocks.pretrained.modeling_routed import RoutedDiTTransformer2DModel
from hf_diffusionblocks.remote_code import REMOTE_CODE_MODULE
from tiny_models import random_inputs, save_pipeline_folder


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return save_pipeline_folder("dit", tmp_path_factory.mktemp("dit"))


def fine_tune(converted, output_dir, block_index, seed, lora=None):
    """One optimizer step on block `block_index`, saved into `output_dir` (a complete converted folder)."""
    prepare_output_folder(str(converted), str(output_dir))
    model = BlockFinetuningModel(str(converted), block_index, lora=lora)
    optimizer = torch.optim.AdamW(model.block_parameters(block_index), lr=1e-2)
    batch = random_inputs("dit", 4, torch.zeros(4), seed=seed)
    model.train()
    finetuning_loss(model, block_index, batch["hidden_states"], {"class_labels": batch["class_labels"]},
                    NativeObjective(model.manifest), torch.Generator().manual_seed(seed)).backward()
    optimizer.step()
    folder = output_dir / "lora" if lora else output_dir
    model.save_block(str(folder), block_index, training_steps=1)
    return model.eval()


def test_blocks_trained_apart_merge_into_one_folder(source, tmp_path):
    converted = tmp_path / "converted"
    convert_pretrained_transformer(str(source), str(converted), 2)
    high = fine_tune(converted, tmp_path / "run0", 0, seed=0)
    low = fine_tune(converted, tmp_path / "run1", 1, seed=1, lora=LoraSettings(rank=2))
    assert assemble(str(tmp_path / "merged"), [str(tmp_path / "run0"), str(tmp_path / "run1")]) == []
    merged = RoutedDiTTransformer2DModel.from_pretrained(str(tmp_path / "merged"), lora_dir=str(tmp_path / "merged" / "lora"))
    assert merged.block_training_steps == {0: 1}  # block 1 is the converted one, with run1's adapter merged
    for model, timesteps in ((high, [900, 700]), (low, [100, 300])):
        inputs = random_inputs("dit", 2, torch.tensor(timesteps), seed=7)
        with torch.no_grad():
            assert torch.allclose(merged(**inputs).sample, model(**inputs).sample, atol=1e-5)
    assert "fine-tuned (1 steps)" in (tmp_path / "merged" / "README.md").read_text()

    # another run that trained block 0 too: two trained versions of one block are a conflict
    fine_tune(converted, tmp_path / "run2", 0, seed=2)
    with pytest.raises(ValueError, match="block 0 was trained differently"):
        assemble(str(tmp_path / "conflict"), [str(tmp_path / "run0"), str(tmp_path / "run2")])
    assert not (tmp_path / "conflict").exists()


def test_folders_of_another_conversion_or_with_other_stems_are_refused(source, tmp_path):
    equal = tmp_path / "equal"
    convert_pretrained_transformer(str(source), str(equal), 2)
    uniform = tmp_path / "uniform"
    convert_pretrained_transformer(str(source), str(uniform), 2, partition="uniform", overlap=0.2)
    with pytest.raises(ValueError, match=r"another conversion than .*\['time_partition'\] differ"):
        assemble(str(tmp_path / "a"), [str(equal), str(uniform)])
    changed = tmp_path / "changed"
    shutil.copytree(equal, changed)
    stems = load_file(changed / "stems.safetensors")
    save_file({name: tensor + 1 for name, tensor in stems.items()}, changed / "stems.safetensors")
    with pytest.raises(ValueError, match="does not match the stems digest"):
        assemble(str(tmp_path / "b"), [str(equal), str(changed)])
    with pytest.raises(ValueError, match="are not converted folders"):
        assemble(str(tmp_path / "c"), [str(equal), str(source)])


def test_converted_pipeline_folders_merge_into_a_pipeline_folder(source, tmp_path, capsys):
    from hf_diffusionblocks_cli import main

    first = tmp_path / "first"
    convert_pipeline(str(source), str(first), 2)
    second = tmp_path / "second"
    shutil.copytree(first, second)
    fine_tune(first / "transformer", second / "transformer", 1, seed=3)
    (first / "transformer" / "block_1.safetensors").unlink()  # the first folder holds block 0 only
    assert main(["assemble", str(tmp_path / "merged"), str(first), str(second), "--require_complete"]) == 0
    assert "converted model" in capsys.readouterr().out
    merged = tmp_path / "merged"
    assert json.loads((merged / "model_index.json").read_text())["transformer"] == [REMOTE_CODE_MODULE, "RoutedDiTTransformer2DModel"]
    assert (merged / "transformer" / "hf_diffusionblocks_classes.py").is_file() and (merged / "vae" / "config.json").is_file()
    expected = load_file(second / "transformer" / "block_1.safetensors")
    got = load_file(merged / "transformer" / "block_1.safetensors")
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    assert RoutedDiTTransformer2DModel.from_pretrained(str(merged), subfolder="transformer").block_training_steps == {1: 1}
