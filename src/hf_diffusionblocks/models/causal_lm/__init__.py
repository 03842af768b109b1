from .attention_masks import block_diffusion_attention_mask
from .configuration_causal_lm import OBJECTIVES, DiffusionBlocksCausalLMConfig
from .losses_causal_lm import CausalLMDenoisingLoss
from .modeling_causal_lm import CausalLMBlock, DiffusionBlocksCausalLMBlockOutput, DiffusionBlocksForCausalLM
from .sampling_causal_lm import CausalLMSamplingCache
from .target_embeddings import (
    make_target_embeddings,
    posterior_entropy,
    semantic_target_embeddings,
    target_embedding_digest,
)

__all__ = [
    "OBJECTIVES",
    "CausalLMBlock",
    "CausalLMDenoisingLoss",
    "CausalLMSamplingCache",
    "DiffusionBlocksCausalLMBlockOutput",
    "DiffusionBlocksCausalLMConfig",
    "DiffusionBlocksForCausalLM",
    "block_diffusion_attention_mask",
    "make_target_embeddings",
    "posterior_entropy",
    "semantic_target_embeddings",
    "target_embedding_digest",
]
