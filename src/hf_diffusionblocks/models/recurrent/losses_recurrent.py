"""Training objectives of the recurrent-depth LM: one denoising pass (DiffusionBlocks), and the baseline's
truncated backpropagation through time over a random number of iterations (Huginn).

Both score next-token logits with the mean cross-entropy over positions (docs/method.md, 'Discrete targets';
unweighted, as for the ViT labels: CE has no σ-dependent scale for λ(σ) to normalise).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ...argument_checks import check_integer, check_number
from ...partition import NoisePartition
from ...preconditioning import add_noise


def next_token_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean CE of `(batch, seq, vocab)` logits against `(batch, seq)` targets (nats per token)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))


class RecurrentDenoisingLoss:
    """DiffusionBlocks for the recurrent core: E_{σ ~ p_noise|block b, ε}[CE(block_b(x_{≤t}, E[x_{t+1}] + σε, σ), x_{t+1})].

    One forward pass per training step, whatever K inference will use. One σ per sequence, shared by
    its positions (as at inference, where every position follows the same grid).

    Args:
        noise_partition (`NoisePartition`): the partition of the model's config.
    """

    def __init__(self, noise_partition: NoisePartition):
        self.noise_partition = noise_partition

    def __call__(self, model, block_index: int, input_ids: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """`input_ids` `(batch, seq_len + 1)`: positions `[:-1]` are the context, `[1:]` the targets."""
        context, targets = input_ids[:, :-1], input_ids[:, 1:]
        clean = model.token_targets[targets]                                            # (batch, seq, d)
        sigma = self.noise_partition.sample_training_sigmas(block_index, input_ids.shape[0], generator).to(clean.device)
        noise = torch.randn(clean.shape, generator=generator).to(clean.device)
        logits = model.forward_block(block_index, context, add_noise(clean, noise, sigma), sigma).logits
        return next_token_cross_entropy(logits, targets)


def sample_num_iterations(mean_recurrence: float, generator: torch.Generator | None = None, log_std: float = 0.5) -> int:
    """Huginn's random depth (Geiping et al. 2025, Eq. 3): τ ~ N(ln r̄ − ½s², s), r = Poisson(e^τ) + 1.

    Args:
        mean_recurrence (`float`): r̄ (> 0); the mean of r is r̄ + 1.
        log_std (`float`, defaults to 0.5): s.
    """
    check_number(mean_recurrence, "mean_recurrence", minimum=0, minimum_exclusive=True)
    tau = math.log(mean_recurrence) - 0.5 * log_std**2 + log_std * float(torch.randn((), generator=generator))
    return int(torch.poisson(torch.tensor([math.exp(tau)]), generator=generator)) + 1


class TruncatedBPTTLoss:
    """The baseline: unroll r ~ `sample_num_iterations(mean_recurrence)` iterations of the same model from
    z = σ_max·ε, backpropagate through the last `bptt_steps` of them only, CE at the last readout.

    Args:
        mean_recurrence (`float`, defaults to 8): r̄ (Huginn: 32).
        bptt_steps (`int`, defaults to 4): iterations differentiated (Huginn: 8).
    """

    def __init__(self, mean_recurrence: float = 8, bptt_steps: int = 4):
        check_number(mean_recurrence, "mean_recurrence", minimum=0, minimum_exclusive=True)
        check_integer(bptt_steps, "bptt_steps", minimum=1)
        self.mean_recurrence = mean_recurrence
        self.bptt_steps = bptt_steps

    def __call__(self, model, block_index: int, input_ids: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if model.config.num_blocks != 1:
            raise ValueError(f"truncated BPTT trains one recurrent core: num_blocks must be 1, got {model.config.num_blocks}.")
        num_iterations = sample_num_iterations(self.mean_recurrence, generator)
        context, targets = input_ids[:, :-1], input_ids[:, 1:]
        logits = model.iterate(context, num_iterations, generator, num_gradient_iterations=min(self.bptt_steps, num_iterations))
        return next_token_cross_entropy(logits, targets)
