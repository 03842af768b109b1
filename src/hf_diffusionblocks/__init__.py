"""hf-diffusionblocks: DiffusionBlocks (Shing, Koyama, Akiba, ICLR 2026) on the Hugging Face stack.

A residual transformer of L layers is read as the Euler discretisation of a diffusion's
probability-flow ODE, cut into B blocks that each own one interval of noise levels, and every
block is trained alone with denoising score matching.
"""

from transformers import AutoConfig, AutoModel

from .losses import BlockDenoisingLoss
from .modeling import BlockPartitionedConfig, DiffusionBlocksConfig, DiffusionBlocksPreTrainedModel
from .models.dit import DiffusionBlocksDiTConfig, DiffusionBlocksDiTModel
from .pipelines import DiffusionBlocksImagePipeline
from .hub import push_block_to_hub, push_folder_to_hub, push_root_files_to_hub
from .model_card import write_model_card
from .partition import NoisePartition, assign_layers_to_blocks, format_partition_table
from .preconditioning import EDMPreconditioning
from .schedulers import DiffusionBlocksScheduler, MaskedDiffusionBlocksScheduler

__version__ = "0.1.0"

AutoConfig.register(DiffusionBlocksDiTConfig.model_type, DiffusionBlocksDiTConfig, exist_ok=True)
AutoModel.register(DiffusionBlocksDiTConfig, DiffusionBlocksDiTModel, exist_ok=True)

__all__ = [
    "BlockDenoisingLoss",
    "BlockPartitionedConfig",
    "DiffusionBlocksConfig",
    "DiffusionBlocksDiTConfig",
    "DiffusionBlocksDiTModel",
    "DiffusionBlocksImagePipeline",
    "DiffusionBlocksPreTrainedModel",
    "DiffusionBlocksScheduler",
    "EDMPreconditioning",
    "MaskedDiffusionBlocksScheduler",
    "NoisePartition",
    "assign_layers_to_blocks",
    "format_partition_table",
    "push_block_to_hub",
    "push_folder_to_hub",
    "push_root_files_to_hub",
    "write_model_card",
]
