"""Configuration of the DiffusionBlocks autoregressive language model (a Llama-style decoder)."""

from __future__ import annotations

from ...argument_checks import check_integer, check_num_inference_steps, check_number
from ...modeling.configuration_blocks import (
    DiffusionBlocksConfig,
    require_optional_ints,
    require_positive_floats,
    require_positive_ints,
)

OBJECTIVES = ("diffusion", "next_token")
SOLVERS = ("euler", "ancestral")


class DiffusionBlocksCausalLMConfig(DiffusionBlocksConfig):
    """A causal decoder whose layers are split into `num_blocks` blocks that denoise the next token's embedding.

    With `objective="diffusion"` (the paper's AR experiment; the AR detail of Block Diffusion
    with block size 1) block b predicts token i from the clean tokens < i and a noisy embedding
    z = E[token i] + σ·ε with σ in its noise interval. With `objective="next_token"` (requires
    `num_blocks=1`) the same decoder is an ordinary causal LM trained with next-token cross-entropy: the
    end-to-end baseline of `--training_mode end_to_end`. Field names follow transformers' Llama; the
    defaults are the paper's AR setting (12 layers, B = 4, γ = 0.1) at a small width.

    Args:
        vocab_size (`int`, defaults to 1024): number of token ids (`len(tokenizer)`).
        hidden_size (`int`, defaults to 256), num_hidden_layers (`int`, defaults to 12),
        num_attention_heads (`int`, defaults to 4), intermediate_size (`int`, defaults to 688): decoder sizes
            (SwiGLU MLP of width `intermediate_size`).
        max_position_embeddings (`int`, defaults to 256): the context: prompt plus generated tokens.
        rope_theta (`float`, defaults to 10000.0): base of the rotary position embedding.
        rms_norm_eps (`float`, defaults to 1e-6): epsilon of the RMS norms.
        bos_token_id, eos_token_id, pad_token_id (`int`, *optional*): special tokens for `generate()`.
        objective (`"diffusion" | "next_token"`, defaults to `"diffusion"`): what the blocks are trained for
            (see above).
        target_embedding_dim (`int`, defaults to 16): width d of the fixed target-embedding table E.
        target_embedding_seed (`int`, defaults to 0): seed of E; E is rebuilt from (vocab_size,
            target_embedding_dim, sigma_data, seed), never trained, and shared by all blocks.
        target_embedding_sha256 (`str`, *optional*): set when E is a given table instead (e.g.
            `semantic_target_embeddings` of an end-to-end model's readout): every block file then carries the
            table, and loading checks it against this digest (`target_embeddings.py`). None: the seeded table.
        clean_loss_weight (`float`, defaults to 0.0): weight w of an auxiliary next-token loss on every block's
            clean stream (`CausalLMDenoisingLoss`): each block is also trained as a small causal LM, so its
            context features carry the next token even where its noisy input already identifies it. 0: off.
        num_inference_steps (`int`, *optional*): Euler steps per generated token, at least `num_blocks`;
            defaults to `num_blocks` (one step per block, the paper's setting).
        solver (`"euler" | "ancestral"`, defaults to `"ancestral"`): how generation moves a token's embedding
            from one σ to the next: an ancestral step that draws a token from the readout and re-noises its
            embedding to the next σ (`DiffusionBlocksScheduler(solver="ancestral")`; better in every model
            measured, docs/results/causal_lm.md), or the probability-flow ODE's Euler step on D̂ = softmax(logits)·E (the paper).
            `generate(solver=...)` overrides it.
        num_blocks (`int`, defaults to 4), layers_per_block, sigma_min, sigma_max, sigma_data, p_mean, p_std,
        partition, overlap (`float`, defaults to 0.1, the paper's value for text): see `DiffusionBlocksConfig`.
    """

    model_type = "diffusion_blocks_causal_lm"
    inference_only_fields = frozenset({"solver"})

    vocab_size: int = 1024
    hidden_size: int = 256
    num_hidden_layers: int = 12
    num_attention_heads: int = 4
    intermediate_size: int = 688
    max_position_embeddings: int = 256
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None
    objective: str = "diffusion"
    target_embedding_dim: int = 16
    target_embedding_seed: int = 0
    target_embedding_sha256: str | None = None
    clean_loss_weight: float = 0.0
    num_inference_steps: int | None = None
    solver: str = "ancestral"
    num_blocks: int = 4
    overlap: float = 0.1

    def __post_init__(self, **kwargs):
        require_positive_ints(self, ("vocab_size", "hidden_size", "num_attention_heads", "intermediate_size",
                                     "max_position_embeddings", "target_embedding_dim"))
        if self.hidden_size % self.num_attention_heads != 0 or (self.hidden_size // self.num_attention_heads) % 2:
            raise ValueError(
                f"hidden_size={self.hidden_size} must be divisible by num_attention_heads={self.num_attention_heads} "
                f"into an even head dimension (rotary embeddings rotate pairs of channels)."
            )
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {list(OBJECTIVES)}, got {self.objective!r}.")
        check_number(self.clean_loss_weight, "clean_loss_weight", minimum=0)
        digest = self.target_embedding_sha256
        if digest is not None and not (isinstance(digest, str) and len(digest) == 64
                                       and all(character in "0123456789abcdef" for character in digest)):
            raise ValueError(f"target_embedding_sha256 must be None or 64 lowercase hex digits, got {digest!r}.")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {list(SOLVERS)}, got {self.solver!r}.")
        if self.objective == "next_token" and self.num_blocks != 1:
            raise ValueError(
                f"objective='next_token' is the end-to-end baseline and needs num_blocks=1, got num_blocks={self.num_blocks}."
            )
        require_optional_ints(self, ("bos_token_id", "eos_token_id", "pad_token_id"), minimum=0, maximum=self.vocab_size - 1)
        require_positive_floats(self, ("rope_theta", "rms_norm_eps"))
        check_integer(self.target_embedding_seed, "target_embedding_seed", minimum=None)
        super().__post_init__(**kwargs)
        # after the block fields are checked: the steps are compared with num_blocks
        if self.num_inference_steps is not None:
            check_num_inference_steps(self.num_inference_steps, self.num_blocks)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def default_num_inference_steps(self) -> int:
        """Euler steps per generated token: `num_inference_steps`, or one per block."""
        return self.num_inference_steps or self.num_blocks
