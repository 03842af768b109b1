"""Configuration of the DiffusionBlocks recurrent-depth language model (Huginn-style prelude / core / coda)."""

from __future__ import annotations

from ...argument_checks import check_integer
from ...modeling.configuration_blocks import DiffusionBlocksConfig, require_positive_floats, require_positive_ints


class DiffusionBlocksRecurrentConfig(DiffusionBlocksConfig):
    """A recurrent-depth causal LM whose recurrent core is a σ-conditioned denoiser of the next-token embedding.

    What `num_blocks` means here. The paper's recurrent-depth model (Huginn; Geiping et al. 2025) has
    ONE recurrent core applied at every noise level: `num_blocks=1` (the default) is that model, one
    independently trained weight set holding prelude, core and coda; its noise range is not split, and
    the number of core iterations K — the model's depth at inference — is chosen per call (`forward` /
    `generate`), K Euler steps on the σ grid. K steps of one weight-tied core on the equi-probable grid
    are the same computation as K weight-tied DiffusionBlocks blocks of one step each, which is how the
    paper relates the two. As in every family, `num_blocks = B > 1` splits the noise range into B
    intervals, each owned by its own prelude / core / coda with `num_hidden_layers / B` core layers,
    still iterated over the steps that fall in its interval.

    Args:
        vocab_size (`int`, defaults to 128): number of token ids (`len(tokenizer)`).
        hidden_size (`int`, defaults to 256), num_attention_heads (`int`, defaults to 4),
        intermediate_size (`int`, defaults to 1024): transformer sizes.
        num_hidden_layers (`int`, defaults to 4): layers of the recurrent core, over all blocks
            (Huginn: a 4-layer recurrent block).
        num_prelude_layers (`int`, defaults to 2), num_coda_layers (`int`, defaults to 2): layers of the
            prelude (tokens → embedded input e, run once per sequence) and of the coda (core output →
            logits, run at every iteration) of each block (Huginn: 2 and 2).
        max_position_embeddings (`int`, defaults to 256): longest sequence (learned positions).
        target_embedding_dim (`int`, *optional*): dimension d of the next-token target space in which the
            recurrent state z lives; defaults to `vocab_size`. The table is fixed, `σ_data·√d·[I | 0]`
            (see `modeling/class_target_embeddings.py`).
        num_iterations (`int`, defaults to 8): K used when a call does not choose it.
        layer_norm_eps (`float`, defaults to 1e-6).
        p_mean (`float`, defaults to 1.0): mean of ln σ of the training noise, raised from EDM's -1.2.
            The model's predictive distribution is its readout at σ_max (z carries no information; see
            `modeling_recurrent.py`), and with the σ_data-scaled one-hot table (≈6.6 apart for 86
            characters) z names the next character once σ ≲ 3; EDM's p_noise puts 2% of its mass above
            σ = 3, so the core would rarely practise language modelling. The held-out loss with both
            values is in docs/results/recurrent.md.
        num_blocks, layers_per_block, sigma_min, sigma_max, sigma_data, p_std, partition,
        overlap: see `DiffusionBlocksConfig`.
    """

    model_type = "diffusion_blocks_recurrent"

    vocab_size: int = 128
    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_prelude_layers: int = 2
    num_coda_layers: int = 2
    num_attention_heads: int = 4
    intermediate_size: int = 1024
    max_position_embeddings: int = 256
    target_embedding_dim: int | None = None
    num_iterations: int = 8
    num_blocks: int = 1
    layer_norm_eps: float = 1e-6
    p_mean: float = 1.0

    def __post_init__(self, **kwargs):
        require_positive_ints(self, ("vocab_size", "hidden_size", "num_attention_heads", "intermediate_size",
                                     "max_position_embeddings", "num_iterations"))
        require_positive_floats(self, ("layer_norm_eps",))
        for name in ("num_prelude_layers", "num_coda_layers"):
            check_integer(getattr(self, name), name, minimum=0)
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size={self.hidden_size} must be divisible by num_attention_heads={self.num_attention_heads}."
            )
        if self.target_embedding_dim is None:
            self.target_embedding_dim = self.vocab_size
        if not isinstance(self.target_embedding_dim, int) or self.target_embedding_dim < self.vocab_size:
            raise ValueError(
                f"target_embedding_dim must be an integer >= vocab_size={self.vocab_size}, got {self.target_embedding_dim!r}."
            )
        super().__post_init__(**kwargs)
