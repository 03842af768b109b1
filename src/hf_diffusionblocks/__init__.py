"""hf-diffusionblocks: DiffusionBlocks (Shing, Koyama, Akiba, ICLR 2026) on the Hugging Face stack.

A residual transformer of L layers is read as the Euler discretisation of a diffusion's
probability-flow ODE, cut into B blocks that each own one interval of noise levels, and every
block is trained alone with denoising score matching.
"""

from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM
from transformers import AutoModelForCausalLM, AutoModelForImageClassification
from transformers import AutoTokenizer

from .losses import BlockDenoisingLoss
from .modeling import BlockPartitionedConfig, DiffusionBlocksConfig, DiffusionBlocksPreTrainedModel
from .models.dit import DiffusionBlocksDiTConfig, DiffusionBlocksDiTModel
from .models.causal_lm import CausalLMDenoisingLoss, DiffusionBlocksCausalLMConfig, DiffusionBlocksForCausalLM
from .models.masked_lm import DiffusionBlocksForMaskedLM, DiffusionBlocksMaskedLMConfig, MaskedDiffusionLoss
from .models.recurrent import DiffusionBlocksRecurrentConfig, DiffusionBlocksRecurrentForCausalLM
from .models.vit import DiffusionBlocksForImageClassification, DiffusionBlocksViTConfig
from .pipelines import DiffusionBlocksImagePipeline, DiffusionBlocksTextPipeline
from .hub import push_block_to_hub, push_folder_to_hub, push_root_files_to_hub
from .model_card import write_model_card
from .partition import NoisePartition, assign_layers_to_blocks, format_partition_table
from .preconditioning import EDMPreconditioning
from .schedulers import DiffusionBlocksScheduler, MaskedDiffusionBlocksScheduler
from .tokenization_char import CharacterTokenizer

__version__ = "0.1.0"

AutoConfig.register(DiffusionBlocksDiTConfig.model_type, DiffusionBlocksDiTConfig, exist_ok=True)
AutoModel.register(DiffusionBlocksDiTConfig, DiffusionBlocksDiTModel, exist_ok=True)
AutoConfig.register(DiffusionBlocksMaskedLMConfig.model_type, DiffusionBlocksMaskedLMConfig, exist_ok=True)
AutoModel.register(DiffusionBlocksMaskedLMConfig, DiffusionBlocksForMaskedLM, exist_ok=True)
AutoModelForMaskedLM.register(DiffusionBlocksMaskedLMConfig, DiffusionBlocksForMaskedLM, exist_ok=True)
AutoConfig.register(DiffusionBlocksCausalLMConfig.model_type, DiffusionBlocksCausalLMConfig, exist_ok=True)
AutoModelForCausalLM.register(DiffusionBlocksCausalLMConfig, DiffusionBlocksForCausalLM, exist_ok=True)
# lets AutoTokenizer resolve tokenizer_class='CharacterTokenizer' (causal LM folders trained with --tokenizer char)
AutoTokenizer.register(DiffusionBlocksCausalLMConfig, tokenizer_class=CharacterTokenizer, exist_ok=True)
AutoConfig.register(DiffusionBlocksViTConfig.model_type, DiffusionBlocksViTConfig, exist_ok=True)
AutoModelForImageClassification.register(DiffusionBlocksViTConfig, DiffusionBlocksForImageClassification, exist_ok=True)
AutoConfig.register(DiffusionBlocksRecurrentConfig.model_type, DiffusionBlocksRecurrentConfig, exist_ok=True)
AutoModelForCausalLM.register(DiffusionBlocksRecurrentConfig, DiffusionBlocksRecurrentForCausalLM, exist_ok=True)

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
    "MaskedDiffusionLoss",
    "MaskedDiffusionBlocksScheduler",
    "NoisePartition",
    "assign_layers_to_blocks",
    "format_partition_table",
    "push_block_to_hub",
    "push_folder_to_hub",
    "push_root_files_to_hub",
    "write_model_card",
]
