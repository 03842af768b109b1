"""What each benchmark needs from a model family: a config at a given size and B, a batch, and its block loss.

The batch and the loss are the library's (`hf_diffusionblocks.families`); this file adds only the
benchmark sizes. A family registers a `BenchmarkFamily` in `FAMILIES`; the scripts take `--family <name>`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from hf_diffusionblocks import (
    DiffusionBlocksCausalLMConfig,
    DiffusionBlocksDiTConfig,
    DiffusionBlocksMaskedLMConfig,
    DiffusionBlocksViTConfig,
)
from hf_diffusionblocks.families import FAMILIES as LIBRARY_FAMILIES
from hf_diffusionblocks.models.dit import DIT_SIZES
from hf_diffusionblocks.models.vit import VIT_SIZES


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


# (hidden_size, num_hidden_layers, num_attention_heads) of the masked diffusion LM; "B" is MD4's text8 model.
MDM_SIZES: dict[str, tuple[int, int, int]] = {"XS": (128, 6, 4), "S": (384, 12, 6), "B": (768, 12, 12)}


def _mdm_config(num_blocks: int, size: str) -> DiffusionBlocksMaskedLMConfig:
    hidden_size, num_hidden_layers, num_attention_heads = MDM_SIZES[size]
    return DiffusionBlocksMaskedLMConfig(
        vocab_size=28, max_position_embeddings=256,  # text8: 27 characters + [MASK], windows of 256
        hidden_size=hidden_size, num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads, intermediate_size=4 * hidden_size,
        num_blocks=num_blocks,
    )


def _vit_config(num_blocks: int, size: str) -> DiffusionBlocksViTConfig:
    """B = 1 is the paper's end-to-end baseline: the same ViT as a standard classifier (one pass, CE)."""
    vit = VIT_SIZES[size]
    return DiffusionBlocksViTConfig(
        image_size=32, patch_size=4, num_channels=3, num_labels=100,  # CIFAR-100, as in the paper
        hidden_size=vit.hidden_size, num_hidden_layers=vit.num_hidden_layers,
        num_attention_heads=vit.num_attention_heads, intermediate_size=vit.intermediate_size,
        num_blocks=num_blocks, classifier_type="standard" if num_blocks == 1 else "diffusion",
    )


# (hidden_size, num_hidden_layers, num_attention_heads) of the causal LM; 12 layers as the paper's AR model.
AR_SIZES: dict[str, tuple[int, int, int]] = {"XS": (128, 8, 4), "S": (256, 12, 4), "B": (768, 12, 12)}


def _ar_config(num_blocks: int, size: str) -> DiffusionBlocksCausalLMConfig:
    """B = 1 is the paper's end-to-end baseline: the same decoder as an ordinary causal LM (next-token CE)."""
    hidden_size, num_hidden_layers, num_attention_heads = AR_SIZES[size]
    return DiffusionBlocksCausalLMConfig(
        vocab_size=1024, max_position_embeddings=128,  # the BPE of examples/train_ar.py, windows of 128
        hidden_size=hidden_size, num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
        intermediate_size=8 * ((8 * hidden_size // 3 + 7) // 8),
        num_blocks=num_blocks, objective="next_token" if num_blocks == 1 else "diffusion",
    )


def _benchmark_family(name: str, build_config: Callable[[int, str], object]) -> BenchmarkFamily:
    """The library's family `name` (model class, batch, block loss) at the sizes `build_config` makes."""
    family = LIBRARY_FAMILIES[name]

    def make_batch(config, batch_size: int, device: torch.device) -> dict:
        batch = family.example_batch(config, batch_size, torch.Generator().manual_seed(0))
        return {key: value.to(device) for key, value in batch.items()}

    return BenchmarkFamily(
        name=name, build_config=build_config, model_class=family.model_class, make_batch=make_batch,
        block_loss=family.block_loss, default_size="S", default_batch_size=8,
    )


FAMILIES: dict[str, BenchmarkFamily] = {
    name: _benchmark_family(name, build_config)
    for name, build_config in (("ar", _ar_config), ("dit", _dit_config), ("mdm", _mdm_config), ("vit", _vit_config))
}
