"""examples/train_mdm.py and evaluate_mdm.py: block-wise, all, end_to_end, exact resume, outputs, bad input, launch."""

import inspect
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hf_diffusionblocks import DiffusionBlocksForMaskedLM, DiffusionBlocksTextPipeline
from hf_diffusionblocks.training.text_runs import MaskedLMTrainingTask
from script_testing import check_kill_and_exact_resume, check_model_card, check_pushed_repo, load_script as load_example

@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: intra-op threads only add synchronisation (several times slower on a busy 2-core machine)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "train_mdm.py"
PARAGRAPH = (
    "Now is the winter of our discontent\nMade glorious summer by this sun of York;\n"
    "And all the clouds that lour'd upon our house\nIn the deep bosom of the ocean buried.\n"
)


def load_script():
    return load_example("train_mdm")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "richard.txt"
    path.write_text(PARAGRAPH * 60, encoding="utf-8")  # ~11k characters: 90% train, 5% validation, 5% test
    return path


def tiny_args(output_dir, corpus, *extra):
    return [
        "--output_dir", str(output_dir), "--dataset", str(corpus), "--hidden_size", "32", "--num_hidden_layers", "3",
        "--num_attention_heads", "2", "--sequence_length", "32", "--train_batch_size", "8", "--max_train_steps", "4",
        "--logging_steps", "2", "--checkpointing_steps", "2", "--lr_warmup_steps", "1", "--validation_windows", "4",
        "--num_inference_steps", "3", "--num_samples", "2", "--report_to", "none", *extra,
    ]


def block_weights(output_dir, block_index):
    return load_file(Path(output_dir) / "transformer" / f"block_{block_index}.safetensors")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, corpus):
    output_dir = tmp_path_factory.mktemp("mdm")
    summary = load_script().main(tiny_args(output_dir, corpus, "--block_index", "all"))
    return output_dir, summary


def test_blockwise_all_writes_a_loadable_pipeline_folder(trained):
    output_dir, summary = trained
    assert [block["steps"] for block in summary["blocks"]] == [4, 4, 4]
    assert len(summary["samples"]) == 2 and all(len(text) == 32 for text in summary["samples"])
    assert (output_dir / "samples.txt").read_text().count("=" * 80) == 1
    pipeline = DiffusionBlocksTextPipeline.from_pretrained(output_dir)
    assert pipeline.transformer.block_training_steps == {0: 4, 1: 4, 2: 4}
    assert set(pipeline.tokenizer.get_vocab()) >= set(PARAGRAPH)  # the corpus vocabulary
    one = DiffusionBlocksForMaskedLM.from_pretrained(output_dir, subfolder="transformer", block_index=1)
    assert one.loaded_block_indices == [1]
    # the blocks were trained: their zero-initialised readouts moved, and differently
    readouts = [block_weights(output_dir, b)[f"blocks.{b}.final_layer.linear.weight"] for b in range(3)]
    assert all(weight.abs().sum() > 0 for weight in readouts)
    assert not torch.equal(readouts[0], readouts[1])


def test_the_complete_folder_has_its_model_card(trained, corpus):
    output_dir, _ = trained
    check_model_card(output_dir, pipeline_tag="text-generation", steps="num_inference_steps=128", dataset=str(corpus),
                     training_mode="blockwise")


def test_evaluate_script_reports_bits_per_character_and_xz(trained, corpus):
    output_dir, _ = trained
    results = load_example("evaluate_mdm").main(
        ["--model_path", str(output_dir), "--dataset", str(corpus), "--split", "test", "--device", "cpu", "--max_characters", "200"]
    )
    assert results["num_characters"] == 200 and results["num_sequences"] == 7  # 6 windows of 32 and a tail of 8
    assert 0 < results["bits_per_character"] < 8 and results["bits_per_character_standard_error"] > 0
    assert results["xz_bits_per_character"] > 0  # a 200-character text does not compress below 8 bits (xz header)
    assert json.loads((output_dir / "eval_test.json").read_text())["nelbo_nats"] == results["nelbo_nats"]


