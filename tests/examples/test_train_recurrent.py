"""examples/train_recurrent.py: one-pass training, the truncated-BPTT baseline, exact resume, held-out
loss at K = 1 and K, bad inputs (K < 1, block index)."""

import json

import pytest
import torch
from safetensors.torch import load_file

from hf_diffusionblocks import CharacterTokenizer, DiffusionBlocksRecurrentForCausalLM
from hf_diffusionblocks.training.text_runs import RecurrentTrainingTask
from script_testing import check_kill_and_exact_resume, check_model_card, check_pushed_repo, load_script as load_example

TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n" * 60


def load_script():
    return load_example("train_recurrent")


@pytest.fixture
def corpus(tmp_path) -> str:
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="ascii")
    return str(path)


def tiny_args(output_dir, corpus, *extra):
    return [
        "--output_dir", str(output_dir), "--dataset", corpus, "--hidden_size", "32", "--num_hidden_layers", "1",
        "--num_attention_heads", "2", "--sequence_length", "16", "--train_batch_size", "8", "--max_train_steps", "4",
        "--logging_steps", "2", "--checkpointing_steps", "2", "--num_iterations", "3", "--validation_windows", "4",
        "--eval_windows", "4", "--sample_length", "8", "--report_to", "none", *extra,
    ]


def test_one_pass_training_writes_model_tokenizer_and_held_out_loss(tmp_path, corpus):
    output_dir = tmp_path / "run"
    summary = load_script().main(tiny_args(output_dir, corpus))
    assert summary["num_blocks"] == 1 and summary["blocks"][0]["steps"] == 4
    results = json.loads((output_dir / "eval_results.json").read_text())
    assert results["bpc_K1"] == pytest.approx(results["loss_K1"] / 0.6931471805599453)
    assert {"loss_K1", "loss_K3"} <= results.keys()
    check_model_card(output_dir, pipeline_tag="text-generation", steps="num_iterations=3", dataset=corpus,
                     training_mode="blockwise", metrics=("held-out loss_K1", "held-out bpc_K3", "held-out windows"))
    model = DiffusionBlocksRecurrentForCausalLM.from_pretrained(output_dir)
    tokenizer = CharacterTokenizer.from_pretrained(output_dir)
    assert model.config.vocab_size == len(tokenizer) and model.config.num_iterations == 3
    assert (output_dir / "samples.txt").read_text().startswith(TEXT[:4])


def test_bptt_baseline_trains_the_same_model(tmp_path, corpus):
    script = load_script()
    diffusion, bptt = tmp_path / "diffusion", tmp_path / "bptt"
    script.main(tiny_args(diffusion, corpus))
    summary = script.main(tiny_args(bptt, corpus, "--training_mode", "bptt", "--mean_recurrence", "2", "--bptt_steps", "1"))
    assert summary["training_mode"] == "bptt" and summary["eval"]["training_mode"] == "bptt"
    card = check_model_card(bptt, pipeline_tag="text-generation", steps="num_iterations=3", dataset=corpus, training_mode="bptt")
    assert "truncated backpropagation through\ntime" in card.text
    first, second = load_file(diffusion / "block_0.safetensors"), load_file(bptt / "block_0.safetensors")
    assert first.keys() == second.keys()                                  # the same architecture
    assert not torch.equal(first["blocks.0.head.linear.weight"], second["blocks.0.head.linear.weight"])


def test_push_to_hub_uploads_the_whole_folder_and_it_loads_with_trust_remote_code(tmp_path, corpus, fake_hub):
    from transformers import AutoModelForCausalLM

    output_dir = tmp_path / "run"
    load_script().main(tiny_args(output_dir, corpus, "--max_train_steps", "1", "--push_to_hub", "--hub_model_id", "me/rec"))
    files = check_pushed_repo(fake_hub, "me/rec", output_dir)
    assert {"eval_results.json", "samples.txt", "tokenizer_config.json", "block_0.safetensors"} <= set(files)
    # transformers' own Auto class loads the pushed repo through its remote-code module (auto_map)
    loaded = AutoModelForCausalLM.from_pretrained("me/rec", trust_remote_code=True, cache_dir=str(tmp_path / "cache"))
    assert type(loaded) is DiffusionBlocksRecurrentForCausalLM and loaded.is_complete
    local = DiffusionBlocksRecurrentForCausalLM.from_pretrained(output_dir)
    assert all(torch.equal(loaded.state_dict()[name], tensor) for name, tensor in local.state_dict().items())


def test_resume_continues_exactly(tmp_path, corpus):
    script = load_script()
    bptt = ("--training_mode", "bptt", "--mean_recurrence", "2")
    check_kill_and_exact_resume(script, RecurrentTrainingTask,
                                lambda out, *extra: tiny_args(out, corpus, *bptt, *extra), tmp_path, block_index=0)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--num_iterations", "0"], "--num_iterations must be >= 1"),
        (["--block_index", "1"], r"block_index must be an int in \[0, 0\]"),
        (["--training_mode", "bptt", "--block_index", "1"], "bptt trains one recurrent core"),
        (["--mean_recurrence", "0"], "--mean_recurrence must be > 0"),
        (["--mean_recurrence", "inf"], r"--mean_recurrence must be > 0 \(a finite number\)"),
        (["--bptt_steps", "0"], "--bptt_steps must be >= 1"),
        (["--num_blocks", "2"], "not divisible by num_blocks"),
    ],
)
def test_bad_inputs_raise_clear_errors(tmp_path, corpus, extra, message):
    with pytest.raises(ValueError, match=message):
        load_script().main(tiny_args(tmp_path / "run", corpus, *extra))


def test_unknown_training_mode_is_refused(tmp_path, corpus):
    with pytest.raises(SystemExit):
        load_script().parse_args(tiny_args(tmp_path, corpus, "--training_mode", "truncated"))
