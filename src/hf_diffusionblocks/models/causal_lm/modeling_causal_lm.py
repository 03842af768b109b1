"""DiffusionBlocks autoregressive language model. What differs from the shared machinery: a Llama-style
decoder (RMSNorm, rotary positions, SwiGLU, SDPA) over two streams, the fixed target-embedding table,
and generation through transformers' `GenerationMixin` with a per-token sampler (`sampling_causal_lm.py`).

Each block is a complete small decoder: its own token embedding, noisy-input projection, noise embedder,
`num_layers` AdaLN-Zero layers and vocabulary readout. For token i it reads the clean tokens < i (the
clean stream, causal) and a noisy embedding z_i = E[x_i] + σ·ε (the noisy stream), and predicts x_i (the
paper's AR experiment; Block Diffusion, Arriola et al. 2025, with block size 1: `attention_masks.py`).
The clean stream is conditioned on a learned σ-free vector, so its keys/values are the same at every σ:
generation caches them once per token in a `DynamicCache` (one cache layer per decoder layer of every
block) and runs the Euler steps of the next token's embedding against that cache, one block per step.
A block adds the newly decoded token to its cache in the same call as its first Euler step on the next
token (the two positions side by side under the training mask), so with one step per block a generated
token costs one pass of every layer, as end to end.

`objective="next_token"` (num_blocks = 1) is the end-to-end baseline: the same block without the noisy
stream (no noisy-input projection, no noise embedder); its readout at clean position i predicts x_{i+1}.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForCausalLM, DynamicCache, GenerationMixin
from transformers.cache_utils import Cache
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.utils import ModelOutput

from ...argument_checks import check_values_in_range
from ...modeling.adaln import AdaLNZeroFinalLayer, AdaLNZeroTransformerLayer, rotary_cos_sin
from ...modeling.embeddings import NoiseEmbedder
from ...modeling.generation import check_generate_arguments
from ...modeling.modeling_blocks import DiffusionBlocksPreTrainedModel
from .attention_masks import block_diffusion_attention_mask, cached_clean_attention_mask, fused_position_ids
from .configuration_causal_lm import DiffusionBlocksCausalLMConfig
from .sampling_causal_lm import (
    CausalLMSamplingCache,
    NextTokenQueries,
    check_solver,
    sample_next_token_logits,
    sampling_settings,
)
from .target_embeddings import make_target_embeddings, target_embedding_digest

# Flags transformers may pass to `forward` that change nothing here when off.
_IGNORED_FORWARD_FLAGS = ("output_attentions", "output_hidden_states")


@dataclass
class DiffusionBlocksCausalLMBlockOutput(ModelOutput):
    """
    Args:
        logits (`torch.Tensor` of shape `(batch, seq_len, vocab_size)`): objective `"diffusion"`: logits of
            p(x_i | x_<i, z_i) at every noisy position i; `"next_token"`: logits of p(x_{i+1} | x_≤i).
        denoised (`torch.Tensor` of shape `(batch, seq_len, target_embedding_dim)`, diffusion only): the
            denoised estimate D̂ = softmax(logits)·E in target-embedding space.
        clean_logits (`torch.Tensor` of shape `(batch, seq_len, vocab_size)`, diffusion with
            `output_clean_logits=True` only): the clean stream's readout, logits of p(x_{i+1} | x_≤i).
    """

    logits: torch.Tensor | None = None
    denoised: torch.Tensor | None = None
    clean_logits: torch.Tensor | None = None


class CausalLMBlock(nn.Module):
    """One block: token embedding, [noisy-input projection, noise embedder], `num_layers` layers, readout.

    Its layers own the cache layers `first_layer_index … first_layer_index + num_layers − 1`.
    """

    def __init__(self, config: DiffusionBlocksCausalLMConfig, num_layers: int, first_layer_index: int):
        super().__init__()
        self.first_layer_index = first_layer_index
        self.head_dim, self.rope_theta = config.head_dim, config.rope_theta
        self.token_embedding = nn.Embedding(config.vocab_size, config.hidden_size)
        # The clean stream's AdaLN conditioning: learned and σ-free, so its keys/values can be cached.
        self.clean_conditioning = nn.Parameter(torch.zeros(config.hidden_size))
        if config.objective == "diffusion":
            self.noisy_input = nn.Linear(config.target_embedding_dim, config.hidden_size)
            self.noise_embedder = NoiseEmbedder(config.hidden_size)
        self.layers = nn.ModuleList(
            AdaLNZeroTransformerLayer(
                config.hidden_size, config.num_attention_heads, config.intermediate_size,
                norm_type="rms_norm", mlp_type="swiglu", norm_eps=config.rms_norm_eps,
            )
            for _ in range(num_layers)
        )
        self.final_layer = AdaLNZeroFinalLayer(
            config.hidden_size, config.vocab_size, norm_type="rms_norm", norm_eps=config.rms_norm_eps
        )
        if config.target_embedding_sha256 is not None:
            # a given (not seeded) target table travels in every block file, checked against the config on load
            self.register_buffer("target_embeddings", torch.zeros(config.vocab_size, config.target_embedding_dim))

    def _rotary(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        return rotary_cos_sin(position_ids, self.head_dim, self.rope_theta, dtype)

    def _clean_conditioning(self, dtype: torch.dtype) -> torch.Tensor:
        return self.clean_conditioning.to(dtype)[None, None]                          # (1, 1, hidden)

    def forward_training(
        self, input_ids: torch.Tensor, scaled_noisy: torch.Tensor, c_noise: torch.Tensor, output_clean_logits: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Both streams in one pass under the block-diffusion mask.

        `(batch, n)` clean ids, `(batch, n, d)` c_in·z, `(batch, n)` c_noise → logits `(batch, n, vocab)` at the
        noisy positions, and with `output_clean_logits` the clean stream's next-token logits `(batch, n, vocab)`
        (its readout under the clean conditioning: position i predicts x_{i+1}), else None.
        """
        batch, seq_len = input_ids.shape
        noisy = self.noisy_input(scaled_noisy)                                        # (batch, n, hidden)
        clean = self.token_embedding(input_ids)                                       # (batch, n, hidden)
        hidden_states = torch.cat([noisy, clean], dim=1)                              # (batch, 2n, hidden)
        noise_conditioning = self.noise_embedder(c_noise).to(noisy.dtype)             # (batch, n, hidden)
        conditioning = torch.cat(
            [noise_conditioning, self._clean_conditioning(noisy.dtype).expand(batch, seq_len, -1)], dim=1
        )                                                                             # (batch, 2n, hidden)
        positions = torch.arange(seq_len, device=input_ids.device).repeat(2)[None]    # noisy i shares clean i's position
        rotary = self._rotary(positions, noisy.dtype)
        mask = block_diffusion_attention_mask(seq_len, device=input_ids.device)       # (2n, 2n)
        for layer in self.layers:
            hidden_states = layer(hidden_states, conditioning, attention_mask=mask, position_embeddings=rotary)
        logits = self.final_layer(hidden_states[:, :seq_len], noise_conditioning)
        clean_logits = self.readout_clean(hidden_states[:, seq_len:]) if output_clean_logits else None
        return logits, clean_logits

    def forward_clean(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
    ) -> torch.Tensor:
        """The clean stream: `(batch, n)` ids → last hidden states `(batch, n, hidden)`.

        With a `cache`, each layer appends its keys/values and attends over all cached tokens under
        `attention_mask` `(batch, 1, n, past + n)`; without one, plain causal attention over the n tokens.
        """
        hidden_states = self.token_embedding(input_ids)                               # (batch, n, hidden)
        conditioning = self._clean_conditioning(hidden_states.dtype)
        rotary = self._rotary(position_ids, hidden_states.dtype)
        for offset, layer in enumerate(self.layers):
            hook = None
            if cache is not None:
                layer_index = self.first_layer_index + offset
                hook = lambda key, value, index=layer_index: cache.update(key, value, index)  # noqa: E731
            hidden_states = layer(
                hidden_states, conditioning, attention_mask=attention_mask, position_embeddings=rotary,
                is_causal=attention_mask is None, key_value_hook=hook,
            )
        return hidden_states

    def readout_clean(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Next-token logits `(batch, n, vocab)` from clean-stream states (objective `"next_token"`)."""
        return self.final_layer(hidden_states, self._clean_conditioning(hidden_states.dtype))

    def noise_conditioning(self, c_noise: torch.Tensor) -> torch.Tensor:
        """The noisy stream's AdaLN conditioning: `(...)` c_noise → `(..., hidden)`."""
        return self.noise_embedder(c_noise)

    def forward_noisy(
        self,
        scaled_noisy: torch.Tensor,
        noise_conditioning: torch.Tensor,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        cache: Cache,
        new_input_ids: torch.Tensor | None = None,
        new_position_ids: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Noisy queries against the cached clean stream; nothing noisy is written to the cache.

        `(batch, k, d)` c_in·z, `noise_conditioning(c_noise)` `(batch | 1, k | 1, hidden)`, `(batch, k)` positions
        → logits `(batch, k, vocab)`. Without `new_input_ids` the mask is `(batch, 1, k, past + k)`
        (`noisy_query_attention_mask`). A conditioning shared by the queries (generation: one σ a step)
        conditions every row without being repeated.
        `position_embeddings` (*optional*): the rotary (cos, sin) of the call's positions (`[new tokens,
        queries]`), when the caller computed them once for every block; else computed here.

        With `new_input_ids` `(batch, n)` at `new_position_ids` `(batch, n)` (clean tokens not yet in the
        cache), the same call first runs them through the clean stream: the sequence is `[n clean, k noisy]`,
        each layer appends the clean keys/values to the cache and the noisy queries attend over them, under
        the mask `(batch, 1, n + k, past + n + k)` of `fused_step_attention_mask`. The clean rows never see a
        noisy key, so the cache is what `forward_clean` would have written: one pass of the block's layers
        over n + k positions replaces two (generation's cache extension and Euler step, folded).
        """
        num_noisy = scaled_noisy.shape[1]
        noisy = self.noisy_input(scaled_noisy)                                        # (batch, k, hidden)
        noise_conditioning = noise_conditioning.to(noisy.dtype)                       # (batch | 1, k | 1, hidden)
        hidden_states, conditioning, positions = noisy, noise_conditioning, position_ids
        num_new = 0
        if new_input_ids is not None:
            num_new = new_input_ids.shape[1]
            rows = noise_conditioning.shape[0]
            conditioning = torch.cat([
                self._clean_conditioning(noisy.dtype).expand(rows, num_new, -1),
                noise_conditioning.expand(rows, num_noisy, -1),
            ], dim=1)                                                                 # (batch | 1, n + k, hidden)
            hidden_states = torch.cat([self.token_embedding(new_input_ids), noisy], dim=1)      # (batch, n + k, hidden)
            positions = None if position_embeddings is not None else fused_position_ids(new_position_ids, position_ids)
        rotary = position_embeddings if position_embeddings is not None else self._rotary(positions, noisy.dtype)
        for offset, layer in enumerate(self.layers):
            layer_index = self.first_layer_index + offset

            def clean_keys_then_noisy(key, value, layer_index=layer_index):
                # Append all n + k keys/values (one concatenation, what the queries attend over), then crop
                # the k noisy ones off the cache again: it keeps the clean tokens only.
                keys, values = cache.update(key, value, layer_index)
                cache.layers[layer_index].crop(-num_noisy)
                return keys, values

            hidden_states = layer(
                hidden_states, conditioning, attention_mask=attention_mask, position_embeddings=rotary,
                key_value_hook=clean_keys_then_noisy,
            )
        return self.final_layer(hidden_states[:, num_new:], noise_conditioning)


class DiffusionBlocksForCausalLM(DiffusionBlocksPreTrainedModel, GenerationMixin):
    """Autoregressive LM whose `config.num_blocks` blocks each denoise the next token's embedding on one σ interval.

    `DiffusionBlocksForCausalLM(config, block_indices=[b])` builds block b alone and
    `from_pretrained(path, block_index=b)` loads it alone (training); `generate()` needs every block.
    The fixed target-embedding table is the non-persistent buffer `target_embeddings` `(vocab_size,
    target_embedding_dim)`, rebuilt from the config (`target_embeddings.py`), stored once for all blocks.
    With `config.target_embedding_sha256` set the table is a given one instead: every block holds a copy
    (saved in its block file), loading checks it against the digest, and a model built from a config alone
    needs `set_target_embeddings(table)` before it is used.
    """

    config_class = DiffusionBlocksCausalLMConfig
    auto_model_classes = (AutoModelForCausalLM,)
    main_input_name = "input_ids"
    _no_split_modules = ["CausalLMBlock"]

    def __init__(self, config: DiffusionBlocksCausalLMConfig, block_indices: list[int] | None = None):
        super().__init__(config, block_indices)
        self._target_embeddings_given = config.target_embedding_sha256 is None
        if config.target_embedding_sha256 is None:
            table = make_target_embeddings(
                config.vocab_size, config.target_embedding_dim, config.sigma_data, config.target_embedding_seed
            )
        else:
            table = torch.zeros(config.vocab_size, config.target_embedding_dim)   # set_target_embeddings / loading
        self.register_buffer("target_embeddings", table, persistent=False)

    def set_target_embeddings(self, table: torch.Tensor, source: str = "the given table") -> None:
        """Install a given target table (`config.target_embedding_sha256` set) in the model and every loaded block;
        a `ValueError` naming `source` when its shape or digest is not the config's."""
        digest = self.config.target_embedding_sha256
        if digest is None:
            raise ValueError("this config's target table is the seeded one (target_embedding_sha256=None); it cannot be set.")
        expected = (self.config.vocab_size, self.config.target_embedding_dim)
        if tuple(table.shape) != expected or target_embedding_digest(table) != digest:
            raise ValueError(
                f"the target-embedding table of {source} (shape {tuple(table.shape)}, sha256 "
                f"{target_embedding_digest(table)[:12]}…) is not this config's (shape {expected}, "
                f"target_embedding_sha256 {digest[:12]}…): the blocks were trained on different target spaces."
            )
        with torch.no_grad():
            self.target_embeddings.copy_(table)
            for block in self.blocks.values():
                block.target_embeddings.copy_(table)
        self._target_embeddings_given = True

    def load_block_weights(self, block_index: int, tensors: dict[str, torch.Tensor], source: str = "state dict") -> None:
        super().load_block_weights(block_index, tensors, source)
        if self.config.target_embedding_sha256 is not None:   # the block's copy of the table: checked, then shared
            self.set_target_embeddings(tensors[f"blocks.{block_index}.target_embeddings"], source=f"block {block_index} ({source})")

    def _require_target_embeddings(self) -> None:
        if not self._target_embeddings_given:
            raise ValueError(
                "this model's target-embedding table is a given one (config.target_embedding_sha256) and has not been "
                "set: load the model with from_pretrained, or call set_target_embeddings(table)."
            )

    def build_block(self, block_index: int, num_layers: int) -> CausalLMBlock:
        return CausalLMBlock(self.config, num_layers, first_layer_index=sum(self.layers_per_block[:block_index]))

    # ---- inputs ----------------------------------------------------------------------------
    def _check_input_ids(self, input_ids: Any, past_length: int = 0) -> None:
        config = self.config
        if not isinstance(input_ids, torch.Tensor) or input_ids.ndim != 2 or input_ids.dtype != torch.long:
            shape = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__
            raise ValueError(f"input_ids must be a LongTensor of shape (batch, seq_len), got {shape}.")
        if past_length + input_ids.shape[1] > config.max_position_embeddings:
            raise ValueError(
                f"the sequence ({past_length} cached + {input_ids.shape[1]} new tokens) is longer than the context, "
                f"max_position_embeddings={config.max_position_embeddings}."
            )
        if input_ids.numel() and (input_ids.min() < 0 or input_ids.max() >= config.vocab_size):
            raise ValueError(
                f"input_ids must lie in [0, {config.vocab_size - 1}] (vocab_size={config.vocab_size}), "
                f"got values in [{int(input_ids.min())}, {int(input_ids.max())}]."
            )

    def _require_complete(self, purpose: str) -> None:
        if not self.is_complete:
            raise ValueError(
                f"{purpose} needs all {self.config.num_blocks} blocks, but only blocks {self.loaded_block_indices} are "
                f"loaded; load the model without block_index."
            )

    # ---- training: one block ---------------------------------------------------------------
    def forward_block(
        self,
        block_index: int,
        input_ids: torch.Tensor,
        noisy_embeddings: torch.Tensor | None = None,
        sigma: torch.Tensor | float | None = None,
        output_clean_logits: bool = False,
        return_dict: bool = True,
    ) -> DiffusionBlocksCausalLMBlockOutput | tuple[torch.Tensor, ...]:
        """Run block `block_index` alone over whole sequences (training and evaluation).

        Args:
            block_index (`int`): the block, in `[0, num_blocks)`; block 0 owns the highest noise.
            input_ids (`torch.LongTensor` of shape `(batch, seq_len)`): the clean tokens x.
            noisy_embeddings (`torch.Tensor` of shape `(batch, seq_len, target_embedding_dim)`, diffusion only):
                z_i = E[x_i] + σ_i·ε_i.
            sigma (`float` or `torch.Tensor` of shape `(batch,)` or `(batch, seq_len)`, diffusion only): the
                noise level of every noisy position.
            output_clean_logits (`bool`, defaults to False, diffusion only): also read the clean stream out as a
                next-token predictor (`clean_logits`; the auxiliary loss of `config.clean_loss_weight`).
        Returns:
            `DiffusionBlocksCausalLMBlockOutput` (see there).
        """
        block = self.get_block(block_index)
        self._check_input_ids(input_ids)
        if self.config.objective == "next_token":
            if noisy_embeddings is not None or sigma is not None:
                raise ValueError("objective='next_token' has no noisy stream: pass neither noisy_embeddings nor sigma.")
            position_ids = torch.arange(input_ids.shape[1], device=input_ids.device)[None]
            logits = block.readout_clean(block.forward_clean(input_ids, position_ids))
            return DiffusionBlocksCausalLMBlockOutput(logits=logits) if return_dict else (logits,)
        noisy_embeddings, sigma = self._check_noisy_inputs(input_ids, noisy_embeddings, sigma)
        self._require_target_embeddings()
        preconditioning = self.config.preconditioning
        logits, clean_logits = block.forward_training(
            input_ids, preconditioning.scale_input(noisy_embeddings, sigma).to(self.dtype), preconditioning.c_noise(sigma),
            output_clean_logits,
        )
        denoised = self.denoised_embeddings(logits)
        if return_dict:
            return DiffusionBlocksCausalLMBlockOutput(logits=logits, denoised=denoised, clean_logits=clean_logits)
        return (logits, denoised) + ((clean_logits,) if output_clean_logits else ())

    def _check_noisy_inputs(self, input_ids, noisy_embeddings, sigma) -> tuple[torch.Tensor, torch.Tensor]:
        batch, seq_len = input_ids.shape
        expected = (batch, seq_len, self.config.target_embedding_dim)
        if not isinstance(noisy_embeddings, torch.Tensor) or tuple(noisy_embeddings.shape) != expected:
            got = tuple(noisy_embeddings.shape) if isinstance(noisy_embeddings, torch.Tensor) else noisy_embeddings
            raise ValueError(f"noisy_embeddings must have shape {expected} (batch, seq_len, target_embedding_dim), got {got}.")
        if sigma is None:
            raise ValueError("objective='diffusion' needs sigma, a float or a tensor of shape (batch,) or (batch, seq_len).")
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=input_ids.device)
        if sigma.ndim == 1 and sigma.shape == (batch,):
            sigma = sigma[:, None]
        if sigma.ndim not in (0, 2) or (sigma.ndim == 2 and sigma.shape[1] not in (1, seq_len)):
            raise ValueError(f"sigma must be a float or have shape ({batch},) or ({batch}, {seq_len}), got {tuple(sigma.shape)}.")
        check_values_in_range(sigma, "sigma", minimum=0, minimum_exclusive=True)
        return noisy_embeddings, sigma.expand(batch, seq_len)

    def denoised_embeddings(self, logits: torch.Tensor) -> torch.Tensor:
        """D̂ = softmax(logits)·E: `(..., vocab)` → `(..., target_embedding_dim)` (docs/method.md, 'Discrete targets')."""
        return logits.float().softmax(dim=-1) @ self.target_embeddings.float()

    # ---- inference: all blocks -------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = None,
        labels: torch.Tensor | None = None,
        logits_to_keep: int = 0,
        num_inference_steps: int | None = None,
        generator: torch.Generator | None = None,
        start_from_noise: bool = True,
        solver: str | None = None,
        sampling_cache: CausalLMSamplingCache | None = None,
        return_dict: bool = True,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast | tuple:
        """Logits of the token after each position, for `generate()` (with or without a cache).

        For each of the last `logits_to_keep` positions (0: all), the next token's embedding starts at
        σ_max·ε and `num_inference_steps` Euler steps (default `config.default_num_inference_steps`, one per
        block) integrate the probability-flow ODE, each step on the block the scheduler routes its σ to; the
        logits are those of the last readout. The clean tokens `input_ids` join every block's clean stream
        (appending to `cache`) inside that block's first step (see `sampling_causal_lm.py`). The logits
        concentrate on the token the ODE reached: the sampling randomness is in ε (drawn from `generator`, else torch's global generator), for greedy decoding
        too (the paper's setting). `start_from_noise=False` starts every trajectory at ε = 0 instead; with
        this family's random, non-orthogonal target table that is *not* a mode-seeker (unlike the one-hot
        tables of the ViT and recurrent families): posterior means of uncertain predictions fall near the
        origin and the trajectory ends at the token whose embedding is nearest to it (measured in
        docs/results/causal_lm.md). For
        `objective="next_token"` the logits are the clean stream's readout.

        Args:
            input_ids (`torch.LongTensor` of shape `(batch, n)`): the tokens not yet in `cache`.
            attention_mask (`torch.LongTensor` of shape `(batch, past + n)`, *optional*): 0 for (left) padding.
            position_ids (`torch.LongTensor` of shape `(batch, n)`, *optional*): defaults to the count of real
                tokens before each position.
            cache (`Cache`, *optional*): the clean stream's keys/values of the previous tokens.
            use_cache (`bool`, *optional*): return the (updated) cache; defaults to `cache is not None`.
            labels (`torch.LongTensor` of shape `(batch, n)`, *optional*, `"next_token"` only): next-token
                cross-entropy (−100 ignored) as `loss`, the usual causal-LM convention.
            logits_to_keep (`int`, defaults to 0): compute logits for the last this many positions (0: all).
            num_inference_steps (`int`, *optional*): Euler steps per token, at least `num_blocks` (diffusion only).
            generator (`torch.Generator`, *optional*): source of ε (diffusion only).
            start_from_noise (`bool`, defaults to True): False starts every ODE at ε = 0 (diffusion only).
            solver (`"euler" | "ancestral"`, *optional*): defaults to `config.solver` (diffusion only; see the config).
            sampling_cache (`CausalLMSamplingCache`, *optional*): what the calls of one `generate()` share
                (diffusion only); without it, one is made for this call.
        Returns:
            `CausalLMOutputWithPast` with `logits` `(batch, logits_to_keep or n, vocab_size)` and `cache`.
        """
        self._check_forward_flags(kwargs)
        self._require_complete("inference")
        use_cache = cache is not None if use_cache is None else use_cache
        cache = DynamicCache(config=self.config) if cache is None else cache
        key_padding, position_ids, keep = self._positions(input_ids, attention_mask, position_ids, cache, logits_to_keep)
        seq_len, total_length = input_ids.shape[1], key_padding.shape[1]                  # new; cached + new
        if self.config.objective == "next_token":
            hidden_states = self.blocks["0"].forward_clean(
                input_ids, position_ids, cached_clean_attention_mask(key_padding, seq_len), cache
            )                                                                             # (batch, n, hidden)
            logits = self.blocks["0"].readout_clean(hidden_states[:, seq_len - keep:])
        else:
            steps, solver = sampling_settings(self.config, num_inference_steps, solver)
            self._require_target_embeddings()
            queries = NextTokenQueries(
                key_padding, position_ids[:, seq_len - keep:] + 1,
                torch.arange(total_length - keep, total_length, device=input_ids.device) + 1,   # (keep,) context lengths
                new_input_ids=input_ids, new_position_ids=position_ids,
            )
            logits = sample_next_token_logits(
                self, queries, cache, steps, solver, generator, start_from_noise, sampling_cache
            )                                                                             # (batch, keep, vocab)
        loss = self._next_token_loss(logits, labels, keep, seq_len)
        cache = cache if use_cache else None
        if not return_dict:
            return tuple(value for value in (loss, logits, cache) if value is not None)
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=cache)

    def _positions(
        self, input_ids: Any, attention_mask: torch.Tensor | None, position_ids: torch.Tensor | None, cache: Cache,
        logits_to_keep: Any,
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """`forward`'s inputs checked: the key padding `(batch, cached + n)`, the new tokens' positions
        `(batch, n)` and how many positions get logits."""
        past_length = cache.get_seq_length()
        self._check_input_ids(input_ids, past_length)
        batch, seq_len = input_ids.shape
        key_padding = self._key_padding(attention_mask, batch, past_length + seq_len, input_ids.device)
        if position_ids is None:
            position_ids = (key_padding.long().cumsum(-1) - 1).clamp_min(0)[:, past_length:]
        if not isinstance(logits_to_keep, int) or logits_to_keep < 0:
            raise ValueError(f"logits_to_keep must be an int >= 0, got {logits_to_keep!r}.")
        return key_padding, position_ids, seq_len if logits_to_keep == 0 else min(logits_to_keep, seq_len)

    def _key_padding(self, attention_mask, batch: int, total_length: int, device) -> torch.Tensor:
        if attention_mask is None:
            return torch.ones(batch, total_length, dtype=torch.bool, device=device)
        if attention_mask.ndim != 2 or tuple(attention_mask.shape) != (batch, total_length):
            raise ValueError(
                f"attention_mask must have shape (batch, cached + new tokens) = ({batch}, {total_length}), "
                f"got {tuple(attention_mask.shape)}."
            )
        return attention_mask.to(device).bool()

    def _next_token_loss(self, logits, labels, keep: int, seq_len: int) -> torch.Tensor | None:
        if labels is None:
            return None
        if self.config.objective != "next_token":
            raise ValueError(
                "labels are only supported for objective='next_token': the diffusion model's final-readout logits "
                "are not a likelihood. Train blocks with CausalLMDenoisingLoss (forward_block)."
            )
        if keep != seq_len or labels.shape != logits.shape[:2]:
            raise ValueError(f"labels must have shape {tuple(logits.shape[:2])} and logits_to_keep must be 0.")
        return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)

    @staticmethod
    def _check_forward_flags(kwargs: dict[str, Any]) -> None:
        unknown = sorted(key for key in kwargs if key not in _IGNORED_FORWARD_FLAGS)
        requested = sorted(key for key in _IGNORED_FORWARD_FLAGS if kwargs.get(key))
        if unknown or requested:
            raise ValueError(f"forward got unsupported arguments: {unknown + requested}.")

    # ---- generation ------------------------------------------------------------------------
    def generate(self, inputs: torch.Tensor | None = None, generation_config=None, **kwargs):
        """`GenerationMixin.generate` after checks that raise a `ValueError` naming the bad argument.

        Checked here: every block is loaded; the prompt is a LongTensor of at least one token and, with
        `max_new_tokens`, fits `max_position_embeddings`; `temperature` > 0, `top_k` >= 0, `0 < top_p <= 1`;
        `num_inference_steps` is an integer >= `num_blocks` (every block runs).
        Diffusion-specific keyword arguments: `num_inference_steps` (Euler steps per token), `solver`
        (`"euler"` or `"ancestral"`, default `config.solver`) and `generator` (the ε of every token, and
        the ancestral draws). Greedy decoding takes the argmax of the last readout of a
        trajectory from σ_max·ε, as in the paper. Every token of the call shares one `CausalLMSamplingCache`
        (made here unless `sampling_cache` is given).
        """
        self._require_complete("generate()")
        check_generate_arguments(self, inputs, generation_config, kwargs)
        if kwargs.get("solver") is not None:
            check_solver(kwargs["solver"], self.config.solver)
        if kwargs.get("sampling_cache") is None:
            # every token of this call shares the σ grid and the weights: its per-step quantities are made once
            kwargs["sampling_cache"] = CausalLMSamplingCache()
        return super().generate(inputs, generation_config=generation_config, **kwargs)
