"""Machinery shared by every model family: configs, noise embedding, AdaLN-Zero layers, the block base model."""

from .adaln import AdaLNZeroFinalLayer, AdaLNZeroTransformerLayer
from .configuration_blocks import BlockPartitionedConfig, DiffusionBlocksConfig
from .embeddings import NoiseEmbedder
from .modeling_blocks import DiffusionBlocksPreTrainedModel, validate_block_indices

__all__ = [
    "AdaLNZeroFinalLayer",
    "AdaLNZeroTransformerLayer",
    "BlockPartitionedConfig",
    "DiffusionBlocksConfig",
    "DiffusionBlocksPreTrainedModel",
    "NoiseEmbedder",
    "validate_block_indices",
]
