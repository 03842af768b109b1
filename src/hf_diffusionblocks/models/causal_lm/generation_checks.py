"""Argument checks of `DiffusionBlocksForCausalLM.generate`: a `ValueError` naming the field and its accepted values."""

from __future__ import annotations

from typing import Any

import torch
from transformers import GenerationConfig

from ...modeling.generation import effective_generation_config


def check_generate_arguments(
    model, inputs: torch.Tensor | None, generation_config: GenerationConfig | None, kwargs: dict[str, Any]
) -> None:
    """Raise for a prompt that does not fit the context and for invalid sampling arguments."""
    config = effective_generation_config(model, generation_config, kwargs)
    prompt = inputs if inputs is not None else kwargs.get("input_ids")
    context = model.config.max_position_embeddings
    if isinstance(prompt, torch.Tensor) and prompt.ndim == 2:
        if prompt.shape[1] >= context:
            raise ValueError(
                f"the prompt has {prompt.shape[1]} tokens; with the generated tokens it must fit the context of "
                f"max_position_embeddings={context} tokens (at most {context - 1} prompt tokens)."
            )
        if config.max_new_tokens is not None and prompt.shape[1] + config.max_new_tokens > context:
            raise ValueError(
                f"prompt length {prompt.shape[1]} + max_new_tokens={config.max_new_tokens} exceeds "
                f"max_position_embeddings={context}; lower max_new_tokens to at most {context - prompt.shape[1]}."
            )
    if config.max_new_tokens is not None and (not isinstance(config.max_new_tokens, int) or config.max_new_tokens < 1):
        raise ValueError(f"max_new_tokens must be an integer >= 1, got {config.max_new_tokens!r}.")
    if config.temperature is not None and not config.temperature > 0:
        raise ValueError(f"temperature must be > 0 (use do_sample=False for greedy decoding), got {config.temperature}.")
    if config.top_p is not None and not 0 < config.top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {config.top_p}.")
    if config.top_k is not None and (not isinstance(config.top_k, int) or isinstance(config.top_k, bool) or config.top_k < 0):
        raise ValueError(f"top_k must be an integer >= 0 (0 disables it), got {config.top_k!r}.")
    steps = kwargs.get("num_inference_steps")
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 1):
        raise ValueError(f"num_inference_steps must be an integer >= 1, got {steps!r}.")
