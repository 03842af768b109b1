"""examples/train_ar.py: block-wise, all, end_to_end, exact resume, output folder layout, tokenizers, bad input."""

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_diffusionblocks import DiffusionBlocksForCausalLM
from hf_diffusionblocks.training.text_runs import CausalLMTrainingTask
from script_testing import check_kill_and_exact_resume, check_model_card, check_pushed_repo, load_script as load_example

TEXT = (
    "Shall I compare thee to a summer's day?\nThou art more lovely and more temperate:\n"
    "Rough winds do shake the darling buds of May,\nAnd summer's lease hath all too short a date;\n"
) * 40


def load_script():
    return load_example("train_ar")


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT)
    return path


def tiny_args(output_dir, corpus, *extra):
    return [
        "--output_dir", str(output_dir), "--dataset", str(corpus), "--vocab_size", "300",
        "--hidden_size", "32", "--num_hidden_layers", "4", "--num_attention_heads", "2", "--sequence_length", "16",
        "--train_batch_size", "4", "--max_train_steps", "4", "--logging_steps", "2", "--checkpointing_steps", "2",
        "--validation_windows", "2", "--num_samples", "2", "--sample_prompt_length", "4", "--sample_new_tokens", "4",
        "--lr_warmup_steps", "0", "--report_to", "none", *extra,
    ]


def block_weights(output_dir, block_index):
    return load_file(Path(output_dir) / f"block_{block_index}.safetensors")


def test_blockwise_all_writes_a_transformers_model_folder(tmp_path, corpus):
    output_dir = tmp_path / "run"
    summary = load_script().main(tiny_args(output_dir, corpus, "--block_index", "all"))
    assert [block["steps"] for block in summary["blocks"]] == [4, 4, 4, 4]
    assert len(summary["samples"]) == 2 and (output_dir / "samples.txt").is_file()
    check_model_card(output_dir, pipeline_tag="text-generation", steps="num_inference_steps=4", dataset=str(corpus),
                     training_mode="blockwise")
    model = AutoModelForCausalLM.from_pretrained(output_dir)
    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    assert isinstance(model, DiffusionBlocksForCausalLM) and model.config.num_blocks == 4
    assert model.block_training_steps == {0: 4, 1: 4, 2: 4, 3: 4}
    assert len(tokenizer) == model.config.vocab_size == 300 and model.config.overlap == 0.1
    inputs = tokenizer(["Shall I", "Rough winds do"], return_tensors="pt", padding=True)
    output = model.generate(**inputs, max_new_tokens=3, generator=torch.Generator().manual_seed(0))
    assert output.shape == (2, inputs["input_ids"].shape[1] + 3)
    one = DiffusionBlocksForCausalLM.from_pretrained(output_dir, block_index=2)
    assert one.loaded_block_indices == [2]
    # trained: the zero-initialised readouts moved, and differently in every block
    readouts = [block_weights(output_dir, b)[f"blocks.{b}.final_layer.linear.weight"] for b in range(4)]
    assert all(weight.abs().sum() > 0 for weight in readouts)
    assert not torch.equal(readouts[0], readouts[1])


def test_layers_per_block_gives_the_noisiest_block_more_layers(tmp_path, corpus):
    output_dir = tmp_path / "run"
    load_script().main(tiny_args(output_dir, corpus, "--num_hidden_layers", "5", "--layers_per_block", "2", "1", "1", "1",
                                 "--block_index", "0"))
    model = DiffusionBlocksForCausalLM.from_pretrained(output_dir, block_index=0)
    assert model.config.layers_per_block == [2, 1, 1, 1] and len(model.get_block(0).layers) == 2


def test_recipe_flags_reach_the_config_and_the_loss(tmp_path, corpus):
    output_dir = tmp_path / "run"
    load_script().main(tiny_args(output_dir, corpus, "--block_index", "1", "--clean_loss_weight", "2.5", "--solver", "ancestral"))
    config = DiffusionBlocksForCausalLM.load_config(output_dir)
    assert config.clean_loss_weight == 2.5 and config.solver == "ancestral"


