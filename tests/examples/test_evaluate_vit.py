"""examples/evaluate_vit.py: accuracy of a block-wise and an end-to-end model for every inference setting."""

import importlib.util
import json
from pathlib import Path

import pytest

from hf_diffusionblocks import DiffusionBlocksForImageClassification
from hf_diffusionblocks.data import load_image_dataset
from hf_diffusionblocks.models.vit.evaluation_vit import predict_labels

ROOT = Path(__file__).resolve().parents[2]


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("vit")
    common = ["--dataset", "digits", "--num_hidden_layers", "3", "--train_batch_size", "16", "--max_train_steps", "3",
              "--checkpointing_steps", "3", "--max_eval_samples", "20", "--report_to", "none"]
    train = load_script("train_vit")
    train.main(["--output_dir", str(root / "blockwise"), *common])
    train.main(["--output_dir", str(root / "e2e"), "--training_mode", "end_to_end", *common])
    return root


def test_every_setting_is_evaluated_and_written(trained, tmp_path):
    output = tmp_path / "accuracy.json"
    rows = load_script("evaluate_vit").main([
        "--model", f"blockwise={trained / 'blockwise'}", "--model", f"e2e={trained / 'e2e'}", "--dataset", "digits",
        "--num_inference_steps", "3", "6", "--noise_seeds", "0", "1", "--max_eval_samples", "30",
        "--output_file", str(output), "--device", "cpu",
    ])
    settings = [(r["name"], r["num_inference_steps"], r["start"], r["seed"]) for r in rows]
    assert settings == [("blockwise", 3, "zero", None), ("blockwise", 3, "noise", 0), ("blockwise", 3, "noise", 1),
                        ("blockwise", 6, "zero", None), ("blockwise", 6, "noise", 0), ("blockwise", 6, "noise", 1),
                        ("e2e", None, "one pass", None)]
    assert json.loads(output.read_text())["results"][0]["accuracy"] == rows[0]["accuracy"]
    # the accuracy is the one of predict_labels with the same setting
    model = DiffusionBlocksForImageClassification.from_pretrained(trained / "blockwise")
    test = load_image_dataset("digits", "test")
    predictions = predict_labels(model, test.images[:30], num_inference_steps=6, seed=1)
    assert rows[5]["accuracy"] == pytest.approx(float((predictions == test.labels[:30]).float().mean()))
    assert all(row["num_examples"] == 30 and row["training_steps"] for row in rows)


@pytest.mark.parametrize("extra, message", [(["--model", "no-name"], "NAME=PATH"),
                                            (["--model", "a=x", "--num_inference_steps", "0"], ">= 1")])
def test_bad_arguments_are_refused(extra, message, capsys):
    with pytest.raises(SystemExit):
        load_script("evaluate_vit").parse_args(extra)
    assert message in capsys.readouterr().err
