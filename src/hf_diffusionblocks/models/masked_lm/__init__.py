from .configuration_masked_lm import DiffusionBlocksMaskedLMConfig
from .losses_masked_lm import MaskedDiffusionLoss, masked_negative_log_likelihood, stratified_times
from .modeling_masked_lm import DiffusionBlocksForMaskedLM, MaskedLMBlock, substitution_parameterization

__all__ = [
    "DiffusionBlocksForMaskedLM",
    "DiffusionBlocksMaskedLMConfig",
    "MaskedDiffusionLoss",
    "MaskedLMBlock",
    "masked_negative_log_likelihood",
    "stratified_times",
    "substitution_parameterization",
]
