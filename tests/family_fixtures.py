"""Tiny configs of every family (CPU tests in milliseconds) and the pipeline components a model cannot
make itself: test fixtures, kept beside the tests rather than in the library's registry."""

from __future__ import annotations

from typing import Any

from hf_diffusionblocks import CharacterTokenizer
from hf_diffusionblocks.families import ModelFamily
from hf_diffusionblocks.modeling.configuration_blocks import BlockPartitionedConfig

TINY_CONFIG_KWARGS: dict[str, dict[str, Any]] = {
    "dit": dict(
        image_size=8, patch_size=2, num_channels=1, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
        intermediate_size=64, num_labels=4, num_blocks=3,
    ),
    # vocabulary_type="text8" tokenizers have 27 characters and [MASK]: 28 ids
    "mdm": dict(
        vocab_size=28, hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=16, num_blocks=3,
    ),
    "ar": dict(
        vocab_size=40, hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=48,
        max_position_embeddings=24, num_blocks=4, eos_token_id=1, pad_token_id=0,
    ),
    "vit": dict(
        image_size=8, patch_size=2, num_channels=1, num_labels=10, hidden_size=32, num_hidden_layers=3,
        num_attention_heads=2, intermediate_size=64, num_blocks=3,
    ),
    "recurrent": dict(
        vocab_size=12, hidden_size=32, num_hidden_layers=2, num_prelude_layers=1, num_coda_layers=1,
        num_attention_heads=2, intermediate_size=64, max_position_embeddings=16, num_blocks=2,
    ),
}


def tiny_config(family: ModelFamily, **overrides: Any) -> BlockPartitionedConfig:
    """A config of `family` small enough for CPU tests (`overrides` change fields)."""
    return family.config_class(**{**TINY_CONFIG_KWARGS[family.name], **overrides})


def tiny_pipeline_components(family: ModelFamily) -> dict[str, Any]:
    """The components of `family`'s pipeline its `pipeline_components` cannot make from the model (a tokenizer)
    that fit `tiny_config(family)`."""
    return {"tokenizer": CharacterTokenizer(vocabulary_type="text8")} if family.name == "mdm" else {}
