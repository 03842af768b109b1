"""What the language-model families share around transformers' `generate()`: the effective generation
config, and the argument checks (a `ValueError` naming the field and its accepted values)."""

from __future__ import annotations

import copy
from typing import Any

import torch
from transformers import GenerationConfig

from ..argument_checks import check_integer, check_num_inference_steps, check_number


def effective_generation_config(model, generation_config: GenerationConfig | None, kwargs: dict[str, Any]) -> GenerationConfig:
    """The generation config `generate()` will use: `generation_config` (or the model's) updated with `kwargs`."""
    config = copy.deepcopy(generation_config if generation_config is not None else model.generation_config)
    config.update(**{key: value for key, value in kwargs.items() if hasattr(config, key)})
    return config


def check_prompt(prompt: Any, context: int, max_new_tokens: int | None) -> None:
    """The prompt must be a `(batch, prompt_length)` LongTensor of at least one token that, with the new
    tokens, fits the context of `context` tokens."""
    if prompt is None:  # generate() starts from bos_token_id
        return
    if not isinstance(prompt, torch.Tensor) or prompt.ndim != 2 or prompt.dtype != torch.long:
        got = f"a {prompt.dtype} tensor of shape {tuple(prompt.shape)}" if isinstance(prompt, torch.Tensor) else type(prompt).__name__
        raise ValueError(f"input_ids (the prompt) must be a LongTensor of shape (batch, prompt_length), got {got}.")
    if prompt.shape[1] == 0:
        raise ValueError(
            "input_ids (the prompt) must hold at least one token per sequence (a model predicts the next token from "
            f"the ones before it), got shape {tuple(prompt.shape)}; start from bos_token_id or pass input_ids=None."
        )
    if prompt.shape[1] >= context:
        raise ValueError(
            f"the prompt has {prompt.shape[1]} tokens; with the generated tokens it must fit the context of "
            f"max_position_embeddings={context} tokens (at most {context - 1} prompt tokens)."
        )
    if max_new_tokens is not None and prompt.shape[1] + max_new_tokens > context:
        raise ValueError(
            f"prompt length {prompt.shape[1]} + max_new_tokens={max_new_tokens} exceeds "
            f"max_position_embeddings={context}; lower max_new_tokens to at most {context - prompt.shape[1]}."
        )


def check_generate_arguments(
    model, inputs: torch.Tensor | None, generation_config: GenerationConfig | None, kwargs: dict[str, Any]
) -> None:
    """Raise for a prompt that is empty, not token ids or too long for the context, and for invalid
    sampling arguments (`max_new_tokens`, `temperature`, `top_p`, `top_k`, `num_inference_steps`)."""
    config = effective_generation_config(model, generation_config, kwargs)
    check_integer(config.max_new_tokens, "max_new_tokens", minimum=1, allow_none=True)
    check_prompt(inputs if inputs is not None else kwargs.get("input_ids"), model.config.max_position_embeddings,
                 config.max_new_tokens)
    if config.temperature is not None:
        check_number(config.temperature, "temperature", minimum=0, minimum_exclusive=True,
                     hint=" (use do_sample=False for greedy decoding)")
    if config.top_p is not None:
        check_number(config.top_p, "top_p", minimum=0, maximum=1, minimum_exclusive=True)
    if config.top_k is not None:
        check_integer(config.top_k, "top_k", minimum=0)  # 0 disables it
    steps = kwargs.get("num_inference_steps")
    if steps is not None:
        check_num_inference_steps(steps, model.config.num_blocks)
