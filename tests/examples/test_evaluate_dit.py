"""examples/evaluate_dit.py: the denoising loss by σ interval (alone, and next to the Fréchet distance), bad flags."""

import json

import pytest
import torch

from hf_diffusionblocks import DiffusionBlocksImagePipeline
from hf_diffusionblocks.data import load_image_dataset
from hf_diffusionblocks.evaluation import estimate_denoising_loss
from script_testing import load_script, requires_fid_weights


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("dit")
    common = ["--dataset", "digits", "--num_hidden_layers", "3", "--train_batch_size", "16", "--max_train_steps", "3",
              "--checkpointing_steps", "3", "--num_inference_steps", "3", "--samples_per_class", "1", "--report_to", "none"]
    train = load_script("train_dit")
    train.main(["--output_dir", str(root / "blockwise"), *common])
    train.main(["--output_dir", str(root / "e2e"), "--training_mode", "end_to_end", *common])
    return root


def test_the_loss_is_split_over_the_same_intervals_for_both_models(trained, tmp_path, capsys):
    losses = {}
    for name in ("blockwise", "e2e"):
        output = tmp_path / f"{name}.json"
        results = load_script("evaluate_dit").main([
            "--pipeline", str(trained / name), "--dataset", "digits", "--skip_frechet", "--device", "cpu",
            "--denoising_loss_blocks", "3", "--denoising_loss_images", "12", "--denoising_loss_strata", "2",
            "--denoising_loss_json", str(output), "--batch_size", "5",
        ])
        losses[name] = results["denoising_loss"]
        assert json.loads(output.read_text()) == {"denoising_loss": losses[name]}
        assert "frechet_classifier_distance" not in results and not (trained / name / "metrics.json").exists()
        printed = capsys.readouterr().out
        assert "denoising loss by σ interval (3 equiprobable intervals, 12 test images" in printed
        assert printed.rstrip().splitlines()[-1].split()[0] == "total"
    for loss in losses.values():
        assert [row["interval_index"] for row in loss["intervals"]] == [0, 1, 2]
        assert sum(row["share"] for row in loss["intervals"]) == pytest.approx(loss["loss"], rel=1e-9)
    # the same intervals for the end-to-end model, though it has one block
    assert [row["sigma_low"] for row in losses["e2e"]["intervals"]] == [row["sigma_low"] for row in losses["blockwise"]["intervals"]]
    # it is the library estimate on the first test images with their labels
    pipeline = DiffusionBlocksImagePipeline.from_pretrained(trained / "blockwise")
    test = load_image_dataset("digits", "test")
    direct = estimate_denoising_loss(pipeline.transformer.eval(), test.images[:12], pipeline.transformer.config.noise_partition,
                                     class_labels=test.labels[:12], strata_per_interval=2)
    assert direct.loss == pytest.approx(losses["blockwise"]["loss"], rel=1e-12)


def test_the_paired_difference_to_a_reference_model(trained, capsys):
    arguments = ["--pipeline", str(trained / "blockwise"), "--dataset", "digits", "--skip_frechet", "--device", "cpu",
                 "--denoising_loss_blocks", "3", "--denoising_loss_images", "10", "--denoising_loss_strata", "1"]
    evaluate = load_script("evaluate_dit")
    own = evaluate.main(arguments)["denoising_loss"]
    reference = evaluate.main([*arguments[:1], str(trained / "e2e"), *arguments[2:]])["denoising_loss"]
    results = evaluate.main([*arguments, "--denoising_loss_reference", str(trained / "e2e")])
    difference = results["denoising_loss_difference"]
    assert difference["reference"] == str(trained / "e2e") and results["denoising_loss"] == own
    for row, a, b in zip(difference["intervals"], own["intervals"], reference["intervals"]):
        assert row["conditional_loss"] == pytest.approx(a["conditional_loss"] - b["conditional_loss"], rel=1e-9, abs=1e-12)
    assert "minus the reference" in capsys.readouterr().out


def test_the_loss_goes_into_metrics_json_next_to_the_frechet_distance(trained, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DIFFUSIONBLOCKS_CACHE", str(tmp_path))  # the feature classifier is cached here
    results = load_script("evaluate_dit").main([
        "--pipeline", str(trained / "blockwise"), "--dataset", "digits", "--device", "cpu", "--samples_per_class", "7",
        "--num_inference_steps", "3", "--classifier_train_size", "300",
        "--denoising_loss_blocks", "2", "--denoising_loss_partition", "uniform_log", "--denoising_loss_images", "8",
    ])
    saved = json.loads((trained / "blockwise" / "metrics.json").read_text())
    assert saved["num_generated"] == 70 and torch.isfinite(torch.tensor(saved["frechet_classifier_distance"]))
    assert saved["denoising_loss"]["partition"] == "uniform_log" and len(saved["denoising_loss"]["intervals"]) == 2
    assert saved["denoising_loss"] == results["denoising_loss"]


@requires_fid_weights
def test_with_fid_and_no_samples_per_class_both_distances_read_one_set_of_images(trained, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DIFFUSIONBLOCKS_CACHE", str(tmp_path))
    evaluate = load_script("evaluate_dit")
    sampled = []
    generate = evaluate.generate
    monkeypatch.setattr(evaluate, "generate", lambda pipeline, labels, args: sampled.append(labels) or generate(pipeline, labels, args))
    results = evaluate.main(["--pipeline", str(trained / "blockwise"), "--dataset", "digits", "--device", "cpu",
                             "--num_inference_steps", "3", "--classifier_train_size", "300", "--fid", "--fid_num_samples", "12"])
    test_labels = load_image_dataset("digits", split="test").labels
    assert len(sampled) == 1 and torch.equal(sampled[0], test_labels[:12])  # the first test labels, image for image
    assert results["num_generated"] == results["fid_num_samples"] == 12 and results["fid"] > 0


@pytest.mark.parametrize("extra, message", [
    (["--denoising_loss_images", "1"], "--denoising_loss_images must be >= 2"),
    (["--denoising_loss_blocks", "-1"], "--denoising_loss_blocks must be >= 0"),
    (["--denoising_loss_strata", "0"], "--denoising_loss_strata must be >= 1"),
    (["--skip_frechet"], "leaves nothing to evaluate"),
    (["--denoising_loss_reference", "y"], "needs --denoising_loss_blocks"),
    (["--denoising_loss_partition", "cosine"], "invalid choice"),
])
def test_bad_flags_are_refused(extra, message, capsys):
    with pytest.raises(SystemExit):
        load_script("evaluate_dit").parse_args(["--pipeline", "x", *extra])
    assert message in capsys.readouterr().err
