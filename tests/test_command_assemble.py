"""`hf-diffusionblocks assemble`: merging folders that each hold some blocks, after checking them all."""

from __future__ import annotations

import os

import torch
from cli_testing import block_rows, config, model, run, save_pipeline, variant  # noqa: F401  (config and model are fixtures)
from conftest import randomize_

from hf_diffusionblocks import DiffusionBlocksDiTModel, DiffusionBlocksImagePipeline


def test_assemble_model_folders_loads_bit_exactly(capsys, model, tmp_path):
    model.save_pretrained(tmp_path / "a", block_indices=[0, 1])
    model.save_pretrained(tmp_path / "b", block_indices=[1, 2])  # block 1 twice, identical
    status, output, err = run(capsys, "assemble", tmp_path / "out", tmp_path / "a", tmp_path / "b")
    assert status == 0, err
    assert "missing blocks: []" in output
    assert sorted(os.listdir(tmp_path / "out")) == [  # complete: the model card too
        "README.md",
        "block_0.safetensors",
        "block_1.safetensors",
        "block_2.safetensors",
        "config.json",
        "hf_diffusionblocks_classes.py",
        "model.safetensors.index.json",
    ]
    loaded = DiffusionBlocksDiTModel.from_pretrained(tmp_path / "out")
    expected = model.state_dict()
    assert loaded.state_dict().keys() == expected.keys()
    assert all(torch.equal(loaded.state_dict()[name], tensor) for name, tensor in expected.items())


def test_assemble_pipeline_folders_gives_a_pipeline(capsys, model, tmp_path):
    save_pipeline(model, tmp_path / "rank0", [0], {0: 3})
    save_pipeline(model, tmp_path / "rank1", [1, 2], {1: 4, 2: 5})
    status, output, err = run(capsys, "assemble", tmp_path / "out", tmp_path / "rank0", tmp_path / "rank1")
    assert status == 0, err
    assert {row[2] for row in block_rows(output).values()} == {"3", "4", "5"}
    pipeline = DiffusionBlocksImagePipeline.from_pretrained(tmp_path / "out")
    assert pipeline.transformer.loaded_block_indices == [0, 1, 2]
    assert [name for name in os.listdir(tmp_path) if name.startswith(".")] == []  # no staging folder left


def test_assemble_refuses_a_different_config_naming_the_field(capsys, model, config, tmp_path):
    model.save_pretrained(tmp_path / "a", block_indices=[0])
    other = DiffusionBlocksDiTModel(variant(config, partition="uniform_log"), block_indices=[1])
    other.save_pretrained(tmp_path / "b")
    status, _, err = run(capsys, "assemble", tmp_path / "out", tmp_path / "a", tmp_path / "b")
    assert status == 1
    assert "differing fields: partition" in err
    assert not (tmp_path / "out").exists()


def test_assemble_refuses_a_block_file_from_another_config(capsys, model, config, tmp_path):
    model.save_pretrained(tmp_path / "a", block_indices=[0])
    other = DiffusionBlocksDiTModel(variant(config, overlap=0.1), block_indices=[1])
    other.save_block(tmp_path / "a", 1)  # a foreign block dropped into a folder whose config.json is fine
    status, _, err = run(capsys, "assemble", tmp_path / "out", tmp_path / "a")
    assert status == 1 and "overlap" in err


def test_assemble_refuses_duplicate_blocks_with_different_contents(capsys, model, config, tmp_path):
    model.save_pretrained(tmp_path / "a", block_indices=[0])
    retrained = randomize_(DiffusionBlocksDiTModel(config, block_indices=[0]), seed=1)
    retrained.save_pretrained(tmp_path / "b")
    status, _, err = run(capsys, "assemble", tmp_path / "out", tmp_path / "a", tmp_path / "b")
    assert status == 1 and "block 0 is in" in err and "different contents" in err


def test_assemble_reports_missing_blocks(capsys, model, tmp_path):
    model.save_pretrained(tmp_path / "a", block_indices=[2])
    status, _, err = run(capsys, "assemble", tmp_path / "out", tmp_path / "a")
    assert status == 0 and "blocks [0, 1] are missing" in err
    status, _, err = run(capsys, "assemble", tmp_path / "strict", tmp_path / "a", "--require_complete")
    assert status == 1 and "blocks [0, 1] are in none of the inputs" in err
    assert not (tmp_path / "strict").exists()
    status, _, err = run(capsys, "assemble", tmp_path / "out", tmp_path / "a")
    assert status == 1 and "already exists" in err


