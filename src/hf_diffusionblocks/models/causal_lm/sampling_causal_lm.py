"""Generation's sampler of the causal LM: the next token's embedding integrated from σ_max·ε over the
scheduler's grid on the shared block-routed loop (`modeling/routed_sampling.py`), each step on the block
that owns its σ, against the clean stream's key/value cache.

What one evaluation of the loop computes here (`NextTokenDenoiser`):
- the block's noisy pass of the k queries against its cached clean stream. A block appends the clean
  tokens new to the cache in the same call as its first step (`CausalLMBlock.forward_noisy`), so with one
  step per block every layer runs once per generated token, as in the end-to-end model; a block that no
  step visits (fewer steps than blocks) appends them alone after the loop.
- the clean estimate handed to the scheduler: Euler takes D̂ = softmax(logits)·E; ancestral takes E[y] of
  a token y drawn from the readout (Gumbel-max on noise from `generator`).
The result is the last readout's logits: the loop stops before the step to σ = 0 (`final_step=False`),
whose state is never used and whose ancestral token draw would move the generator, changing every later
token of a seeded generation.

What depends on σ alone (c_in and each block's noise conditioning, per step of the grid) is computed once
per `generate()` call and kept in a `CausalLMSamplingCache` that `forward` receives explicitly, as it
receives the key/value cache.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn
from transformers.cache_utils import Cache

from ...argument_checks import check_num_inference_steps
from ...modeling.adaln import rotary_cos_sin
from ...modeling.routed_sampling import integrate_routed_ode
from ...schedulers.scheduling_diffusion_blocks import DiffusionBlocksScheduler
from .attention_masks import (
    cached_clean_attention_mask,
    fused_position_ids,
    fused_step_attention_mask,
    noisy_query_attention_mask,
)
from .configuration_causal_lm import SOLVERS, DiffusionBlocksCausalLMConfig


class SampledCausalLM(Protocol):
    """What the sampler reads of a `DiffusionBlocksForCausalLM` (written as a Protocol: the model's module
    imports this one)."""

    config: DiffusionBlocksCausalLMConfig
    blocks: nn.ModuleDict
    target_embeddings: torch.Tensor                                         # (vocab, target_embedding_dim)

    @property
    def dtype(self) -> torch.dtype: ...

    def denoised_embeddings(self, logits: torch.Tensor) -> torch.Tensor: ...


def sampling_settings(
    config: DiffusionBlocksCausalLMConfig, num_inference_steps: int | None, solver: str | None
) -> tuple[int, str]:
    """`forward`'s `num_inference_steps` and `solver`, the config's defaults for None; a `ValueError` naming
    the argument for a step count that is not an integer >= `num_blocks`, or an unknown solver."""
    steps = config.default_num_inference_steps
    if num_inference_steps is not None:  # `or` would take 0 for the default
        steps = check_num_inference_steps(num_inference_steps, config.num_blocks)
    return steps, check_solver(solver, config.solver)


def check_solver(solver: str | None, default: str) -> str:
    """`solver`, or `default` (the config's) when None; a `ValueError` naming `solver` when it is not one of `SOLVERS`."""
    solver = default if solver is None else solver
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {list(SOLVERS)}, got {solver!r}.")
    return solver


def sample_from_logits(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row of `(..., vocab)` logits, drawn from softmax(logits) by Gumbel-max; the uniforms come
    from `generator` on its own device (torch's global generator when None), so CPU and GPU draw alike."""
    device = generator.device if generator is not None else logits.device
    uniform = torch.rand(logits.shape, generator=generator, device=device).to(logits.device)   # (..., vocab)
    gumbel = -(-uniform.clamp_min(1e-20).log()).log()
    return (logits.float() + gumbel).argmax(-1)                                                 # (...)


@dataclass(frozen=True)
class SamplingStep:
    """One step of the grid: its σ (0-dim), the block that runs it, c_in(σ) and the block's noise
    conditioning `(1, 1, hidden)`, all shared by every query and every generated token."""

    sigma: torch.Tensor
    block_index: int
    c_in: torch.Tensor
    noise_conditioning: torch.Tensor


@dataclass
class CausalLMSamplingCache:
    """What the tokens of one `generate()` call share, passed to `forward` as `sampling_cache`: the scheduler
    built from the config (its copies share the memoised σ grids) and the `SamplingStep`s of each grid.

    Valid while the weights and the partition stay as they are: `generate()` makes a fresh one per call, and
    `forward` without one makes one for that call alone. Only the scheduler's step counter is per call (each
    call steps a copy).
    """

    scheduler_kwargs: dict[str, Any] | None = None
    scheduler: DiffusionBlocksScheduler | None = None
    steps: dict[tuple, list[SamplingStep]] = field(default_factory=dict)

    def scheduler_for(self, scheduler_kwargs: dict[str, Any]) -> DiffusionBlocksScheduler:
        """A copy of the scheduler of `scheduler_kwargs`, built on the first call (and when they change)."""
        if self.scheduler is None or self.scheduler_kwargs != scheduler_kwargs:
            self.scheduler_kwargs, self.scheduler = scheduler_kwargs, DiffusionBlocksScheduler(**scheduler_kwargs)
            self.steps.clear()                               # another partition is another grid
        return copy.copy(self.scheduler)

    def steps_for(self, model: SampledCausalLM, scheduler: DiffusionBlocksScheduler, dtype: torch.dtype) -> list[SamplingStep]:
        """The `SamplingStep`s of `scheduler`'s grid (after `set_timesteps`) for `model`, built once per grid."""
        key = (scheduler.num_inference_steps, str(scheduler.timesteps.device), dtype)
        if key not in self.steps:
            preconditioning = model.config.preconditioning
            self.steps[key] = [
                SamplingStep(
                    sigma=sigma, block_index=block_index,
                    c_in=preconditioning.c_in(torch.as_tensor(sigma, dtype=dtype)),
                    noise_conditioning=model.blocks[str(block_index)].noise_conditioning(
                        preconditioning.c_noise(sigma).reshape(1, 1)                  # the batch shares σ
                    ),                                                                # (1, 1, hidden)
                )
                for sigma, block_index in zip(scheduler.timesteps, scheduler.block_indices.tolist())
            ]
        return self.steps[key]


@dataclass(frozen=True)
class NextTokenQueries:
    """The k next-token embeddings to sample and the clean tokens new to the cache.

    Args:
        key_padding (`torch.BoolTensor` `(batch, num_cached + n)`): True for real clean tokens, new ones included.
        position_ids (`torch.LongTensor` `(batch, k)`): position of each predicted token.
        context_lengths (`torch.LongTensor` `(k,)`): query q sees the clean tokens `< context_lengths[q]`.
        new_input_ids, new_position_ids (`torch.LongTensor` `(batch, n)`, *optional*): the clean tokens to
            add to the cache (the last n of `key_padding`) and their positions.
    """

    key_padding: torch.Tensor
    position_ids: torch.Tensor
    context_lengths: torch.Tensor
    new_input_ids: torch.Tensor | None = None
    new_position_ids: torch.Tensor | None = None


class NextTokenDenoiser:
    """One evaluation of the routed loop on the causal LM, `(block_index, sigma, sample, index) → (clean
    estimate, logits (batch, k, vocab))`; the clean estimate is None at the last evaluation (no step follows).

    Per call, not per model: it tracks which blocks still have the new clean tokens to append.
    """

    def __init__(self, model: SampledCausalLM, queries: NextTokenQueries, cache: Cache, steps: list[SamplingStep], solver: str,
                 generator: torch.Generator | None):
        self.model, self.queries, self.cache, self.steps = model, queries, cache, steps
        self.solver, self.generator = solver, generator
        has_new = queries.new_input_ids is not None
        self.blocks_to_extend = set(range(model.config.num_blocks)) if has_new else set()
        # Masks and rotary embeddings are the same for every block: built once, only those a step uses.
        head_dim, rope_theta, rotary_dtype = model.config.head_dim, model.config.rope_theta, model.dtype
        if has_new:
            self.fused_mask = fused_step_attention_mask(
                queries.key_padding, queries.new_input_ids.shape[1], queries.context_lengths
            )                                                                 # (batch, 1, n + k, keys + k)
            self.fused_rotary = rotary_cos_sin(
                fused_position_ids(queries.new_position_ids, queries.position_ids), head_dim, rope_theta, rotary_dtype
            )
        block_indices = [step.block_index for step in steps]
        if len(block_indices) > len(set(block_indices) & self.blocks_to_extend):   # a step with nothing to fold
            self.noisy_mask = noisy_query_attention_mask(queries.key_padding, queries.context_lengths)  # (batch, 1, k, keys + k)
            self.noisy_rotary = rotary_cos_sin(queries.position_ids, head_dim, rope_theta, rotary_dtype)

    def __call__(
        self, block_index: int, sigma: torch.Tensor, sample: torch.Tensor, index: int
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        step, queries = self.steps[index], self.queries
        block = self.model.blocks[str(block_index)]
        scaled = step.c_in * sample                                                  # preconditioning.scale_input
        if block_index in self.blocks_to_extend:                                     # its first step: fold
            self.blocks_to_extend.discard(block_index)
            logits = block.forward_noisy(
                scaled, step.noise_conditioning, queries.position_ids, self.fused_mask, self.cache,
                queries.new_input_ids, queries.new_position_ids, self.fused_rotary,
            )                                                                        # (batch, k, vocab)
        else:
            logits = block.forward_noisy(
                scaled, step.noise_conditioning, queries.position_ids, self.noisy_mask, self.cache,
                position_embeddings=self.noisy_rotary,
            )                                                                        # (batch, k, vocab)
        if index == len(self.steps) - 1:   # the state at σ = 0 is never used: the token comes from the logits
            return None, logits
        if self.solver == "ancestral":
            return self.model.target_embeddings[sample_from_logits(logits, self.generator)], logits   # (batch, k, d)
        return self.model.denoised_embeddings(logits).to(self.model.target_embeddings.dtype), logits   # (batch, k, d)

    def extend_unvisited_blocks(self) -> None:
        """Append the new clean tokens to the cache of every block no step visited."""
        if not self.blocks_to_extend:
            return
        queries = self.queries
        clean_mask = cached_clean_attention_mask(queries.key_padding, queries.new_input_ids.shape[1])
        for block_index in sorted(self.blocks_to_extend):
            self.model.blocks[str(block_index)].forward_clean(
                queries.new_input_ids, queries.new_position_ids, clean_mask, self.cache
            )
        self.blocks_to_extend.clear()


def initial_sample(
    shape: tuple[int, ...], scheduler: DiffusionBlocksScheduler, dtype: torch.dtype, device: torch.device,
    generator: torch.Generator | None, start_from_noise: bool,
) -> torch.Tensor:
    """z = σ_max·ε `shape` (ε = 0 without `start_from_noise`), ε drawn on the generator's device."""
    if start_from_noise:
        noise = torch.randn(shape, generator=generator, device=generator.device if generator else device)
    else:
        noise = torch.zeros(shape, device=device)
    return noise.to(device, dtype) * scheduler.init_noise_sigma


def sample_next_token_logits(
    model: SampledCausalLM,
    queries: NextTokenQueries,
    cache: Cache,
    num_inference_steps: int,
    solver: str,
    generator: torch.Generator | None = None,
    start_from_noise: bool = True,
    sampling_cache: CausalLMSamplingCache | None = None,
) -> torch.Tensor:
    """Sample the k next-token embeddings of `queries` at once with `model`; returns the last readout's
    logits `(batch, k, vocab)`. The new clean tokens of `queries` join every block's cache in `cache` (see
    the module docstring).

    Args:
        num_inference_steps (`int`), solver (`"euler" | "ancestral"`): as `sampling_settings` returns them.
        generator (`torch.Generator`, *optional*): source of ε and of the ancestral draws.
        start_from_noise (`bool`): False starts at ε = 0 (see `DiffusionBlocksForCausalLM.forward`).
        sampling_cache (`CausalLMSamplingCache`, *optional*): what the calls of one `generate()` share.
    """
    config = model.config
    sampling_cache = sampling_cache if sampling_cache is not None else CausalLMSamplingCache()
    scheduler = sampling_cache.scheduler_for({**config.scheduler_kwargs(), "solver": solver})
    device = queries.key_padding.device
    scheduler.set_timesteps(num_inference_steps, device=device)
    dtype = model.target_embeddings.dtype
    shape = (queries.key_padding.shape[0], queries.position_ids.shape[1], config.target_embedding_dim)
    sample = initial_sample(shape, scheduler, dtype, device, generator, start_from_noise)   # (batch, k, d)
    denoise = NextTokenDenoiser(model, queries, cache, sampling_cache.steps_for(model, scheduler, dtype), solver, generator)
    logits = integrate_routed_ode(scheduler, sample, denoise, generator=generator, final_step=False)[1]
    denoise.extend_unvisited_blocks()
    return logits