def test_semantic_target_table_from_an_end_to_end_model(tmp_path, corpus):
    from hf_diffusionblocks.models.causal_lm import semantic_target_embeddings

    script = load_script()
    script.main(tiny_args(tmp_path / "e2e", corpus, "--training_mode", "end_to_end", "--vocab_size", "280"))
    script.main(tiny_args(tmp_path / "bw", corpus, "--target_embeddings_from", str(tmp_path / "e2e"), "--block_index", "all",
                          "--target_embedding_dim", "8"))
    source = DiffusionBlocksForCausalLM.from_pretrained(tmp_path / "e2e")
    model = DiffusionBlocksForCausalLM.from_pretrained(tmp_path / "bw")
    expected = semantic_target_embeddings(source.get_block(0).final_layer.linear.weight, 8, 0.5)
    assert torch.equal(model.target_embeddings, expected) and model.config.target_embedding_sha256 is not None
    assert len(AutoTokenizer.from_pretrained(tmp_path / "bw")) == 280          # the source's tokenizer, not a new one
    assert all(torch.equal(block_weights(tmp_path / "bw", b)[f"blocks.{b}.target_embeddings"], expected) for b in range(4))
    with pytest.raises(ValueError, match="must be an end-to-end model"):
        script.main(tiny_args(tmp_path / "bw2", corpus, "--target_embeddings_from", str(tmp_path / "bw")))
    with pytest.raises(ValueError, match="end_to_end has none"):
        script.main(tiny_args(tmp_path / "e2e2", corpus, "--target_embeddings_from", str(tmp_path / "e2e"),
                              "--training_mode", "end_to_end"))


def test_separate_runs_share_the_tokenizer_and_assemble(tmp_path, corpus):
    script, output_dir = load_script(), tmp_path / "run"
    for block_index in (3, 0, 1):
        assert script.main(tiny_args(output_dir, corpus, "--block_index", str(block_index)))["samples"] is None
    assert not (output_dir / "README.md").exists()          # the card is written when the folder is complete
    tokenizer_file = (output_dir / "tokenizer.json").read_bytes()
    summary = script.main(tiny_args(output_dir, corpus, "--block_index", "2"))
    assert summary["samples"] is not None
    assert (output_dir / "tokenizer.json").read_bytes() == tokenizer_file
    assert DiffusionBlocksForCausalLM.from_pretrained(output_dir).is_complete
    assert "| 3 | 3-3 | present | 4 |" in (output_dir / "README.md").read_text()


def test_push_to_hub_uploads_the_whole_folder_and_it_loads_with_trust_remote_code(tmp_path, corpus, fake_hub):
    output_dir = tmp_path / "run"
    load_script().main(tiny_args(output_dir, corpus, "--max_train_steps", "1", "--push_to_hub", "--hub_model_id", "me/ar"))
    files = check_pushed_repo(fake_hub, "me/ar", output_dir)
    assert {"samples.txt", "tokenizer.json", "tokenizer_config.json", "block_3.safetensors"} <= set(files)
    # transformers' own Auto class loads the pushed repo through its remote-code module (auto_map)
    loaded = AutoModelForCausalLM.from_pretrained("me/ar", trust_remote_code=True, cache_dir=str(tmp_path / "cache"))
    assert type(loaded) is DiffusionBlocksForCausalLM and loaded.is_complete
    local = DiffusionBlocksForCausalLM.from_pretrained(output_dir)
    assert all(torch.equal(loaded.state_dict()[name], tensor) for name, tensor in local.state_dict().items())


def test_resume_continues_exactly(tmp_path, corpus):
    script = load_script()
    check_kill_and_exact_resume(script, CausalLMTrainingTask,
                                lambda out, *extra: tiny_args(out, corpus, "--block_index", "1", *extra),
                                tmp_path, block_index=1)


