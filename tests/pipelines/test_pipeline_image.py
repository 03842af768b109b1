"""DiffusionBlocksImagePipeline: sampling with a tiny model, one block per step, save/load."""

import numpy as np
import pytest
import torch

from conftest import randomize_
from hf_diffusionblocks import (
    DiffusionBlocksDiTConfig,
    DiffusionBlocksDiTModel,
    DiffusionBlocksImagePipeline,
    DiffusionBlocksScheduler,
)


@pytest.fixture
def pipeline(tiny_dit_config):
    model = randomize_(DiffusionBlocksDiTModel(tiny_dit_config), std=0.02).eval()
    return DiffusionBlocksImagePipeline(model, DiffusionBlocksScheduler(**tiny_dit_config.scheduler_kwargs()))


def test_samples_have_the_requested_type_and_shape(pipeline):
    generator = torch.Generator().manual_seed(0)
    images = pipeline([0, 3, 7], num_inference_steps=6, generator=generator, output_type="pt").images
    assert images.shape == (3, 1, 8, 8) and images.min() >= 0 and images.max() <= 1
    arrays = pipeline([1], num_inference_steps=3, output_type="np").images
    assert arrays.shape == (1, 8, 8, 1)
    pil = pipeline(2, num_inference_steps=3).images
    assert pil[0].size == (8, 8)


def test_each_step_runs_only_the_block_that_owns_its_sigma(pipeline):
    calls = []
    original = pipeline.transformer.forward_block

    def recording_forward_block(block_index, sample, sigma, *args, **kwargs):
        calls.append((block_index, float(sigma)))
        return original(block_index, sample, sigma, *args, **kwargs)

    pipeline.transformer.forward_block = recording_forward_block
    pipeline([0, 1], num_inference_steps=9, guidance_scale=1.0)
    assert [block for block, _ in calls] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    partition = pipeline.transformer.config.noise_partition
    for block_index, sigma in calls:
        low, high = partition.block_interval(block_index)
        assert low * (1 - 1e-6) <= sigma <= high * (1 + 1e-6)


def test_sampling_is_reproducible_and_guidance_changes_it(pipeline):
    def sample(scale, seed):
        return pipeline([4, 5], num_inference_steps=6, guidance_scale=scale,
                        generator=torch.Generator().manual_seed(seed), output_type="np").images
    assert np.array_equal(sample(2.0, 0), sample(2.0, 0))
    assert not np.array_equal(sample(2.0, 0), sample(1.0, 0))
    assert not np.array_equal(sample(2.0, 0), sample(2.0, 1))


def test_save_and_load_pipeline_folder(pipeline, tmp_path):
    pipeline.save_pretrained(tmp_path)
    assert (tmp_path / "transformer" / "block_2.safetensors").is_file()
    assert (tmp_path / "scheduler" / "scheduler_config.json").is_file()
    loaded = DiffusionBlocksImagePipeline.from_pretrained(tmp_path)
    run = lambda p: p([0, 9], num_inference_steps=6, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert np.array_equal(run(pipeline), run(loaded))


def test_bad_inputs_are_rejected(pipeline, tiny_dit_config):
    with pytest.raises(ValueError, match="class_labels"):
        pipeline([10])
    with pytest.raises(ValueError, match="output_type"):
        pipeline([1], output_type="jpeg")
    with pytest.raises(ValueError, match="guidance_scale"):
        pipeline([1], guidance_scale=0.5)
    with pytest.raises(ValueError, match="partition"):
        DiffusionBlocksImagePipeline(pipeline.transformer, DiffusionBlocksScheduler(partition="uniform_log"))


def test_partial_model_cannot_sample_and_says_which_block(tiny_dit_config):
    model = DiffusionBlocksDiTModel(tiny_dit_config, block_indices=[0])
    pipe = DiffusionBlocksImagePipeline(model, DiffusionBlocksScheduler(**tiny_dit_config.scheduler_kwargs()))
    with pytest.raises(ValueError, match="block 1 is not loaded"):
        pipe([0], num_inference_steps=6)


def test_latent_pipeline_decodes_with_a_vae(tmp_path):
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(in_channels=1, out_channels=1, latent_channels=2, block_out_channels=(8, 8),
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        layers_per_block=1, norm_num_groups=4, sample_size=16)
    config = DiffusionBlocksDiTConfig(image_size=8, patch_size=2, num_channels=2, hidden_size=32, num_hidden_layers=3,
                                      num_attention_heads=2, intermediate_size=64, num_labels=3, num_blocks=3)
    pipe = DiffusionBlocksImagePipeline(DiffusionBlocksDiTModel(config), DiffusionBlocksScheduler(**config.scheduler_kwargs()), vae=vae)
    images = pipe([0, 1], num_inference_steps=3, output_type="pt").images
    assert images.shape == (2, 1, 16, 16)
    pipe.save_pretrained(tmp_path)
    assert DiffusionBlocksImagePipeline.from_pretrained(tmp_path).vae is not None


def test_every_saved_file_arrives_by_an_atomic_rename(pipeline, tmp_path, monkeypatch):
    # block-parallel processes save into one folder while others load it: no file may be written in place
    import os

    from hf_diffusionblocks.pipelines import pipeline_utils

    renamed, original = [], os.replace
    monkeypatch.setattr(pipeline_utils.os, "replace", lambda source, target: renamed.append(str(target)) or original(source, target))
    pipeline.save_pretrained(tmp_path)
    saved = sorted(str(path) for path in tmp_path.rglob("*") if path.is_file())
    assert saved and set(saved) <= set(renamed)
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".saving-")]   # staging removed
    assert type(DiffusionBlocksImagePipeline.from_pretrained(tmp_path).transformer) is type(pipeline.transformer)