def test_assemble_reports_every_inconsistency_and_writes_nothing(capsys, model, config, tmp_path):
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open
    from hf_diffusionblocks.modeling.block_checkpoint import metadata_digest, tensors_digest

    save_pipeline(model, tmp_path / "a", [0, 1], {0: 1, 1: 1})
    save_pipeline(model, tmp_path / "b", [2], {2: 1})
    # block 0 gains a tensor (with a consistent checksum), block 1 has a flipped bit
    path = tmp_path / "a" / "transformer" / "block_0.safetensors"
    with safe_open(str(path), framework="pt") as file:
        metadata = file.metadata()
    tensors = {**load_file(path), "blocks.0.extra": torch.zeros(3)}
    metadata = {**metadata, "weights_sha256": tensors_digest(tensors)}
    save_file(tensors, str(path), metadata={**metadata, "metadata_sha256": metadata_digest(metadata)})
    corrupt = tmp_path / "a" / "transformer" / "block_1.safetensors"
    data = bytearray(corrupt.read_bytes())
    data[-3] ^= 0x10
    corrupt.write_bytes(bytes(data))
    # b's scheduler samples another partition than its model was trained on
    scheduler_config = tmp_path / "b" / "scheduler" / "scheduler_config.json"
    scheduler_config.write_text(scheduler_config.read_text().replace('"overlap": 0.05', '"overlap": 0.2'))

    status, _, err = run(capsys, "assemble", tmp_path / "out", tmp_path / "a", tmp_path / "b")
    assert status == 1
    assert "inconsistencies, nothing written" in err
    assert "unexpected tensor blocks.0.extra" in err
    assert "block 1 (" in err and "is corrupt" in err
    assert "overlap=0.2 contradicts the model's overlap=0.05" in err
    assert "differ in scheduler/scheduler_config.json" in err
    assert not (tmp_path / "out").exists()

    # --no_verify skips the hashing: the flipped bit is no longer seen, the other problems still are
    status, _, err = run(capsys, "assemble", tmp_path / "out", tmp_path / "a", tmp_path / "b", "--no_verify")
    assert status == 1 and "is corrupt" not in err and "unexpected tensor blocks.0.extra" in err


def test_assemble_ignores_run_artefacts_of_per_block_folders(capsys, model, tmp_path):
    """Each process of a block-parallel run writes its own validation images, samples and card."""
    save_pipeline(model, tmp_path / "a", [0], {0: 2})
    save_pipeline(model, tmp_path / "b", [1, 2], {1: 2, 2: 2})
    for name, content in (("a", b"A"), ("b", b"B")):
        (tmp_path / name / "validation").mkdir()
        (tmp_path / name / "validation" / "block_0_step_2.png").write_bytes(content)
        (tmp_path / name / "README.md").write_text(name)
    status, output, err = run(capsys, "assemble", tmp_path / "out", tmp_path / "a", tmp_path / "b")
    assert status == 0, err
    assert not (tmp_path / "out" / "validation").exists()
    assert DiffusionBlocksImagePipeline.from_pretrained(tmp_path / "out").transformer.is_complete


def test_assemble_merges_folders_written_by_one_training_run_per_block(capsys, tmp_path):
    """The README's workflow: `train_dit.py --block_index b` into one folder per block, then `assemble`."""
    from script_testing import load_script

    script = load_script("train_dit")
    for block_index in range(3):
        script.main([
            "--output_dir", str(tmp_path / f"block{block_index}"), "--dataset", "digits", "--num_hidden_layers", "3",
            "--train_batch_size", "8", "--max_train_steps", "2", "--checkpointing_steps", "2", "--logging_steps", "1",
            "--num_inference_steps", "3", "--samples_per_class", "1", "--report_to", "none",
            "--block_index", str(block_index),
        ])
    status, output, err = run(capsys, "assemble", tmp_path / "merged", *(tmp_path / f"block{b}" for b in range(3)))
    assert status == 0, err
    assert "missing blocks: []" in output
    pipeline = DiffusionBlocksImagePipeline.from_pretrained(tmp_path / "merged")
    images = pipeline(class_labels=[0, 1], num_inference_steps=3, output_type="pt").images
    assert images.shape == (2, 1, 8, 8) and torch.isfinite(images).all()
