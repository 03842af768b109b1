"""The card of a converted folder (model_card.write_converted_model_card): what each block is, from the files."""

from __future__ import annotations

from safetensors.torch import load_file
from tiny_models import save_pipeline_folder

from hf_diffusionblocks.model_card import write_converted_model_card
from hf_diffusionblocks.modeling.block_checkpoint import save_block_file
from hf_diffusionblocks.pretrained import convert_pretrained_transformer


def test_the_card_says_which_blocks_are_converted_fine_tuned_or_missing(tmp_path):
    source = save_pipeline_folder("dit", tmp_path / "source")
    folder = tmp_path / "converted"
    convert_pretrained_transformer(str(source), str(folder), 3)
    tensors = {name: tensor + 1 for name, tensor in load_file(folder / "block_1.safetensors").items()}
    save_block_file(str(folder / "block_1.safetensors"), tensors, block_index=1, num_blocks=3, config_dict={},
                    training_steps=7)
    (folder / "block_2.safetensors").unlink()
    path = write_converted_model_card(str(folder), figures={"fid": 1.5}, steps_line="steps per block [2, 3, 5]")
    text = open(path, encoding="utf-8").read()
    rows = [line for line in text.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [row.split(" | ")[3] for row in rows] == ["converted (unchanged)", "fine-tuned (7 steps)", "missing"]
    assert "steps per block [2, 3, 5]\n```" in text
    assert "DiTPipeline.from_pretrained" in text and "RoutedDiTTransformer2DModel" in text
    assert text.endswith('```json\n{\n  "fid": 1.5\n}\n```\n')
    assert "lora_dir" not in text
