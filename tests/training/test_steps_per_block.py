"""--max_train_steps_per_block: each block trains its own number of steps (e.g. more for the high-noise block)."""

import pytest

from hf_diffusionblocks import DiffusionBlocksImagePipeline
from script_testing import load_script


def tiny_args(output_dir, *extra):
    return [
        "--output_dir", str(output_dir), "--dataset_name", "digits", "--num_hidden_layers", "3", "--train_batch_size", "4",
        "--logging_steps", "1", "--checkpointing_steps", "2", "--lr_warmup_steps", "0", "--num_inference_steps", "3",
        "--samples_per_class", "1", "--report_to", "none", *extra,
    ]


def test_each_block_trains_its_own_steps_and_records_them(tmp_path):
    summary = load_script("train_dit").main(tiny_args(tmp_path, "--max_train_steps_per_block", "3", "1", "2"))
    assert [block["steps"] for block in summary["blocks"]] == [3, 1, 2]
    assert DiffusionBlocksImagePipeline.from_pretrained(tmp_path).transformer.block_training_steps == {0: 3, 1: 1, 2: 2}


def test_one_block_of_a_per_block_run_resumes_to_its_own_steps(tmp_path):
    script = load_script("train_dit")
    script.main(tiny_args(tmp_path, "--max_train_steps_per_block", "4", "1", "1", "--block_index", "0"))
    again = script.main(tiny_args(tmp_path, "--max_train_steps_per_block", "4", "1", "1", "--block_index", "0",
                                  "--resume_from_checkpoint", "latest"))
    assert again["blocks"][0]["skipped"] and again["blocks"][0]["steps"] == 4


@pytest.mark.parametrize("extra, message", [
    (["--max_train_steps_per_block", "3", "1"], "one number per block"),
    (["--max_train_steps_per_block", "3", "1", "2", "--max_train_steps", "5"], "not both"),
    (["--max_train_steps_per_block", "3", "0", "2"], "must all be >= 1"),
    (["--max_train_steps_per_block", "3", "--training_mode", "end_to_end"], "one number per block of a blockwise run"),
])
def test_bad_values_are_named(tmp_path, extra, message):
    with pytest.raises(ValueError, match=message):
        load_script("train_dit").main(tiny_args(tmp_path, *extra))
