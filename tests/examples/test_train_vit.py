"""examples/train_vit.py: block-wise, one block per run, end_to_end (standard classifier), exact resume,
test accuracy through the `evaluate` module, bad inputs."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hf_diffusionblocks import DiffusionBlocksForImageClassification
from hf_diffusionblocks.training.image_task import ViTTrainingTask
from script_testing import check_kill_and_exact_resume, check_model_card, check_pushed_repo, load_script as load_example



def load_script():
    return load_example("train_vit")


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
    card = check_model_card(tmp_path, pipeline_tag="image-classification", steps="num_inference_steps=3", dataset="digits",
                            training_mode="blockwise", metrics=("test accuracy", "test num_examples"))
    assert f"| test accuracy | {results['accuracy']:.4g} |" in card.text
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


def test_push_to_hub_uploads_the_whole_folder_and_it_loads_with_trust_remote_code(tmp_path, fake_hub):
    from transformers import AutoModelForImageClassification

    output_dir = tmp_path / "run"
    load_script().main(tiny_args(output_dir, "--max_train_steps", "1", "--push_to_hub", "--hub_model_id", "me/vit"))
    files = check_pushed_repo(fake_hub, "me/vit", output_dir)
    assert {"eval_results.json", "block_2.safetensors"} <= set(files)
    # transformers' own Auto class loads the pushed repo through its remote-code module (auto_map)
    loaded = AutoModelForImageClassification.from_pretrained("me/vit", trust_remote_code=True, cache_dir=str(tmp_path / "cache"))
    assert type(loaded) is DiffusionBlocksForImageClassification and loaded.is_complete
    local = DiffusionBlocksForImageClassification.from_pretrained(output_dir)
    assert all(torch.equal(loaded.state_dict()[name], tensor) for name, tensor in local.state_dict().items())


def test_resume_continues_exactly(tmp_path):
    script = load_script()
    check_kill_and_exact_resume(script, ViTTrainingTask, lambda out, *extra: tiny_args(out, "--block_index", "1", *extra),
                                tmp_path, block_index=1)


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
