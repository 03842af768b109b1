"""The text families' runs: tokenizers, configs from the flags, the families' tasks and what they write."""

from types import SimpleNamespace

import pytest
import torch

from hf_diffusionblocks import DiffusionBlocksForMaskedLM, DiffusionBlocksRecurrentForCausalLM
from hf_diffusionblocks.training.text_runs import (
    MaskedLMTrainingTask,
    RecurrentTrainingTask,
    build_character_tokenizer,
    build_masked_lm_config,
    build_recurrent_config,
)

TEXT = "to be or not to be, that is the question. " * 4


def masked_lm_args(tmp_path, **overrides):
    values = dict(hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=None, sequence_length=8,
                  masking_schedule="linear", training_mode="blockwise", num_blocks=3, layers_per_block=None,
                  output_dir=str(tmp_path), validation_windows=2, push_to_hub=False, hub_model_id=None, hub_token=None)
    return SimpleNamespace(**{**values, **overrides})


def test_character_vocabularies():
    corpus = build_character_tokenizer("corpus", TEXT)
    assert set(corpus.encode_corpus(TEXT).tolist()) <= set(range(len(corpus)))
    assert len(build_character_tokenizer("bytes", TEXT)) > len(corpus)


def test_masked_lm_config_follows_the_flags_and_end_to_end_is_one_block(tmp_path):
    tokenizer = build_character_tokenizer("corpus", TEXT)
    config = build_masked_lm_config(masked_lm_args(tmp_path), tokenizer)
    assert (config.num_blocks, config.intermediate_size, config.max_position_embeddings) == (3, 64, 8)
    assert config.vocab_size == len(tokenizer) and config.mask_token_id == tokenizer.mask_token_id
    assert build_masked_lm_config(masked_lm_args(tmp_path, training_mode="end_to_end"), tokenizer).num_blocks == 1


def test_masked_lm_task_saves_a_pipeline_folder(tmp_path):
    tokenizer = build_character_tokenizer("corpus", TEXT)
    args = masked_lm_args(tmp_path)
    config = build_masked_lm_config(args, tokenizer)
    ids = tokenizer.encode_corpus(TEXT)
    task = MaskedLMTrainingTask(config, tokenizer, ids, ids, args)
    assert task.model_dir == str(tmp_path / "transformer") and task.num_examples == len(ids) - 7
    model = task.build_model([1])
    assert isinstance(model, DiffusionBlocksForMaskedLM)
    task.save_block(model, 1, 2)
    assert (tmp_path / "model_index.json").is_file() and (tmp_path / "tokenizer").is_dir()
    assert task.finished_steps(1) == 2


@pytest.mark.parametrize("mode, loss_name, num_blocks", [("blockwise", "RecurrentDenoisingLoss", 2),
                                                         ("bptt", "TruncatedBPTTLoss", 1)])
def test_recurrent_task_picks_the_loss_of_the_mode_and_saves_the_tokenizer(tmp_path, mode, loss_name, num_blocks):
    tokenizer = build_character_tokenizer("corpus", TEXT)
    args = masked_lm_args(tmp_path, training_mode=mode, num_blocks=2, num_prelude_layers=1, num_coda_layers=1,
                          num_hidden_layers=2, num_iterations=2, partition="equiprobable", overlap=0.05, p_mean=-0.4,
                          p_std=1.0, mean_recurrence=2.0, bptt_steps=1)
    config = build_recurrent_config(args, tokenizer)
    assert config.num_blocks == num_blocks
    ids = tokenizer.encode_corpus(TEXT)
    task = RecurrentTrainingTask(config, tokenizer, ids, ids, args)
    assert type(task.loss_function).__name__ == loss_name
    assert task.get_batch(torch.tensor([0]), torch.device("cpu"))["input_ids"].shape == (1, 9)  # context + next character
    model = task.build_model([0])
    assert isinstance(model, DiffusionBlocksRecurrentForCausalLM)
    task.save_block(model, 0, 3)
    assert (tmp_path / "tokenizer_config.json").is_file() and task.finished_steps(0) == 3
