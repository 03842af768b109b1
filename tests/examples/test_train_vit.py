"""examples/train_vit.py: block-wise, one block per run, end_to_end (standard classifier), exact resume,
test accuracy through the `evaluate` module, bad inputs."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hf_diffusionblocks import DiffusionBlocksForImageClassification

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "train_vit.py"


def load_script():
    spec = importlib.util.spec_from_file_location("train_vit", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_args(output_dir, *extra):
    return [
        "--output_dir", str(output_dir), "--dataset", "digits", "--num_hidden_layers", "3",
        "--train_batch_size", "16", "--max_train_steps", "4", "--logging_steps", "2",
        "--checkpointing_steps", "2", "--max_eval_samples", "40", "--report_to", "none", *extra,
    ]


def block_weights(output_dir, block_index):
    return load_file(Path(output_dir) / f"block_{block_index}.safetensors")


def test_blockwise_all_writes_a_loadable_model_and_its_test_accuracy(tmp_path):
    summary = load_script().main(tiny_args(tmp_path, "--block_index", "all"))
    assert [block["steps"] for block in summary["blocks"]] == [4, 4, 4]
    results = json.loads((tmp_path / "eval_results.json").read_text())
    assert results["num_examples"] == 40 and results["num_inference_steps"] == 3
    model = DiffusionBlocksForImageClassification.from_pretrained(tmp_path)
    assert model.config.classifier_type == "diffusion" and model.block_training_steps == {0: 4, 1: 4, 2: 4}
    assert model.config.id2label[0] == "0"
    heads = [block_weights(tmp_path, b)[f"blocks.{b}.head.linear.weight"] for b in range(3)]
    assert all(weight.abs().sum() > 0 for weight in heads)  # trained away from the zero init
    assert not torch.equal(heads[0], heads[1])
    # the accuracy in the file is the one of the saved model
    from hf_diffusionblocks.data import load_image_dataset
    from hf_diffusionblocks.models.vit.evaluation_vit import predict_labels

    test = load_image_dataset("digits", "test")
    predictions = predict_labels(model, test.images[:40])
    assert results["accuracy"] == pytest.approx(float((predictions == test.labels[:40]).float().mean()))


def test_one_block_per_run_then_the_accuracy_is_computed(tmp_path):
    script = load_script()
    for block_index in (2, 0):
        assert script.main(tiny_args(tmp_path, "--block_index", str(block_index)))["eval"] is None
    summary = script.main(tiny_args(tmp_path, "--block_index", "1"))
    assert 0.0 <= summary["eval"]["accuracy"] <= 1.0
    assert DiffusionBlocksForImageClassification.from_pretrained(tmp_path, block_index=2).loaded_block_indices == [2]


def test_end_to_end_is_the_standard_classifier_of_the_same_network(tmp_path):
    summary = load_script().main(tiny_args(tmp_path, "--training_mode", "end_to_end"))
    config = json.loads((tmp_path / "config.json").read_text())
    assert summary["num_blocks"] == 1 and config["classifier_type"] == "standard" and config["num_hidden_layers"] == 3
    assert summary["eval"]["classifier_type"] == "standard"


def test_resume_continues_exactly(tmp_path):
    script = load_script()
    uninterrupted, interrupted = tmp_path / "uninterrupted", tmp_path / "interrupted"
    script.main(tiny_args(uninterrupted, "--block_index", "1"))

    original_loss, calls = script.ViTTrainingTask.loss, {"count": 0}

    def crashing_loss(self, *args, **kwargs):
        calls["count"] += 1
        if calls["count"] == 4:  # after the checkpoint at step 2, during step 4
            raise KeyboardInterrupt("simulated kill")
        return original_loss(self, *args, **kwargs)

    script.ViTTrainingTask.loss = crashing_loss
    try:
        with pytest.raises(KeyboardInterrupt):
            script.main(tiny_args(interrupted, "--block_index", "1"))
    finally:
        script.ViTTrainingTask.loss = original_loss
    assert not (interrupted / "block_1.safetensors").exists()
    summary = script.main(tiny_args(interrupted, "--block_index", "1", "--resume_from_checkpoint", "latest"))
    assert summary["blocks"][0]["resumed_from"] == 2
    expected, resumed = block_weights(uninterrupted, 1), block_weights(interrupted, 1)
    assert expected.keys() == resumed.keys()
    for name in expected:
        assert torch.equal(expected[name], resumed[name]), name


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--block_index", "3"], r"block_index must be an int in \[0, 2\]"),
        (["--image_size", "9"], "image_size=9 must be divisible by patch_size=2"),
        (["--label_embedding_dim", "4"], "label_embedding_dim must be an integer >= num_labels=10"),
        (["--training_mode", "end_to_end", "--block_index", "2"], "end_to_end trains a single block"),
        (["--max_eval_samples", "0"], "--max_eval_samples must be >= 1"),
        (["--num_inference_steps", "0"], "--num_inference_steps must be >= 1"),
    ],
)
def test_bad_inputs_raise_clear_errors(tmp_path, extra, message):
    with pytest.raises(ValueError, match=message):
        load_script().main(tiny_args(tmp_path, *extra))
