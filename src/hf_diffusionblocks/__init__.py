"""hf-diffusionblocks: DiffusionBlocks (Shing, Koyama, Akiba, ICLR 2026) on the Hugging Face stack.

A residual transformer of L layers is read as the Euler discretisation of a diffusion's
probability-flow ODE, cut into B blocks that each own one interval of noise levels, and every
block is trained alone with denoising score matching.
"""

from .losses import BlockDenoisingLoss
from .modeling import BlockPartitionedConfig, DiffusionBlocksConfig, DiffusionBlocksPreTrainedModel
from .models.dit import DiffusionBlocksDiTConfig, DiffusionBlocksDiTModel
from .models.causal_lm import CausalLMDenoisingLoss, DiffusionBlocksCausalLMConfig, DiffusionBlocksForCausalLM
from .models.masked_lm import DiffusionBlocksForMaskedLM, DiffusionBlocksMaskedLMConfig, MaskedDiffusionLoss
from .models.recurrent import DiffusionBlocksRecurrentConfig, DiffusionBlocksRecurrentForCausalLM
from .models.vit import DiffusionBlocksForImageClassification, DiffusionBlocksViTConfig
from .pipelines import DiffusionBlocksImagePipeline, DiffusionBlocksTextPipeline
from .families import FAMILIES, ModelFamily, family_by_name, register_auto_classes
from .hub import push_block_to_hub, push_folder_to_hub, push_root_files_to_hub
from .model_card import write_model_card
from .partition import NoisePartition, assign_layers_to_blocks, format_partition_table
from .preconditioning import EDMPreconditioning
from .pretrained.modeling_routed import (
    RoutedDiTTransformer2DModel,
    RoutedFluxTransformer2DModel,
    RoutedPixArtTransformer2DModel,
    RoutedSD3Transformer2DModel,
)
from .schedulers import DiffusionBlocksScheduler, MaskedDiffusionBlocksScheduler
from .tokenization_char import CharacterTokenizer

__version__ = "0.1.0"

# Every family's config and model resolve through transformers' Auto classes once the package is imported.
register_auto_classes()

__all__ = [
    "BlockDenoisingLoss",
    "BlockPartitionedConfig",
    "CausalLMDenoisingLoss",
    "CharacterTokenizer",
    "DiffusionBlocksCausalLMConfig",
    "DiffusionBlocksConfig",
    "DiffusionBlocksDiTConfig",
    "DiffusionBlocksDiTModel",
    "DiffusionBlocksForCausalLM",
    "DiffusionBlocksForImageClassification",
    "DiffusionBlocksForMaskedLM",
    "DiffusionBlocksImagePipeline",
    "DiffusionBlocksMaskedLMConfig",
    "DiffusionBlocksPreTrainedModel",
    "DiffusionBlocksRecurrentConfig",
    "DiffusionBlocksRecurrentForCausalLM",
    "DiffusionBlocksScheduler",
    "DiffusionBlocksTextPipeline",
    "DiffusionBlocksViTConfig",
    "EDMPreconditioning",
    "FAMILIES",
    "MaskedDiffusionLoss",
    "MaskedDiffusionBlocksScheduler",
    "ModelFamily",
    "NoisePartition",
    "RoutedDiTTransformer2DModel",
    "RoutedFluxTransformer2DModel",
    "RoutedPixArtTransformer2DModel",
    "RoutedSD3Transformer2DModel",
    "assign_layers_to_blocks",
    "family_by_name",
    "format_partition_table",
    "push_block_to_hub",
    "push_folder_to_hub",
    "push_root_files_to_hub",
    "write_model_card",
]
