"""What each benchmark needs from a model family: a config at a given B, a batch, and its block loss.

A family registers a `BenchmarkFamily` in `FAMILIES`; the scripts take `--family <name>`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from hf_diffusionblocks import BlockDenoisingLoss, DiffusionBlocksDiTConfig, DiffusionBlocksDiTModel
from hf_diffusionblocks.models.dit import DIT_SIZES


@dataclass(frozen=True)
class BenchmarkFamily:
    """How to build, feed and train one family at benchmark size."""

    name: str
    build_config: Callable[[int, str], object]          # (num_blocks, size) -> config
    model_class: type
    make_batch: Callable[[object, int, torch.device], dict]  # (config, batch_size, device) -> batch
    block_loss: Callable[[object, int, dict, torch.Generator], torch.Tensor]  # (model, block, batch, gen) -> loss
    default_size: str
    default_batch_size: int


def _dit_config(num_blocks: int, size: str) -> DiffusionBlocksDiTConfig:
    dit = DIT_SIZES[size]
    return DiffusionBlocksDiTConfig(
        image_size=32, patch_size=2, num_channels=3, num_labels=10,
        hidden_size=dit.hidden_size, num_hidden_layers=dit.num_hidden_layers,
        num_attention_heads=dit.num_attention_heads, intermediate_size=dit.intermediate_size,
        num_blocks=num_blocks,
    )


def _dit_batch(config, batch_size: int, device: torch.device) -> dict:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch_size, config.num_channels, config.image_size, config.image_size, generator=generator)
    labels = torch.randint(0, config.num_labels, (batch_size,), generator=generator)
    return {"pixel_values": images.clamp(-1, 1).to(device), "labels": labels.to(device)}


def _dit_loss(model, block_index: int, batch: dict, generator: torch.Generator) -> torch.Tensor:
    config = model.config
    loss = BlockDenoisingLoss(config.noise_partition, config.preconditioning)
    return loss(model, block_index, batch["pixel_values"], generator, class_labels=batch["labels"])


FAMILIES: dict[str, BenchmarkFamily] = {
    "dit": BenchmarkFamily(
        name="dit", build_config=_dit_config, model_class=DiffusionBlocksDiTModel,
        make_batch=_dit_batch, block_loss=_dit_loss, default_size="S", default_batch_size=8,
    ),
}
