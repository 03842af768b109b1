"""What the language-model families share around transformers' `generate()`."""

from __future__ import annotations

import copy
from typing import Any

from transformers import GenerationConfig


def effective_generation_config(model, generation_config: GenerationConfig | None, kwargs: dict[str, Any]) -> GenerationConfig:
    """The generation config `generate()` will use: `generation_config` (or the model's) updated with `kwargs`."""
    config = copy.deepcopy(generation_config if generation_config is not None else model.generation_config)
    config.update(**{key: value for key, value in kwargs.items() if hasattr(config, key)})
    return config
