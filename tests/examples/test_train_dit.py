"""examples/train_dit.py: block-wise, all, end_to_end, exact resume, outputs, bad input, accelerate launch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hf_diffusionblocks import DiffusionBlocksDiTModel, DiffusionBlocksImagePipeline
from hf_diffusionblocks.training.image_task import DiTTrainingTask
from script_testing import check_kill_and_exact_resume, check_model_card, check_pushed_repo, load_script as load_example

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "train_dit.py"


def load_script():
    return load_example("train_dit")


def tiny_args(output_dir, *extra):
    return [
        "--output_dir", str(output_dir), "--dataset", "digits", "--num_hidden_layers", "3",
        "--train_batch_size", "16", "--max_train_steps", "4", "--logging_steps", "2",
        "--checkpointing_steps", "2", "--num_inference_steps", "3", "--samples_per_class", "1",
        "--report_to", "none", *extra,
    ]


def block_weights(output_dir, block_index):
    return load_file(Path(output_dir) / "transformer" / f"block_{block_index}.safetensors")


def test_blockwise_all_writes_a_loadable_pipeline_folder(tmp_path):
    summary = load_script().main(tiny_args(tmp_path, "--block_index", "all"))
    assert [block["steps"] for block in summary["blocks"]] == [4, 4, 4]
    assert (tmp_path / "samples.png").is_file()
    card = check_model_card(tmp_path, pipeline_tag="unconditional-image-generation", steps="num_inference_steps=48",
                            dataset="digits", training_mode="blockwise").content
    assert "diffusion-blocks" in card and "0.1796" in card  # front-matter tag and the partition table
    assert (tmp_path / "validation" / "block_2_step_4.png").is_file()
    pipeline = DiffusionBlocksImagePipeline.from_pretrained(tmp_path)
    assert pipeline.transformer.config.num_blocks == 3 and pipeline.transformer.block_training_steps == {0: 4, 1: 4, 2: 4}
    one = DiffusionBlocksDiTModel.from_pretrained(tmp_path, subfolder="transformer", block_index=1)
    assert one.loaded_block_indices == [1]
    # the blocks were trained: they moved away from their (zero) initial readouts, and differently
    finals = [block_weights(tmp_path, b)[f"blocks.{b}.final_layer.linear.weight"] for b in range(3)]
    assert all(weight.abs().sum() > 0 for weight in finals)
    assert not torch.equal(finals[0], finals[1])


def test_one_block_per_run_then_the_pipeline_assembles(tmp_path):
    script = load_script()
    for block_index in (2, 0):
        summary = script.main(tiny_args(tmp_path, "--block_index", str(block_index)))
        assert summary["sample_grid"] is None  # not all blocks are there yet
    assert sorted(os.listdir(tmp_path / "transformer")) == [
        "block_0.safetensors", "block_2.safetensors", "config.json", "hf_diffusionblocks_classes.py",
        "model.safetensors.index.json"]
    summary = script.main(tiny_args(tmp_path, "--block_index", "1"))
    assert summary["sample_grid"] is not None
    assert DiffusionBlocksImagePipeline.from_pretrained(tmp_path).transformer.is_complete


def test_resume_continues_exactly(tmp_path):
    script = load_script()
    check_kill_and_exact_resume(script, DiTTrainingTask, lambda out, *extra: tiny_args(out, "--block_index", "1", *extra),
                                tmp_path, block_index=1, weights_subfolder="transformer")


def test_end_to_end_trains_one_block_over_the_whole_range(tmp_path):
    summary = load_script().main(tiny_args(tmp_path, "--training_mode", "end_to_end"))
    assert summary["num_blocks"] == 1
    config = json.loads((tmp_path / "transformer" / "config.json").read_text())
    assert config["num_blocks"] == 1 and config["num_hidden_layers"] == 3


def test_width_and_heads_override_the_named_size(tmp_path):
    load_script().main(tiny_args(tmp_path, "--training_mode", "end_to_end", "--hidden_size", "32", "--num_attention_heads", "2",
                                 "--max_train_steps", "1"))
    config = json.loads((tmp_path / "transformer" / "config.json").read_text())
    assert (config["hidden_size"], config["num_attention_heads"], config["intermediate_size"]) == (32, 2, 128)
    assert config["num_hidden_layers"] == 3  # the other override; the width's default (XS) is 64


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--block_index", "3"], "block_index must be an int in"),
        (["--dataset", "no_such_dataset_anywhere"], "digits"),
        (["--dataset_name", "./my_images"], "there is no file or folder"),
        (["--image_size", "9"], "divisible by patch_size"),
        (["--resolution", "9"], "divisible by patch_size"),
        (["--training_mode", "end_to_end", "--block_index", "2"], "end_to_end trains a single block"),
        (["--max_train_steps", "0"], "--max_train_steps"),
    ],
)
def test_bad_inputs_raise_clear_errors_before_anything_is_written(tmp_path, extra, message):
    with pytest.raises(ValueError, match=message):
        load_script().main(tiny_args(tmp_path / "out", *extra))
    assert not (tmp_path / "out").exists()


def test_bad_input_on_the_command_line_is_an_error_line_not_a_traceback(tmp_path):
    command = [sys.executable, str(SCRIPT), *tiny_args(tmp_path / "out", "--dataset_name", "./no_such_images")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "train_dit.py: error: `name`='./no_such_images' is not an accepted dataset" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


def test_diffusers_flag_names_and_the_old_spellings():
    parse = load_script().parse_args
    for flags in (["--dataset_name", "digits", "--resolution", "16"], ["--dataset", "digits", "--image_size", "16"]):
        args = parse(["--output_dir", "x", *flags])
        assert (args.dataset_name, args.resolution) == ("digits", 16)


def test_a_finished_block_is_kept_unless_overwrite_output_dir(tmp_path):
    script = load_script()
    script.main(tiny_args(tmp_path, "--block_index", "0"))
    first = block_weights(tmp_path, 0)
    with pytest.raises(ValueError, match=r"already holds finished block 0 \(4 steps\).*--overwrite_output_dir"):
        script.main(tiny_args(tmp_path, "--block_index", "0", "--seed", "1"))
    assert all(torch.equal(first[name], tensor) for name, tensor in block_weights(tmp_path, 0).items())
    old_checkpoint = tmp_path / "checkpoints" / "block_0" / "checkpoint-2"
    assert old_checkpoint.is_dir()
    summary = script.main(tiny_args(tmp_path, "--block_index", "0", "--seed", "1", "--overwrite_output_dir",
                                    "--checkpointing_steps", "3"))
    assert summary["blocks"][0]["steps"] == 4 and not summary["blocks"][0]["skipped"]
    # the replaced run's checkpoints are gone: `latest` can only find the new run's
    assert sorted(os.listdir(tmp_path / "checkpoints" / "block_0")) == ["checkpoint-3"]
    retrained = block_weights(tmp_path, 0)
    assert any(not torch.equal(first[name], retrained[name]) for name in first)
    # another block of the same folder is not "finished", so it trains without the flag
    assert script.main(tiny_args(tmp_path, "--block_index", "1"))["blocks"][0]["block_index"] == 1


def test_num_train_epochs_sets_the_steps_from_the_training_set(tmp_path):
    args = [arg for arg in tiny_args(tmp_path, "--block_index", "0") if arg not in ("--max_train_steps", "4")]
    summary = load_script().main([*args, "--num_train_epochs", "2", "--train_batch_size", "512"])
    assert summary["blocks"][0]["steps"] == 2 * (1617 // 512)       # 1,617 training digits


def test_hub_token_reaches_every_upload(tmp_path, fake_hub):
    load_script().main(tiny_args(tmp_path, "--block_index", "0", "--num_blocks", "1", "--num_hidden_layers", "1",
                                 "--push_to_hub", "--hub_model_id", "org/dit", "--hub_token", "hf_secret"))
    uploads = [token for (_, path, _), token in zip(fake_hub.requests, fake_hub.authorizations)
               if path.startswith(("/api/repos/", "/api/models/"))]   # repo creation, preupload, commits
    assert uploads and set(uploads) == {"Bearer hf_secret"}
    files = check_pushed_repo(fake_hub, "org/dit", tmp_path, component_folders=("scheduler", "transformer"))
    assert {"samples.png", "transformer/block_0.safetensors"} <= set(files)


def test_accelerate_launch_smoke(tmp_path):
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", str(SCRIPT),
        *tiny_args(tmp_path, "--block_index", "0", "--max_train_steps", "2", "--report_to", "tensorboard"),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "transformer" / "block_0.safetensors").is_file()
    assert any((tmp_path / "logs").rglob("events.out.tfevents.*"))
