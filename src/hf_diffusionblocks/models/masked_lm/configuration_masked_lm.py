"""Configuration of the DiffusionBlocks masked diffusion language model (MDM)."""

from __future__ import annotations

from ...argument_checks import check_integer
from ...modeling.configuration_blocks import BlockPartitionedConfig, require_positive_floats, require_positive_ints
from ...schedulers.scheduling_masked_diffusion_blocks import SCHEDULES, MaskedDiffusionBlocksScheduler


class DiffusionBlocksMaskedLMConfig(BlockPartitionedConfig):
    """A bidirectional transformer whose layers are split into `num_blocks` masked-diffusion blocks.

    Block b owns the masking times `[block_times[b+1], block_times[b]]` of
    `MaskedDiffusionBlocksScheduler(num_blocks, masking_schedule)`: equal decrements of α(t), block 0
    the noisiest (t near 1). `num_blocks=1` is the ordinary end-to-end MDM (MD4 / MDLM). Field names
    follow transformers' BERT. Defaults are the paper's text8 MDM (12 layers, B = 3) at a small width.

    Args:
        vocab_size (`int`, defaults to 28): number of token ids, the mask token included
            (text8: 27 characters + `[MASK]`); `len(tokenizer)`.
        hidden_size (`int`, defaults to 256), num_hidden_layers (`int`, defaults to 12),
        num_attention_heads (`int`, defaults to 4), intermediate_size (`int`, defaults to 1024): transformer sizes.
        max_position_embeddings (`int`, defaults to 256): longest sequence.
        rope_theta (`float`, defaults to 10000.0): base of the rotary position embedding of every block.
        mask_token_id (`int`, *optional*): id of the mask token; defaults to `vocab_size - 1` (where
            `CharacterTokenizer` puts `[MASK]`).
        masking_schedule (`"linear" | "cosine"`, defaults to `"linear"`): α(t) = 1 − t, or 1 − cos(π/2·(1 − t)).
        layer_norm_eps (`float`, defaults to 1e-6).
        num_blocks (`int`, defaults to 3), layers_per_block (`list[int]`, *optional*): see `BlockPartitionedConfig`.
    """

    model_type = "diffusion_blocks_masked_lm"

    vocab_size: int = 28
    hidden_size: int = 256
    num_hidden_layers: int = 12
    num_attention_heads: int = 4
    intermediate_size: int = 1024
    max_position_embeddings: int = 256
    rope_theta: float = 10000.0
    mask_token_id: int | None = None
    masking_schedule: str = "linear"
    layer_norm_eps: float = 1e-6

    def __post_init__(self, **kwargs):
        require_positive_ints(self, ("vocab_size", "hidden_size", "num_attention_heads", "intermediate_size",
                                     "max_position_embeddings"))
        if self.vocab_size < 2:
            raise ValueError(f"vocab_size must be >= 2 (at least one token and the mask token), got {self.vocab_size}.")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size={self.hidden_size} must be divisible by num_attention_heads={self.num_attention_heads}."
            )
        require_positive_floats(self, ("rope_theta", "layer_norm_eps"))
        if (self.hidden_size // self.num_attention_heads) % 2:
            raise ValueError(
                f"hidden_size / num_attention_heads = {self.hidden_size // self.num_attention_heads} must be even "
                f"(rotary embeddings rotate pairs of features)."
            )
        if self.mask_token_id is None:
            self.mask_token_id = self.vocab_size - 1
        check_integer(self.mask_token_id, "mask_token_id", minimum=0, maximum=self.vocab_size - 1)
        if self.masking_schedule not in SCHEDULES:
            raise ValueError(f"masking_schedule must be one of {list(SCHEDULES)}, got {self.masking_schedule!r}.")
        super().__post_init__(**kwargs)

    def scheduler_kwargs(self) -> dict:
        """The arguments of the `MaskedDiffusionBlocksScheduler` whose partition these blocks were trained on."""
        return {"num_blocks": self.num_blocks, "schedule": self.masking_schedule}

    def build_scheduler(self) -> MaskedDiffusionBlocksScheduler:
        """The matching scheduler: masking schedule, block partition in time, ancestral unmasking."""
        return MaskedDiffusionBlocksScheduler(**self.scheduler_kwargs())
