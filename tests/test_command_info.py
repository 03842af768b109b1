"""`hf-diffusionblocks info`: what a folder holds, block by block."""

from __future__ import annotations

from cli_testing import block_rows, config, model, run, save_pipeline, variant  # noqa: F401  (config and model are fixtures)

from hf_diffusionblocks import DiffusionBlocksDiTModel


def test_info_lists_blocks_steps_and_parameter_counts(capsys, model, tmp_path):
    model.save_pretrained(tmp_path, block_indices=[0, 2], training_steps={0: 7, 2: 9})
    status, output, _ = run(capsys, "info", tmp_path)
    assert status == 0
    assert "model_type: diffusion_blocks_dit (DiffusionBlocksDiTModel)" in output
    assert "[0.1796, 0.5050]" in output  # the partition table
    assert block_rows(output) == {
        0: ["0-0", "present", "7", str(model.num_block_parameters(0))],
        1: ["1-2", "missing", "-", "-"],
        2: ["3-5", "present", "9", str(model.num_block_parameters(2))],
    }
    assert "missing blocks: [1]" in output


def test_info_finds_the_model_of_a_pipeline_folder(capsys, model, tmp_path):
    save_pipeline(model, tmp_path, [1], {1: 5})
    status, output, _ = run(capsys, "info", tmp_path)
    assert status == 0 and f"model: {tmp_path}/transformer" in output
    assert block_rows(output)[1] == ["1-2", "present", "5", str(model.num_block_parameters(1))]


def test_info_marks_a_block_of_another_partition_as_foreign(capsys, model, config, tmp_path):
    model.save_pretrained(tmp_path, block_indices=[0])
    DiffusionBlocksDiTModel(variant(config, partition="uniform_log"), block_indices=[1]).save_block(tmp_path, 1)
    status, output, _ = run(capsys, "info", tmp_path)
    assert status == 1
    assert "    1        1-2   foreign" in output and "present blocks: [0]" in output
    assert "foreign block 1: trained under another config: partition='uniform_log' (model: 'equiprobable')" in output
