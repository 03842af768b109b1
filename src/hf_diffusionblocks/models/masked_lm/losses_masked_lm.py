"""The masked-diffusion objective, per block (MD4, Shi et al. 2024, Eq. 5; MDLM, Sahoo et al. 2024, Eq. 10).

NELBO(x₀) = ∫₀¹ w(t) · E_{x_t ~ q(·|x₀)} [ Σ_{i masked in x_t} −log p_θ(x₀ⁱ | x_t) ] dt,
w(t) = −α'(t) / (1 − α(t)) (1/t for the linear schedule).

Block b owns [t_lo, t_hi]; its loss is E_{t ~ U(t_lo, t_hi)} [ (t_hi − t_lo)·w(t) · Σ_masked −log p_θ ],
so the B block losses add up to the NELBO (`MaskedDiffusionBlocksScheduler.training_loss_weight`).
Under the SUBS parameterisation (`substitution_parameterization`) unmasked positions contribute
exactly 0, so the sum over masked positions is the whole reconstruction term.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...argument_checks import check_integer
from ...schedulers.scheduling_masked_diffusion_blocks import MaskedDiffusionBlocksScheduler

# Smallest t drawn: w(t) = 1/t is infinite at 0 (the scheduler's training sampler uses the same floor).
MIN_TIME = 1e-5


def masked_negative_log_likelihood(logits: torch.Tensor, targets: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """Σ over masked positions of −log p(target), per sequence.

    Args:
        logits (`torch.Tensor` of shape `(batch, seq, vocab)`), targets (`torch.LongTensor` `(batch, seq)`),
        masked (`torch.BoolTensor` `(batch, seq)`).
    Returns:
        `(batch,)` float32 sums in nats.
    """
    per_token = torch.zeros(targets.shape, dtype=torch.float32, device=logits.device)      # (batch, seq)
    # only masked positions: the carried-over ones hold −inf logits whose gradient would be NaN
    per_token[masked] = F.cross_entropy(logits[masked].float(), targets[masked], reduction="none")
    return per_token.sum(dim=1)


def stratified_times(
    low: float, high: float, batch_size: int, generator: torch.Generator | None = None, num_strata: int | None = None
) -> torch.Tensor:
    """t in [low, high] `(batch_size,)` float64, one draw per equal-width stratum (low-discrepancy, as MDLM's sampler).

    Element i lies in stratum `i % num_strata` (default: `batch_size` strata); each element is still
    marginally U(low, high) when its stratum is itself uniform, so weighted means stay unbiased.
    """
    batch_size = check_integer(batch_size, "batch_size", minimum=1)
    num_strata = batch_size if num_strata is None else check_integer(num_strata, "num_strata", minimum=1)
    stratum = torch.arange(batch_size, dtype=torch.float64) % num_strata
    uniform = torch.rand(batch_size, generator=generator, dtype=torch.float64)
    times = low + (stratum + uniform) / num_strata * (high - low)
    return times.clamp_min(MIN_TIME)


class MaskedDiffusionLoss:
    """Block b's share of the NELBO: E_t[(t_hi − t_lo)·w(t)·Σ_masked −log p_θ(x₀ | x_t)], in nats per token.

    Args:
        scheduler (`MaskedDiffusionBlocksScheduler`): the partition and masking schedule of the model.
        mask_token_id (`int`): id of the mask token.
    """

    def __init__(self, scheduler: MaskedDiffusionBlocksScheduler, mask_token_id: int):
        self.scheduler = scheduler
        self.mask_token_id = mask_token_id

    def sequence_losses(
        self, model, block_index: int, input_ids: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """(t_hi − t_lo)·w(t)·Σ_masked −log p_θ for given times: `(batch,)` nats per sequence.

        The masks are drawn on the CPU from `generator` (so CPU and GPU runs mask alike) and moved to
        `input_ids.device`.
        """
        noisy, masked = self.scheduler.add_noise(input_ids.cpu(), t, self.mask_token_id, generator)
        noisy, masked = noisy.to(input_ids.device), masked.to(input_ids.device)
        logits = model.forward_block(block_index, noisy, t.float().to(input_ids.device)).logits
        weight = self.scheduler.training_loss_weight(block_index, t).to(input_ids.device)         # (batch,)
        return weight * masked_negative_log_likelihood(logits, input_ids, masked)

    def __call__(
        self, model, block_index: int, input_ids: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """The training loss: t stratified over the block's interval, mean over the batch, per token."""
        low, high = self.scheduler.block_interval(block_index)
        t = stratified_times(low, high, input_ids.shape[0], generator)
        t = t[torch.randperm(len(t), generator=generator)]  # strata must not follow the batch order
        return self.sequence_losses(model, block_index, input_ids, t, generator).mean() / input_ids.shape[1]
