"""DiffusionBlocks masked diffusion language model. What differs from the shared machinery: token
embeddings and rotary positions, conditioning on the masking time t instead of σ, and vocabulary logits with the
MDLM "SUBS" parameterisation.

Each block is a complete small bidirectional transformer (its own token and time embedders, its layers
with rotary positions, its AdaLN readout) that predicts the clean tokens x₀ from a partially masked x_t whose t
lies in the block's interval. `forward_block` returns logits of p_θ(x₀ | x_t) under the MDLM
substitution parameterisation (Sahoo et al. 2024, Sec. 3.2.3), which MD4 shares:
- zero masking probability: the logit of the mask token is −inf (x₀ is never the mask);
- carry-over unmasking: at an unmasked position the output is the input token with probability 1
  (logit 0 there, −inf elsewhere). The masked-diffusion NELBO then only has terms at masked positions
  (`MaskedDiffusionLoss`), and the ancestral sampler keeps revealed tokens
  (`MaskedDiffusionBlocksScheduler.step`): loss, evaluation and sampler use the same model.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoModel, AutoModelForMaskedLM
from transformers.modeling_outputs import MaskedLMOutput

from ...argument_checks import check_values_in_range
from ...modeling.adaln import AdaLNZeroFinalLayer, AdaLNZeroTransformerLayer
from ...modeling.block_container import run_by_owning_block
from ...modeling.embeddings import NoiseEmbedder
from ...modeling.modeling_blocks import DiffusionBlocksPreTrainedModel, per_sample_level
from ...schedulers.scheduling_masked_diffusion_blocks import MaskedDiffusionBlocksScheduler
from ...modeling.adaln import rotary_cos_sin
from .configuration_masked_lm import DiffusionBlocksMaskedLMConfig


class MaskedLMBlock(nn.Module):
    """One DiffusionBlocks block: token and time embedders, `num_layers` AdaLN-Zero layers with rotary positions, a readout."""

    def __init__(self, config: DiffusionBlocksMaskedLMConfig, num_layers: int):
        super().__init__()
        self.token_embedding = nn.Embedding(config.vocab_size, config.hidden_size)
        # Positions enter through rotary embeddings (RoFormer; MDLM's DiT backbone uses them too): each
        # attention sees relative offsets from the first step, which character-level locality needs. With
        # learned absolute embeddings (std 0.02) the models stayed at the unigram loss for thousands of steps.
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.rope_theta = config.rope_theta
        # The time embedder receives t ∈ [0, 1] itself; NoiseEmbedder scales it by 1000 before the
        # sinusoid, i.e. DiT's integer-timestep range 0…1000, so its frequencies resolve t finely.
        self.time_embedder = NoiseEmbedder(config.hidden_size)
        self.layers = nn.ModuleList(
            AdaLNZeroTransformerLayer(
                config.hidden_size, config.num_attention_heads, config.intermediate_size, norm_eps=config.layer_norm_eps
            )
            for _ in range(num_layers)
        )
        self.final_layer = AdaLNZeroFinalLayer(config.hidden_size, config.vocab_size, norm_eps=config.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """`(batch, seq)` ids, `(batch,)` masking times → raw logits `(batch, seq, vocab_size)`."""
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)[None]           # (1, seq)
        hidden_states = self.token_embedding(input_ids)                                        # (batch, seq, hidden)
        rotary = rotary_cos_sin(positions, self.head_dim, self.rope_theta, hidden_states.dtype)  # 2 × (1, seq, head_dim)
        conditioning = self.time_embedder(t)                                                   # (batch, hidden)
        for layer in self.layers:
            # bidirectional: no attention mask
            hidden_states = layer(hidden_states, conditioning, position_embeddings=rotary)
        return self.final_layer(hidden_states, conditioning)


def substitution_parameterization(logits: torch.Tensor, input_ids: torch.Tensor, mask_token_id: int) -> torch.Tensor:
    """MDLM's SUBS: −inf for the mask token; unmasked positions carry their input token over.

    Args:
        logits (`torch.Tensor` of shape `(batch, seq, vocab)`): raw logits.
        input_ids (`torch.LongTensor` of shape `(batch, seq)`): the partially masked x_t.
    Returns:
        `(batch, seq, vocab)` logits whose softmax is p_θ(x₀ | x_t).
    """
    logits = logits.clone()
    logits[..., mask_token_id] = -float("inf")
    unmasked = input_ids != mask_token_id                                          # (batch, seq)
    carried = torch.full_like(logits, -float("inf")).scatter(-1, input_ids.unsqueeze(-1), 0.0)
    return torch.where(unmasked.unsqueeze(-1), carried, logits)


class DiffusionBlocksForMaskedLM(DiffusionBlocksPreTrainedModel):
    """Masked diffusion language model trained as `config.num_blocks` independent blocks.

    `DiffusionBlocksForMaskedLM(config, block_indices=[b])` builds block b alone;
    `from_pretrained(path, block_index=b)` loads it alone. `forward` routes each sequence to the block
    that owns its t; `forward_block` runs one block whatever t is (evaluation and training call it
    with t inside the block's interval).
    """

    config_class = DiffusionBlocksMaskedLMConfig
    auto_model_classes = (AutoModelForMaskedLM, AutoModel)
    main_input_name = "input_ids"
    _no_split_modules = ["MaskedLMBlock"]

    def build_block(self, block_index: int, num_layers: int) -> MaskedLMBlock:
        return MaskedLMBlock(self.config, num_layers)

    def build_scheduler(self) -> MaskedDiffusionBlocksScheduler:
        """The `MaskedDiffusionBlocksScheduler` with the partition these blocks were trained on."""
        return self.config.build_scheduler()

    def _check_inputs(self, input_ids: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        config = self.config
        if not isinstance(input_ids, torch.Tensor) or input_ids.ndim != 2 or input_ids.dtype != torch.long:
            shape = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__
            raise ValueError(f"input_ids must be a LongTensor of shape (batch, seq_len), got {shape}.")
        batch, seq_len = input_ids.shape
        if seq_len > config.max_position_embeddings:
            raise ValueError(
                f"input_ids has seq_len={seq_len}, longer than max_position_embeddings={config.max_position_embeddings}."
            )
        if input_ids.numel() and (input_ids.min() < 0 or input_ids.max() >= config.vocab_size):
            raise ValueError(
                f"input_ids must lie in [0, {config.vocab_size - 1}] (vocab_size={config.vocab_size}), "
                f"got values in [{int(input_ids.min())}, {int(input_ids.max())}]."
            )
        t = per_sample_level(t, batch, "t", input_ids.device)
        check_values_in_range(t, "t", 0, 1)
        return t

    def forward_block(
        self,
        block_index: int,
        input_ids: torch.Tensor,
        t: torch.Tensor | float,
        return_dict: bool = True,
    ) -> MaskedLMOutput | tuple[torch.Tensor]:
        """Predict x₀ with block `block_index` alone.

        Args:
            block_index (`int`): the block, in `[0, num_blocks)`; block 0 owns the noisiest times.
            input_ids (`torch.LongTensor` of shape `(batch, seq_len)`): x_t, masked positions holding
                `config.mask_token_id`; `seq_len <= max_position_embeddings`.
            t (`float` or `torch.Tensor` of shape `(batch,)`): masking times in [0, 1].
        Returns:
            `MaskedLMOutput` with `logits` `(batch, seq_len, vocab_size)` of p_θ(x₀ | x_t) (SUBS: the mask
            token's logit is −inf; unmasked positions carry their token over).
        """
        block = self.get_block(block_index)
        t = self._check_inputs(input_ids, t)
        logits = block(input_ids, t)
        logits = substitution_parameterization(logits, input_ids, self.config.mask_token_id)
        return MaskedLMOutput(logits=logits) if return_dict else (logits,)

    def forward(
        self,
        input_ids: torch.Tensor,
        t: torch.Tensor | float,
        return_dict: bool = True,
    ) -> MaskedLMOutput | tuple[torch.Tensor]:
        """The assembled denoiser: every sequence goes to the block that owns its t (inference routing)."""
        t = self._check_inputs(input_ids, t)
        owners = self.build_scheduler().block_index_for_level(t.detach().double().cpu()).to(input_ids.device)
        logits = run_by_owning_block(
            owners,
            lambda block_index, indices: self.forward_block(
                block_index, *((input_ids, t) if indices is None else (input_ids[indices], t[indices]))
            ).logits,
        )
        if logits is None:  # an empty batch
            logits = torch.empty((*input_ids.shape, self.config.vocab_size), device=input_ids.device)
        return MaskedLMOutput(logits=logits) if return_dict else (logits,)