def test_end_to_end_with_the_character_tokenizer(tmp_path, corpus):
    output_dir = tmp_path / "run"
    summary = load_script().main(tiny_args(output_dir, corpus, "--training_mode", "end_to_end", "--tokenizer", "char"))
    assert summary["num_blocks"] == 1
    config = json.loads((output_dir / "config.json").read_text())
    assert config["objective"] == "next_token" and config["num_blocks"] == 1 and config["num_hidden_layers"] == 4
    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    assert type(tokenizer).__name__ == "CharacterTokenizer" and len(tokenizer) == config["vocab_size"]
    assert tokenizer.decode(tokenizer("Thou art")["input_ids"]) == "Thou art"
    assert sorted(name for name in os.listdir(output_dir) if name.endswith(".safetensors")) == ["block_0.safetensors"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--block_index", "4"], r"block_index must be an int in \[0, 3\]"),
        (["--training_mode", "end_to_end", "--block_index", "2"], "end_to_end trains a single block"),
        (["--sample_new_tokens", "20"], "must fit --sequence_length=16"),
        (["--vocab_size", "100"], "vocab_size must be an integer >= 258"),
        (["--hidden_size", "30"], "divisible by num_attention_heads"),
        (["--clean_loss_weight", "-1"], "--clean_loss_weight must be"),
        (["--layers_per_block", "2", "2"], r"--layers_per_block needs one count >= 1 per block \(--num_blocks 4\)"),
        (["--layers_per_block", "2", "2", "1", "1"], "layers_per_block"),                    # sums to 6, not 4
        (["--layers_per_block", "4", "--training_mode", "end_to_end"], "end-to-end training has one block"),
        (["--clean_loss_weight", "nan"], "--clean_loss_weight must be"),
    ],
)
def test_bad_inputs_raise_clear_errors(tmp_path, corpus, extra, message):
    with pytest.raises(ValueError, match=message):
        load_script().main(tiny_args(tmp_path / "run", corpus, *extra))
    assert not (tmp_path / "run").exists()          # nothing written, not even the tokenizer


@pytest.mark.parametrize("sequence_length, prompt, new", [(64, 16, 32), (16, 4, 8), (5, 1, 2), (2, 1, 1)])
def test_default_sample_lengths_follow_the_sequence_length(sequence_length, prompt, new):
    args = load_script().parse_args(["--output_dir", "x", "--sequence_length", str(sequence_length)])
    assert (args.sample_prompt_length, args.sample_new_tokens) == (prompt, new)


def test_a_short_sequence_length_trains_and_samples_with_the_default_sample_lengths(tmp_path, corpus):
    args = tiny_args(tmp_path, corpus)
    for flag in ("--sample_prompt_length", "--sample_new_tokens"):
        del args[args.index(flag) : args.index(flag) + 2]
    args[args.index("--sequence_length") + 1] = "8"
    summary = load_script().main([*args, "--tokenizer", "char", "--num_blocks", "1", "--num_hidden_layers", "1"])
    assert len(summary["samples"]) == 2


def test_resume_on_another_corpus_is_refused(tmp_path, corpus):
    """The data is part of what a checkpoint continues: another --dataset_name stops at start-up, naming it."""
    other = tmp_path / "other.txt"
    other.write_text(TEXT.upper())
    script = load_script()
    output_dir = tmp_path / "run"
    script.main(tiny_args(output_dir, corpus, "--block_index", "1"))
    (output_dir / "block_1.safetensors").unlink()
    with pytest.raises(ValueError, match=rf"other settings \(training_data: checkpoint \{{'dataset_name': '{corpus}'.*"
                                         rf"vs now \{{'dataset_name': '{other}'"):
        script.main(tiny_args(output_dir, other, "--block_index", "1", "--resume_from_checkpoint", "latest"))
    assert not (output_dir / "block_1.safetensors").exists()
    summary = script.main(tiny_args(output_dir, corpus, "--block_index", "1", "--resume_from_checkpoint", "latest"))
    assert summary["blocks"][0]["resumed_from"] == 2
