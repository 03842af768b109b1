"""What each benchmark needs from a model family: a config at a given B, a batch, and its block loss.

A family registers a `BenchmarkFamily` in `FAMILIES`; the scripts take `--family <name>`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from hf_diffusionblocks import (
    BlockDenoisingLoss,
    CausalLMDenoisingLoss,
    DiffusionBlocksCausalLMConfig,
    DiffusionBlocksForCausalLM,
    DiffusionBlocksDiTConfig,
    DiffusionBlocksDiTModel,
    DiffusionBlocksForMaskedLM,
    DiffusionBlocksMaskedLMConfig,
    MaskedDiffusionLoss,
)
from hf_diffusionblocks.models.dit import DIT_SIZES
from hf_diffusionblocks.models.vit import (
    VIT_SIZES,
    DiffusionBlocksForImageClassification,
    DiffusionBlocksViTConfig,
    classification_training_loss,
)


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


def _mdm_batch(config, batch_size: int, device: torch.device) -> dict:
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, config.mask_token_id, (batch_size, config.max_position_embeddings), generator=generator)
    return {"input_ids": input_ids.to(device)}


def _mdm_loss(model, block_index: int, batch: dict, generator: torch.Generator) -> torch.Tensor:
    loss = MaskedDiffusionLoss(model.build_scheduler(), model.config.mask_token_id)
    return loss(model, block_index, batch["input_ids"], generator)


def _vit_config(num_blocks: int, size: str) -> DiffusionBlocksViTConfig:
    """B = 1 is the paper's end-to-end baseline: the same ViT as a standard classifier (one pass, CE)."""
    vit = VIT_SIZES[size]
    return DiffusionBlocksViTConfig(
        image_size=32, patch_size=4, num_channels=3, num_labels=100,  # CIFAR-100, as in the paper
        hidden_size=vit.hidden_size, num_hidden_layers=vit.num_hidden_layers,
        num_attention_heads=vit.num_attention_heads, intermediate_size=vit.intermediate_size,
        num_blocks=num_blocks, classifier_type="standard" if num_blocks == 1 else "diffusion",
    )


def _vit_loss(model, block_index: int, batch: dict, generator: torch.Generator) -> torch.Tensor:
    return classification_training_loss(model, block_index, batch["pixel_values"], batch["labels"], generator)


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


def _ar_batch(config, batch_size: int, device: torch.device) -> dict:
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, config.vocab_size, (batch_size, config.max_position_embeddings), generator=generator)
    return {"input_ids": input_ids.to(device)}


def _ar_loss(model, block_index: int, batch: dict, generator: torch.Generator) -> torch.Tensor:
    return CausalLMDenoisingLoss(model.config)(model, block_index, batch["input_ids"], generator)


FAMILIES: dict[str, BenchmarkFamily] = {
    "ar": BenchmarkFamily(
        name="ar", build_config=_ar_config, model_class=DiffusionBlocksForCausalLM,
        make_batch=_ar_batch, block_loss=_ar_loss, default_size="S", default_batch_size=8,
    ),
    "dit": BenchmarkFamily(
        name="dit", build_config=_dit_config, model_class=DiffusionBlocksDiTModel,
        make_batch=_dit_batch, block_loss=_dit_loss, default_size="S", default_batch_size=8,
    ),
    "mdm": BenchmarkFamily(
        name="mdm", build_config=_mdm_config, model_class=DiffusionBlocksForMaskedLM,
        make_batch=_mdm_batch, block_loss=_mdm_loss, default_size="S", default_batch_size=8,
    ),
    "vit": BenchmarkFamily(
        name="vit", build_config=_vit_config, model_class=DiffusionBlocksForImageClassification,
        make_batch=_dit_batch, block_loss=_vit_loss, default_size="S", default_batch_size=8,
    ),
}
