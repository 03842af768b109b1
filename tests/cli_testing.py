"""What the tests of the `hf-diffusionblocks` commands share: running the CLI, a DiT and its folders."""

from __future__ import annotations

import os

import pytest
from conftest import randomize_

from hf_diffusionblocks import (
    DiffusionBlocksDiTConfig,
    DiffusionBlocksDiTModel,
    DiffusionBlocksImagePipeline,
    DiffusionBlocksScheduler,
)
from hf_diffusionblocks_cli import main


def variant(config: DiffusionBlocksDiTConfig, **changes) -> DiffusionBlocksDiTConfig:
    """The same config with some fields changed (validated again)."""
    return DiffusionBlocksDiTConfig(**{**config.architecture_dict(), **changes})


def run(capsys, *argv: str) -> tuple[int, str, str]:
    status = main([str(argument) for argument in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture
def config(tiny_dit_config) -> DiffusionBlocksDiTConfig:
    return variant(tiny_dit_config, layers_per_block=[1, 2, 3])


@pytest.fixture
def model(config) -> DiffusionBlocksDiTModel:
    return randomize_(DiffusionBlocksDiTModel(config))


def save_pipeline(
    model: DiffusionBlocksDiTModel, folder, block_indices: list[int], steps: dict[int, int]
) -> None:
    """A pipeline folder as one training process writes it: root files and its own blocks only."""
    DiffusionBlocksImagePipeline(
        model, DiffusionBlocksScheduler(**model.config.scheduler_kwargs())
    ).save_pretrained(folder)
    for block_index in range(model.config.num_blocks):
        os.remove(folder / "transformer" / f"block_{block_index}.safetensors")
    model.save_pretrained(folder / "transformer", block_indices=block_indices, training_steps=steps)


def block_rows(output: str) -> dict[int, list[str]]:
    """The per-block rows of `info`: block index → [layers, status, training_steps, parameters]."""
    rows = {}
    for line in output.splitlines():
        fields = line.split()
        if len(fields) == 5 and fields[0].isdigit() and fields[2] in ("present", "missing"):
            rows[int(fields[0])] = fields[1:]
    return rows
