"""DiffusionBlocksTextPipeline: strings of the right length, prompts, one block per step, save/load, bad inputs."""

import pytest
import torch

from conftest import randomize_
from hf_diffusionblocks import (
    CharacterTokenizer,
    DiffusionBlocksForMaskedLM,
    DiffusionBlocksMaskedLMConfig,
    DiffusionBlocksTextPipeline,
    MaskedDiffusionBlocksScheduler,
)

@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: intra-op threads only add synchronisation (several times slower on a busy 2-core machine)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


CHARACTERS = "\n abcdefghijklmnopqrstuvwxyz,."


@pytest.fixture
def pipeline():
    tokenizer = CharacterTokenizer(characters=CHARACTERS)
    config = DiffusionBlocksMaskedLMConfig(
        vocab_size=len(tokenizer), mask_token_id=tokenizer.mask_token_id, hidden_size=32, num_hidden_layers=3,
        num_attention_heads=2, intermediate_size=64, max_position_embeddings=24, num_blocks=3,
    )
    model = randomize_(DiffusionBlocksForMaskedLM(config), std=0.2).eval()
    pipe = DiffusionBlocksTextPipeline(model, model.build_scheduler(), tokenizer)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_unconditional_samples_are_strings_of_the_right_length_without_masks(pipeline):
    output = pipeline(num_samples=3, sequence_length=20, num_inference_steps=6, generator=torch.Generator().manual_seed(0))
    assert len(output.texts) == 3 and all(isinstance(text, str) and len(text) == 20 for text in output.texts)
    assert output.token_ids.shape == (3, 20)
    assert not (output.token_ids == pipeline.tokenizer.mask_token_id).any()
    assert not (output.token_ids == pipeline.tokenizer.unk_token_id).any()  # [UNK] is never sampled
    assert all(set(text) <= set(CHARACTERS) for text in output.texts)
    assert len(pipeline(num_inference_steps=3).texts[0]) == 24  # default: max_position_embeddings
    # num_samples is another name of diffusers-style num_texts_per_prompt
    named = pipeline(num_texts_per_prompt=3, sequence_length=20, num_inference_steps=6, generator=torch.Generator().manual_seed(0))
    assert named.texts == output.texts


def test_prompts_are_kept_and_masks_in_them_are_filled(pipeline):
    output = pipeline(prompt=["to be, ", "or not"], num_texts_per_prompt=2, sequence_length=16, num_inference_steps=6,
                      generator=torch.Generator().manual_seed(1))
    assert [text[:7] for text in output.texts[:2]] == ["to be, "] * 2
    assert [text[:6] for text in output.texts[2:]] == ["or not"] * 2
    assert all(len(text) == 16 for text in output.texts)
    infilled = pipeline(prompt="ab[MASK]d", sequence_length=8, num_inference_steps=3).texts[0]
    assert len(infilled) == 8 and infilled[:2] == "ab" and infilled[3] == "d"


def test_each_step_runs_only_the_block_that_owns_its_t(pipeline):
    calls, original = [], pipeline.transformer.forward_block

    def recording_forward_block(block_index, input_ids, t, *args, **kwargs):
        calls.append((block_index, float(t)))
        return original(block_index, input_ids, t, *args, **kwargs)

    pipeline.transformer.forward_block = recording_forward_block
    pipeline(sequence_length=8, num_inference_steps=9)
    assert [block for block, _ in calls] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert [t for _, t in calls] == sorted((t for _, t in calls), reverse=True) and calls[0][1] == 1.0
    scheduler = pipeline.scheduler
    for block_index, t in calls:
        low, high = scheduler.block_interval(block_index)
        assert low < t <= high + 1e-6


def test_sampling_is_reproducible_and_survives_save_and_load(pipeline, tmp_path):
    def run(pipe, seed):
        return pipe(num_samples=2, sequence_length=12, num_inference_steps=6, generator=torch.Generator().manual_seed(seed)).texts

    assert run(pipeline, 0) == run(pipeline, 0) and run(pipeline, 0) != run(pipeline, 1)
    pipeline.save_pretrained(tmp_path)
    assert (tmp_path / "tokenizer" / "tokenizer_config.json").is_file()
    assert (tmp_path / "transformer" / "block_2.safetensors").is_file()
    loaded = DiffusionBlocksTextPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert isinstance(loaded.tokenizer, CharacterTokenizer) and loaded.tokenizer.get_vocab() == pipeline.tokenizer.get_vocab()
    assert run(loaded, 0) == run(pipeline, 0)


def test_bad_inputs_raise_clear_errors(pipeline):
    with pytest.raises(ValueError, match="must be shorter than sequence_length=4"):
        pipeline(prompt="abcdef", sequence_length=4)
    with pytest.raises(ValueError, match=r"sequence_length must be an integer in \[1, 24\]"):
        pipeline(sequence_length=25)
    with pytest.raises(ValueError, match="outside the 'characters' vocabulary"):
        pipeline(prompt="ABC")
    with pytest.raises(ValueError, match="num_samples"):
        pipeline(num_samples=0)
    with pytest.raises(ValueError, match="num_texts_per_prompt"):
        pipeline(num_texts_per_prompt=0)
    with pytest.raises(ValueError, match="give one of them"):
        pipeline(num_samples=2, num_texts_per_prompt=3)
    with pytest.raises(ValueError, match="scheduler.num_blocks=2 differs"):
        DiffusionBlocksTextPipeline(pipeline.transformer, MaskedDiffusionBlocksScheduler(num_blocks=2), pipeline.tokenizer)
    with pytest.raises(ValueError, match="not the model's tokenizer"):
        DiffusionBlocksTextPipeline(pipeline.transformer, pipeline.scheduler, CharacterTokenizer(vocabulary_type="text8"))


def test_partial_model_cannot_sample_and_says_which_block(pipeline):
    partial = DiffusionBlocksForMaskedLM(pipeline.transformer.config, block_indices=[0])
    pipe = DiffusionBlocksTextPipeline(partial, partial.build_scheduler(), pipeline.tokenizer)
    with pytest.raises(ValueError, match="block 1 is not loaded"):
        pipe(sequence_length=8, num_inference_steps=6)