def test_evaluate_scores_a_local_file_whole_and_says_so(trained, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    output_dir, _ = trained
    held_out = tmp_path / "my_test.txt"
    held_out.write_text(PARAGRAPH * 2, encoding="utf-8")
    script = load_example("evaluate_mdm")
    results = script.main(["--model_path", str(output_dir), "--dataset_name", str(held_out), "--split", "test",
                           "--device", "cpu", "--output_file", str(tmp_path / "eval.json")])
    assert results["num_characters"] == len(PARAGRAPH * 2)                      # all of it, not its last 5%
    assert results["scored_text"].startswith(f"all of the file {held_out}")
    assert f"scoring all of the file {held_out}" in caplog.text
    results = script.main(["--model_path", str(output_dir), "--dataset_name", str(held_out), "--max_characters", "100",
                           "--device", "cpu", "--output_file", str(tmp_path / "eval.json")])
    assert results["num_characters"] == 100 and results["scored_text"].startswith("the first 100 characters of all of")


def test_evaluate_progress_bar_obeys_tqdm_disable(trained, tmp_path, monkeypatch):
    """An explicit `tqdm(disable=False)` overrides TQDM_DISABLE, so the script must not ask for a bar then."""
    output_dir, _ = trained
    script = load_example("evaluate_mdm")
    asked = []
    real_estimate = script.estimate_nelbo
    monkeypatch.setattr(script, "estimate_nelbo", lambda *args, progress: asked.append(progress) or real_estimate(*args))
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    text_file = tmp_path / "t.txt"
    text_file.write_text(PARAGRAPH, encoding="utf-8")
    argv = ["--model_path", str(output_dir), "--dataset", str(text_file), "--device", "cpu",
            "--max_characters", "64", "--output_file", str(tmp_path / "e.json")]
    monkeypatch.setenv("TQDM_DISABLE", "1")
    script.main(argv)
    monkeypatch.delenv("TQDM_DISABLE")
    script.main(argv)
    assert asked == [False, True]


def test_tqdm_disable_silences_every_progress_bar_of_a_run(tmp_path, corpus):
    """Training and the final samples (diffusers passes tqdm an explicit `disable=False`, which beats the variable)."""
    command = [sys.executable, str(SCRIPT), *tiny_args(tmp_path / "out", corpus, "--num_blocks", "1", "--num_hidden_layers", "1")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env={**os.environ, "TQDM_DISABLE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "out" / "samples.txt").is_file()
    assert "it/s" not in result.stderr and "s/it" not in result.stderr, result.stderr[-2000:]


def test_a_datasets_folder_without_validation_split_trains_on_a_carved_one(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    import datasets

    rows = (PARAGRAPH * 30).splitlines()
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": rows})}).save_to_disk(str(tmp_path / "saved"))
    args = tiny_args(tmp_path / "out", tmp_path / "saved", "--block_index", "0", "--max_train_steps", "2")
    summary = load_script().main(args)
    assert summary["blocks"][0]["steps"] == 2
    assert "the dataset has no validation split (splits: ['train'])" in caplog.text
    assert "validation loss" in caplog.text                                        # the carved text was used


def test_training_and_validation_files(tmp_path, corpus, caplog):
    caplog.set_level(logging.INFO)
    validation = tmp_path / "validation.txt"
    validation.write_text(PARAGRAPH * 3, encoding="utf-8")
    args = tiny_args(tmp_path / "out", corpus, "--block_index", "0", "--max_train_steps", "2")
    del args[args.index("--dataset") : args.index("--dataset") + 2]
    summary = load_script().main([*args, "--train_file", str(corpus), "--validation_file", str(validation)])
    assert summary["blocks"][0]["steps"] == 2
    assert f"validation text: {validation} ({len(PARAGRAPH * 3):,} characters)" in caplog.text


def test_evaluate_module_matches_the_estimator(trained):
    import evaluate

    from hf_diffusionblocks.evaluation import bits_per_character_metric_path, estimate_nelbo

    output_dir, _ = trained
    pipeline = DiffusionBlocksTextPipeline.from_pretrained(output_dir)
    texts = [PARAGRAPH[:100], PARAGRAPH[50:150]]
    metric = evaluate.load(bits_per_character_metric_path())
    result = metric.compute(predictions=texts, model_path=str(output_dir), num_replicates=2, seed=5)
    estimates = [estimate_nelbo(pipeline.transformer, pipeline.tokenizer, text, seed=5 + i) for i, text in enumerate(texts)]
    assert result["num_characters"] == 200
    assert result["nelbo_nats"] == pytest.approx(sum(e.nelbo_nats for e in estimates), rel=1e-6)
    assert result["bits_per_character"] == pytest.approx(result["nelbo_nats"] / (200 * 0.6931471805599453))


def test_one_block_per_run_then_the_pipeline_assembles(tmp_path, corpus):
    script = load_script()
    for block_index in (2, 0):
        summary = script.main(tiny_args(tmp_path, corpus, "--block_index", str(block_index)))
        assert summary["samples"] is None  # not all blocks are there yet
    assert sorted(os.listdir(tmp_path / "transformer")) == [
        "block_0.safetensors", "block_2.safetensors", "config.json", "hf_diffusionblocks_classes.py",
        "model.safetensors.index.json"]
    summary = script.main(tiny_args(tmp_path, corpus, "--block_index", "1"))
    assert summary["samples"] is not None
    assert DiffusionBlocksTextPipeline.from_pretrained(tmp_path).transformer.is_complete


def test_resume_continues_exactly(tmp_path, corpus):
    script = load_script()
    check_kill_and_exact_resume(script, MaskedLMTrainingTask,
                                lambda out, *extra: tiny_args(out, corpus, "--block_index", "1", *extra),
                                tmp_path, block_index=1, weights_subfolder="transformer")


def test_end_to_end_trains_one_block_over_all_times(tmp_path, corpus):
    summary = load_script().main(tiny_args(tmp_path, corpus, "--training_mode", "end_to_end"))
    assert summary["num_blocks"] == 1 and len(summary["samples"]) == 2
    config = json.loads((tmp_path / "transformer" / "config.json").read_text())
    assert config["num_blocks"] == 1 and config["num_hidden_layers"] == 3


def test_layers_per_block_gives_the_low_noise_block_more_layers(tmp_path, corpus):
    load_script().main(tiny_args(tmp_path, corpus, "--num_hidden_layers", "4", "--layers_per_block", "1", "1", "2",
                                 "--max_train_steps", "1", "--num_samples", "1"))
    model = DiffusionBlocksTextPipeline.from_pretrained(tmp_path).transformer
    assert model.config.layers_per_block == [1, 1, 2]
    assert [len(model.get_block(b).layers) for b in range(3)] == [1, 1, 2]


def test_push_to_hub_uploads_each_block_when_it_is_done_then_the_card(tmp_path, corpus, fake_hub):
    from diffusers import DiffusionPipeline

    output_dir = tmp_path / "run"
    load_script().main(tiny_args(output_dir, corpus, "--max_train_steps", "1", "--num_samples", "1",
                                 "--push_to_hub", "--hub_model_id", "me/mdm"))
    commits = [commit.added for commit in fake_hub.repos["me/mdm"]]
    assert [added for added in commits if any("block_" in name for name in added)] == [
        [f"transformer/block_{b}.safetensors"] for b in range(3)]   # each block its own commit, as it is done
    files = check_pushed_repo(fake_hub, "me/mdm", output_dir, component_folders=("scheduler", "tokenizer", "transformer"))
    assert {"samples.txt", "model_index.json"} <= set(files)
    # diffusers' own entry point loads the pushed repo through its remote-code modules
    pipeline = DiffusionPipeline.from_pretrained("me/mdm", trust_remote_code=True, cache_dir=str(tmp_path / "cache"))
    assert type(pipeline) is DiffusionBlocksTextPipeline and pipeline.transformer.is_complete
    assert pipeline.transformer.block_training_steps == {0: 1, 1: 1, 2: 1}


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--block_index", "3"], "block_index must be an int in"),
        (["--training_mode", "end_to_end", "--block_index", "2"], "end_to_end trains a single block"),
        (["--num_hidden_layers", "4"], "not divisible"),
        (["--sequence_length", "0"], "--sequence_length must be >= 1"),
        (["--vocabulary", "text8", "--max_train_steps", "0"], "--max_train_steps"),
        (["--layers_per_block", "1", "1"], r"--layers_per_block needs one count >= 1 per block \(--num_blocks 3\)"),
        (["--training_mode", "end_to_end", "--layers_per_block", "1", "1", "1"], "end-to-end training has one block"),
    ],
)
def test_bad_inputs_raise_clear_errors_before_anything_is_written(tmp_path, corpus, extra, message):
    with pytest.raises(ValueError, match=message):
        load_script().main(tiny_args(tmp_path / "out", corpus, *extra))
    assert not (tmp_path / "out").exists()


def test_help_offers_only_the_flags_the_family_accepts():
    help_text = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, check=True).stdout
    assert "--overlap" not in help_text and "--partition" not in help_text
    assert "--masking_schedule" in help_text and "(default: 16)" in help_text      # the README's batch size
    for flag in ("--overlap", "--partition"):
        with pytest.raises(SystemExit):
            load_script().parse_args(["--output_dir", "x", flag, "0"])


def test_defaults_are_the_benchmark_settings():
    args = load_script().parse_args(["--output_dir", "x"])
    assert (args.train_batch_size, args.num_inference_steps, args.lr_scheduler) == (16, 128, "cosine")
    assert args.dataset_name == "shakespeare"
    # the pipeline samples with the script's number of unmasking steps when the caller names none
    pipeline_default = inspect.signature(DiffusionBlocksTextPipeline.__call__).parameters["num_inference_steps"].default
    assert pipeline_default == args.num_inference_steps


def test_strict_vocabulary_refuses_unknown_held_out_characters(trained, tmp_path):
    output_dir, _ = trained
    other = tmp_path / "other.txt"
    other.write_text("ZZZ qqq ~~~ " * 200, encoding="utf-8")
    with pytest.raises(ValueError, match="outside the 'characters' vocabulary"):
        load_example("evaluate_mdm").main(["--model_path", str(output_dir), "--dataset", str(other), "--device", "cpu"])


@pytest.mark.slow
def test_accelerate_launch_smoke(tmp_path, corpus):
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", str(SCRIPT),
        *tiny_args(tmp_path, corpus, "--block_index", "0", "--max_train_steps", "2", "--report_to", "tensorboard"),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "transformer" / "block_0.safetensors").is_file()
    assert any((tmp_path / "logs").rglob("events.out.tfevents.*"))
