from .configuration_recurrent import DiffusionBlocksRecurrentConfig
from .losses_recurrent import (
    RecurrentDenoisingLoss,
    TruncatedBPTTLoss,
    next_token_cross_entropy,
    sample_num_iterations,
)
from .modeling_recurrent import (
    DiffusionBlocksRecurrentBlockOutput,
    DiffusionBlocksRecurrentForCausalLM,
    RecurrentDepthBlock,
)

__all__ = [
    "DiffusionBlocksRecurrentBlockOutput",
    "DiffusionBlocksRecurrentConfig",
    "DiffusionBlocksRecurrentForCausalLM",
    "RecurrentDenoisingLoss",
    "RecurrentDepthBlock",
    "TruncatedBPTTLoss",
    "next_token_cross_entropy",
    "sample_num_iterations",
]
