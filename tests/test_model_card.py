"""Model cards: front-matter parsed by `ModelCard.load`, partition table, per-block status, snippets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from hf_diffusionblocks import (
    BlockPartitionedConfig,
    DiffusionBlocksDiTModel,
    DiffusionBlocksImagePipeline,
    DiffusionBlocksScheduler,
    format_partition_table,
)
from hf_diffusionblocks.model_card import partition_table, template_text, write_model_card

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def partial_pipeline(tmp_path, tiny_dit_config):
    """A pipeline folder whose blocks 0 and 1 are trained (10 and 20 steps) and block 2 is missing."""
    config = tiny_dit_config
    model = DiffusionBlocksDiTModel(config, block_indices=[0, 1])
    folder = tmp_path / "partial"
    scheduler = DiffusionBlocksScheduler(**config.scheduler_kwargs())
    DiffusionBlocksImagePipeline(DiffusionBlocksDiTModel(config), scheduler).save_pretrained(folder)
    for block_index in range(3):
        os.remove(folder / "transformer" / f"block_{block_index}.safetensors")
    model.save_pretrained(folder / "transformer", training_steps={0: 10, 1: 20})
    (folder / "samples.png").write_bytes(b"\x89PNG fake")
    return folder, model


def write(folder, **overrides) -> ModelCard:
    arguments = dict(
        family="dit",
        dataset="cifar10",
        training_mode="blockwise",
        metrics={"fid": 37.2012345, "steps": 30},
        sample_grid="samples.png",
        extra={"learning_rate": 1e-4},
        repo_id="org/tiny-dit",
    )
    arguments.update(overrides)
    path = write_model_card(folder, **arguments)
    assert path == os.path.join(str(folder), "README.md")
    return ModelCard.load(path)


def test_front_matter_parses(partial_pipeline):
    card = write(partial_pipeline[0])
    assert card.data.library_name == "hf-diffusionblocks"
    assert {"diffusion-blocks", "block-wise-training", "dit", "image-generation"} <= set(card.data.tags)
    assert card.data.datasets == ["cifar10"]
    assert card.data.pipeline_tag == "unconditional-image-generation"


def test_body_has_partition_table_block_status_and_snippets(partial_pipeline):
    folder, model = partial_pipeline
    text = write(folder).text
    config = model.config
    assert format_partition_table(config.noise_partition, config.resolved_layers_per_block) in text
    assert "0.1796" in text and "0.5050" in text
    assert f"| 0 | 0-1 | present | 10 | {model.num_block_parameters(0):,} |" in text
    assert f"| 1 | 2-3 | present | 20 | {model.num_block_parameters(1):,} |" in text
    assert "| 2 | 4-5 | missing | — | — |" in text
    assert "Missing blocks: 2." in text
    assert "| fid | 37.2 |" in text and "| steps | 30 |" in text
    assert "![samples](samples.png)" in text
    assert "- **learning_rate:** 0.0001" in text
    assert 'DiffusionBlocksImagePipeline.from_pretrained("org/tiny-dit")' in text
    assert (
        'DiffusionBlocksDiTModel.from_pretrained("org/tiny-dit", subfolder="transformer", block_index=0)'
        in text
    )
    assert "arxiv.org/abs/2506.14202" in text and "Shing, Makoto" in text
    assert "\n\n\n" not in text


def test_model_folder_card_has_no_pipeline_snippet(tmp_path, tiny_dit_config):
    DiffusionBlocksDiTModel(tiny_dit_config).save_pretrained(tmp_path, training_steps={0: 1, 1: 2, 2: 3})
    text = write(tmp_path, sample_grid=None, metrics=None, training_mode="end_to_end").text
    assert 'from_pretrained("org/tiny-dit", block_index=0)' in text
    assert "Pipeline.from_pretrained" not in text  # a model folder: the pipeline is built around the model
    assert "DiffusionBlocksImagePipeline(model, DiffusionBlocksScheduler(**model.config.scheduler_kwargs()))" in text
    assert "Missing blocks" not in text and "| 2 | 4-5 | present | 3 |" in text
    assert "No metrics were recorded" in text


def test_bad_arguments_name_the_field(partial_pipeline, tmp_path):
    folder = partial_pipeline[0]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="training_mode must be one of"):
        write(folder, training_mode="layerwise")
    with pytest.raises(ValueError, match="sample_grid='nothing.png'"):
        write(folder, sample_grid="nothing.png")
    with pytest.raises(ValueError, match="no config.json"):
        write(tmp_path / "empty")


def test_partition_table_without_noise_partition_lists_layers():
    table = partition_table(
        BlockPartitionedConfig(num_hidden_layers=6, num_blocks=3, layers_per_block=[1, 2, 3])
    )
    assert table.splitlines()[2:] == ["    0        0-0", "    1        1-2", "    2        3-5"]


def test_checkout_template_is_the_packaged_one():
    checkout_template = REPOSITORY_ROOT / "model_cards" / "diffusion_blocks_template.md"
    if not checkout_template.exists():
        pytest.skip("not a source checkout")
    assert checkout_template.read_text(encoding="utf-8") == template_text()


def test_another_template_gets_the_same_variables(partial_pipeline, tmp_path):
    template = tmp_path / "custom.md"
    template.write_text("---\n{{ card_data }}\n---\nmissing={{ missing_blocks }} steps={{ blocks[1].training_steps }}\n")
    card = write(partial_pipeline[0], template=template)
    assert card.text.strip() == "missing=[2] steps=20"
    assert card.data.library_name == "hf-diffusionblocks"


def test_family_is_read_from_the_folder_and_checked_when_given(partial_pipeline):
    folder = partial_pipeline[0]
    card = write(folder, family=None)
    assert card.data.pipeline_tag == "unconditional-image-generation" and "dit" in card.data.tags
    assert "**48** steps" in card.text  # the pipeline's default, 16 steps for each of the 3 blocks
    with pytest.raises(ValueError, match="family='ar', but .* holds a diffusion_blocks_dit model"):
        write(folder, family="ar")
    with pytest.raises(ValueError, match="family must be one of"):
        write(folder, family="unet")
