"""block_container: running a batch whose samples belong to different blocks."""

import pytest
import torch

from hf_diffusionblocks.modeling.block_container import run_by_owning_block, validate_block_indices
from hf_diffusionblocks.modeling.embeddings import unpatchify


def test_each_block_sees_only_its_samples_and_the_output_keeps_batch_order():
    owners = torch.tensor([2, 0, 2, 1, 0])
    inputs = torch.arange(5.0)
    seen = {}

    def run(block_index, indices):
        seen[block_index] = indices.tolist()
        return inputs[indices][:, None] * 10 + block_index

    output = run_by_owning_block(owners, run)
    assert seen == {0: [1, 4], 1: [3], 2: [0, 2]}
    assert output[:, 0].tolist() == [2.0, 10.0, 22.0, 31.0, 40.0]


def test_a_batch_of_one_block_runs_whole_and_an_empty_batch_gives_none():
    calls = []
    output = run_by_owning_block(torch.tensor([1, 1, 1]), lambda b, indices: calls.append((b, indices)) or torch.ones(3))
    assert calls == [(1, None)] and output.tolist() == [1.0, 1.0, 1.0]
    assert run_by_owning_block(torch.empty(0, dtype=torch.long), lambda b, indices: torch.ones(0)) is None


def test_validate_block_indices_names_the_range():
    assert validate_block_indices([2, 0, 2], 3) == [0, 2]
    with pytest.raises(ValueError, match=r"block_index must be an int in \[0, 2\]"):
        validate_block_indices([3], 3)


def test_unpatchify_inverts_the_patch_layout():
    image = torch.randn(2, 3, 8, 8)
    patch = 4
    tokens = image.reshape(2, 3, 2, patch, 2, patch).permute(0, 2, 4, 3, 5, 1).reshape(2, 4, patch * patch * 3)
    assert torch.equal(unpatchify(tokens, patch, 3), image)
    with pytest.raises(ValueError, match="square grid"):
        unpatchify(torch.zeros(1, 3, 12), 2, 3)
