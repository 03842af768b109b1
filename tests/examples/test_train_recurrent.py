"""examples/train_recurrent.py: one-pass training, the truncated-BPTT baseline, exact resume, held-out
loss at K = 1 and K, bad inputs (K < 1, block index)."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hf_diffusionblocks import CharacterTokenizer, DiffusionBlocksRecurrentForCausalLM

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "train_recurrent.py"
TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n" * 60


def load_script():
    spec = importlib.util.spec_from_file_location("train_recurrent", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    first, second = load_file(diffusion / "block_0.safetensors"), load_file(bptt / "block_0.safetensors")
    assert first.keys() == second.keys()                                  # the same architecture
    assert not torch.equal(first["blocks.0.head.linear.weight"], second["blocks.0.head.linear.weight"])


def test_resume_continues_exactly(tmp_path, corpus):
    script = load_script()
    uninterrupted, interrupted = tmp_path / "uninterrupted", tmp_path / "interrupted"
    script.main(tiny_args(uninterrupted, corpus, "--training_mode", "bptt", "--mean_recurrence", "2"))

    original_loss, calls = script.RecurrentTrainingTask.loss, {"count": 0}

    def crashing_loss(self, *args, **kwargs):
        calls["count"] += 1
        if calls["count"] == 4:
            raise KeyboardInterrupt("simulated kill")
        return original_loss(self, *args, **kwargs)

    script.RecurrentTrainingTask.loss = crashing_loss
    try:
        with pytest.raises(KeyboardInterrupt):
            script.main(tiny_args(interrupted, corpus, "--training_mode", "bptt", "--mean_recurrence", "2"))
    finally:
        script.RecurrentTrainingTask.loss = original_loss
    summary = script.main(tiny_args(interrupted, corpus, "--training_mode", "bptt", "--mean_recurrence", "2",
                                    "--resume_from_checkpoint", "latest"))
    assert summary["blocks"][0]["resumed_from"] == 2
    expected, resumed = load_file(uninterrupted / "block_0.safetensors"), load_file(interrupted / "block_0.safetensors")
    for name in expected:
        assert torch.equal(expected[name], resumed[name]), name


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--num_iterations", "0"], "--num_iterations must be >= 1"),
        (["--block_index", "1"], r"block_index must be an int in \[0, 0\]"),
        (["--training_mode", "bptt", "--block_index", "1"], "bptt trains one recurrent core"),
        (["--mean_recurrence", "0"], "--mean_recurrence must be > 0"),
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
