"""Block-parallel training: process → block mapping, and real 2-process runs with torchrun (gloo)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hf_diffusionblocks import DiffusionBlocksDiTModel, DiffusionBlocksImagePipeline
from hf_diffusionblocks.training import assign_blocks, local_batch

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "train_dit.py"


def test_one_group_per_block_when_processes_are_a_multiple_of_blocks():
    groups = [assign_blocks("all", 3, rank, 6)[0] for rank in range(6)]
    assert [g.block_indices for g in groups] == [(0,), (0,), (1,), (1,), (2,), (2,)]
    assert groups[3].group_ranks == (2, 3) and groups[3].rank_in_group == 1
    assert assign_blocks("all", 3, 0, 6)[1] == [(0, 1), (2, 3), (4, 5)]


def test_fewer_processes_than_blocks_train_in_rounds():
    assert [assign_blocks("all", 5, rank, 2)[0].block_indices for rank in range(2)] == [(0, 2, 4), (1, 3)]


def test_one_block_on_all_processes_and_bad_counts():
    assignment, groups = assign_blocks(1, 3, 1, 2)
    assert assignment.block_indices == (1,) and assignment.group_ranks == (0, 1) and groups == [(0, 1)]
    with pytest.raises(ValueError, match="cannot be split evenly over num_blocks=3"):
        assign_blocks("all", 3, 0, 4)
    with pytest.raises(ValueError, match="block_index"):
        assign_blocks(3, 3, 0, 1)


def test_local_batch_slices_the_global_batch_without_overlap():
    indices = torch.arange(8)
    first, _ = assign_blocks(0, 2, 0, 2)
    second, _ = assign_blocks(0, 2, 1, 2)
    assert local_batch(indices, first).tolist() == [0, 1, 2, 3]
    assert local_batch(indices, second).tolist() == [4, 5, 6, 7]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def torchrun(output_dir, *extra):
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(free_port()), str(SCRIPT),
        "--output_dir", str(output_dir), "--num_hidden_layers", "2", "--num_blocks", "2", "--max_train_steps", "6",
        "--train_batch_size", "16", "--report_to", "none", "--num_inference_steps", "2", "--samples_per_class", "1",
        "--checkpointing_steps", "3", *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    decoder, summaries, text = json.JSONDecoder(), [], result.stdout
    position = text.find("{")
    while position != -1:
        summary, end = decoder.raw_decode(text, position)
        summaries.append(summary)
        position = text.find("{", end)
    return sorted(summaries, key=lambda summary: summary["rank"])


def test_two_processes_train_two_blocks_at_once(tmp_path):
    summaries = torchrun(tmp_path, "--block_index", "all")
    assert [[block["block_index"] for block in s["blocks"]] for s in summaries] == [[0], [1]]
    model = DiffusionBlocksDiTModel.from_pretrained(tmp_path, subfolder="transformer")
    initial = DiffusionBlocksDiTModel(model.config)
    for block_index in range(2):  # every block moved away from its initial (zero) readout
        trained = model.get_block(block_index).final_layer.linear.weight
        assert not torch.equal(trained, initial.get_block(block_index).final_layer.linear.weight)
    assert not torch.equal(model.get_block(0).final_layer.linear.weight, model.get_block(1).final_layer.linear.weight)
    pipeline = DiffusionBlocksImagePipeline.from_pretrained(tmp_path)
    images = pipeline([0, 1], num_inference_steps=2, output_type="pt").images
    assert images.shape == (2, 1, 8, 8) and torch.isfinite(images).all()


def test_two_processes_on_one_block_stay_identical(tmp_path):
    summaries = torchrun(tmp_path, "--block_index", "0")
    digests = [s["blocks"][0]["weights_sha256"] for s in summaries]
    assert len(digests) == 2 and digests[0] == digests[1]
    # and the saved block is that replica
    saved = load_file(tmp_path / "transformer" / "block_0.safetensors")
    assert any(name.startswith("blocks.0.") for name in saved)
    assert sorted(os.listdir(tmp_path / "checkpoints" / "block_0")) == ["checkpoint-3"]
