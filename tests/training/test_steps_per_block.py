"""--max_train_steps_per_block / --train_batch_size_per_block: each block trains its own number of steps (e.g. more
for the high-noise block) and its own batch size (e.g. more for a block whose loss sees few targets)."""

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


def test_each_block_trains_its_own_batch_size(tmp_path, monkeypatch):
    from hf_diffusionblocks.training import trainer

    batch_sizes = {}

    class RecordingBatchOrder(trainer.BatchOrder):
        def __init__(self, num_examples, batch_size, seed, stream=0):
            batch_sizes[stream] = batch_size
            super().__init__(num_examples, batch_size, seed, stream=stream)

    monkeypatch.setattr(trainer, "BatchOrder", RecordingBatchOrder)
    load_script("train_dit").main(tiny_args(tmp_path, "--max_train_steps", "2", "--train_batch_size_per_block", "2", "5", "3"))
    assert batch_sizes == {0: 2, 1: 5, 2: 3}
    assert "train_batch_size_per_block" in (tmp_path / "README.md").read_text()


@pytest.mark.parametrize("extra, message", [
    (["--train_batch_size_per_block", "3", "1"], "one number per block"),
    (["--train_batch_size_per_block", "3", "0", "2"], "must all be >= 1"),
    (["--train_batch_size_per_block", "3", "--training_mode", "end_to_end"], "one number per block of a blockwise run"),
    (["--train_batch_size_per_block", "3", "1", "2", "--num_train_epochs", "1"], "not --num_train_epochs"),
    (["--max_train_steps_per_block", "3", "1"], "one number per block"),
    (["--max_train_steps_per_block", "3", "1", "2", "--max_train_steps", "5"], "not both"),
    (["--max_train_steps_per_block", "3", "0", "2"], "must all be >= 1"),
    (["--max_train_steps_per_block", "3", "--training_mode", "end_to_end"], "one number per block of a blockwise run"),
])
def test_bad_values_are_named(tmp_path, extra, message):
    with pytest.raises(ValueError, match=message):
        load_script("train_dit").main(tiny_args(tmp_path, *extra))
