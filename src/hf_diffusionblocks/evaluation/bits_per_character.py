"""Bits per character of a masked diffusion LM: its NELBO on a text, by a fixed-seed stratified Monte-Carlo over t.

The model is the piecewise denoiser: block b predicts x₀ for every t in its interval. For one sequence x
of L tokens (MD4 Eq. 5, with w(t) = −α'(t)/(1 − α(t)))

    NELBO(x) = ∫₀¹ w(t) · E_{x_t ~ q(·|x)} [ Σ_{i masked} −log p_θ(xⁱ | x_t) ] dt .

Estimator. [0, 1] is cut into K = `num_time_strata` strata: each block's interval [t_lo, t_hi] into
m = K/B equal sub-intervals, so every stratum lies inside one block. One replicate draws, for every
sequence and every stratum s = [a_s, b_s], one t_s ~ U(a_s, b_s) and one mask x_t ~ q(·|x), and adds
(b_s − a_s)·w(t_s)·Σ_masked −log p_θ — exactly block b's training loss divided by m
(`MaskedDiffusionLoss.sequence_losses`), so the estimate is the sum of the blocks' per-interval losses.
Each replicate is unbiased for NELBO(x); R = `num_replicates` independent replicates per sequence
(R ≥ 2) give its mean N̂(x) and the variance of that mean, s²(x)/R. Sequences are independent, so
the text's NELBO is Σ_x N̂(x) with standard error sqrt(Σ_x s²(x)/R), and

    BPC = Σ_x N̂(x) / (characters · ln 2)   ± standard error / (characters · ln 2).

The text is cut into consecutive windows of `sequence_length` tokens (the last one shorter), each an
independent sequence, as in training. All randomness comes from one `torch.Generator(seed)` on the CPU.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from tqdm.auto import tqdm

from ..models.masked_lm import MaskedDiffusionLoss, stratified_times
from ..schedulers.scheduling_masked_diffusion_blocks import MaskedDiffusionBlocksScheduler


@dataclass
class TimeStratumEstimate:
    """One interval of t's share of the NELBO: `block_index` (the block that owns it), `t_low`, `t_high`,
    `nelbo_nats` and its Monte-Carlo `standard_error_nats`."""

    block_index: int
    t_low: float
    t_high: float
    nelbo_nats: float
    standard_error_nats: float


@dataclass
class NELBOEstimate:
    """A text's NELBO and bits per character, with the Monte-Carlo standard error.

    Args:
        nelbo_nats (`float`): Σ over the text's sequences of their NELBO estimates, in nats.
        standard_error_nats (`float`): its Monte-Carlo standard error.
        num_characters (`int`): characters of the (normalised) text, the BPC denominator.
        num_tokens (`int`), num_sequences (`int`), num_time_strata (`int`), num_replicates (`int`), seed (`int`).
        strata (`list[TimeStratumEstimate]`): the NELBO split over the strata of t (their `nelbo_nats` add up
            to `nelbo_nats`): where in the noise range, and in which block, the bits are spent.
    """

    nelbo_nats: float
    standard_error_nats: float
    num_characters: int
    num_tokens: int
    num_sequences: int
    num_time_strata: int
    num_replicates: int
    seed: int
    strata: list[TimeStratumEstimate] = field(default_factory=list)

    def per_character_bits(self, nats: float) -> float:
        """`nats` of this text in bits per character."""
        return nats / (self.num_characters * math.log(2))

    @property
    def bits_per_character(self) -> float:
        return self.per_character_bits(self.nelbo_nats)

    @property
    def bits_per_character_standard_error(self) -> float:
        return self.per_character_bits(self.standard_error_nats)

    @property
    def bits_per_token(self) -> float:
        return self.nelbo_nats / (self.num_tokens * math.log(2))

    def to_dict(self) -> dict:
        return {
            **asdict(self),
            "bits_per_character": self.bits_per_character,
            "bits_per_character_standard_error": self.bits_per_character_standard_error,
            "bits_per_token": self.bits_per_token,
            "strata": [
                {
                    **asdict(stratum),
                    "bits_per_character": self.per_character_bits(stratum.nelbo_nats),
                    "bits_per_character_standard_error": self.per_character_bits(stratum.standard_error_nats),
                }
                for stratum in self.strata
            ],
        }


def text_windows(token_ids: torch.Tensor, sequence_length: int) -> list[torch.Tensor]:
    """Consecutive non-overlapping windows `(num_windows, sequence_length)`, plus the shorter tail `(1, rest)` if any."""
    if sequence_length < 1:
        raise ValueError(f"sequence_length must be >= 1, got {sequence_length}.")
    num_full = len(token_ids) // sequence_length
    windows = [token_ids[: num_full * sequence_length].view(num_full, sequence_length)] if num_full else []
    if len(token_ids) % sequence_length:
        windows.append(token_ids[num_full * sequence_length :].unsqueeze(0))
    return windows


def time_strata(scheduler: MaskedDiffusionBlocksScheduler, num_time_strata: int) -> list[tuple[int, float, float]]:
    """(block_index, a, b) of each stratum: every block's interval cut into `num_time_strata / num_blocks` parts."""
    num_blocks = scheduler.config.num_blocks
    if num_time_strata < 1 or num_time_strata % num_blocks:
        raise ValueError(f"num_time_strata must be a positive multiple of num_blocks={num_blocks}, got {num_time_strata}.")
    per_block = num_time_strata // num_blocks
    strata = []
    for block_index in range(num_blocks):
        low, high = scheduler.block_interval(block_index)
        width = (high - low) / per_block
        strata += [(block_index, low + k * width, low + (k + 1) * width) for k in range(per_block)]
    return strata


@torch.no_grad()
def estimate_sequence_nelbo_by_stratum(
    model,
    input_ids: torch.Tensor,
    num_time_strata: int = 6,
    num_replicates: int = 2,
    generator: torch.Generator | None = None,
    batch_size: int = 64,
    progress: bool = False,
) -> torch.Tensor:
    """Each stratum's share of every sequence's NELBO replicates (nats) `(num_sequences, num_replicates, num_time_strata)`.

    Summed over the last axis it is `estimate_sequence_nelbo`; stratum k is `time_strata(...)[k]`, so each
    share is the NELBO mass of one interval of t (which block, or which part of the noise range, costs the bits).

    Args:
        model (`DiffusionBlocksForMaskedLM`): every block loaded.
        input_ids (`torch.LongTensor` of shape `(num_sequences, seq_len)`): clean sequences.
        num_time_strata (`int`, defaults to 6): strata K over t, a multiple of `num_blocks` (module docstring).
        num_replicates (`int`, defaults to 2): independent stratified estimates per sequence.
        generator (`torch.Generator`, *optional*): CPU generator of every t and mask.
        batch_size (`int`, defaults to 64): sequences per forward pass.
    """
    scheduler = model.build_scheduler()
    loss = MaskedDiffusionLoss(scheduler, model.config.mask_token_id)
    strata = time_strata(scheduler, num_time_strata)
    per_block = num_time_strata // scheduler.config.num_blocks
    device = next(model.parameters()).device
    estimates = torch.zeros(input_ids.shape[0], num_replicates, len(strata), dtype=torch.float64)
    steps = [
        (r, k, stratum, start)
        for r in range(num_replicates) for k, stratum in enumerate(strata) for start in range(0, len(input_ids), batch_size)
    ]
    for replicate, k, (block_index, low, high), start in tqdm(steps, disable=not progress, desc="NELBO"):
        batch = input_ids[start : start + batch_size].to(device)
        t = stratified_times(low, high, len(batch), generator, num_strata=1)
        block_losses = loss.sequence_losses(model, block_index, batch, t, generator)   # (batch,) block b's loss
        estimates[start : start + len(batch), replicate, k] = block_losses.double().cpu() / per_block
    return estimates


def estimate_sequence_nelbo(
    model,
    input_ids: torch.Tensor,
    num_time_strata: int = 6,
    num_replicates: int = 2,
    generator: torch.Generator | None = None,
    batch_size: int = 64,
    progress: bool = False,
) -> torch.Tensor:
    """Per-sequence NELBO replicates (nats) `(num_sequences, num_replicates)` of equal-length sequences
    (arguments of `estimate_sequence_nelbo_by_stratum`, summed over its strata)."""
    return estimate_sequence_nelbo_by_stratum(
        model, input_ids, num_time_strata, num_replicates, generator, batch_size, progress
    ).sum(dim=-1)


def estimate_nelbo(
    model,
    tokenizer,
    text: str,
    sequence_length: int | None = None,
    num_time_strata: int = 6,
    num_replicates: int = 2,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = False,
) -> NELBOEstimate:
    """NELBO and bits per character of `text` under `model` (see the module docstring for the estimator).

    Args:
        model (`DiffusionBlocksForMaskedLM`): every block loaded, on its device.
        tokenizer (`CharacterTokenizer`): the model's tokenizer (strict mode refuses unknown characters).
        text (`str`): the held-out text.
        sequence_length (`int`, *optional*): window length; defaults to `max_position_embeddings`.
        num_time_strata (`int`, defaults to 6), num_replicates (`int`, defaults to 2), batch_size (`int`, defaults to 64).
        seed (`int`, defaults to 0): the estimate is a deterministic function of the seed.
    """
    if num_replicates < 2:
        raise ValueError(f"num_replicates must be >= 2 to estimate the standard error, got {num_replicates}.")
    if not model.is_complete:
        raise ValueError(f"the NELBO needs every block; loaded blocks: {model.loaded_block_indices}.")
    sequence_length = sequence_length or model.config.max_position_embeddings
    if sequence_length > model.config.max_position_embeddings:
        raise ValueError(
            f"sequence_length={sequence_length} exceeds max_position_embeddings={model.config.max_position_embeddings}."
        )
    token_ids = tokenizer.encode_corpus(text)
    if len(token_ids) == 0:
        raise ValueError("the text to evaluate is empty.")
    generator = torch.Generator().manual_seed(seed)
    total = torch.zeros(num_time_strata, dtype=torch.float64)        # per stratum: Σ_x mean over replicates
    variance = torch.zeros(num_time_strata, dtype=torch.float64)     # per stratum: Σ_x s²(x)/R
    total_variance, num_sequences = 0.0, 0
    for windows in text_windows(token_ids, sequence_length):
        replicates = estimate_sequence_nelbo_by_stratum(
            model, windows, num_time_strata, num_replicates, generator, batch_size, progress
        )                                                                               # (n, R, K)
        total += replicates.mean(dim=1).sum(dim=0)
        variance += (replicates.var(dim=1, unbiased=True) / num_replicates).sum(dim=0)
        total_variance += float((replicates.sum(dim=-1).var(dim=1, unbiased=True) / num_replicates).sum())
        num_sequences += len(windows)
    scheduler = model.build_scheduler()
    return NELBOEstimate(
        nelbo_nats=float(total.sum()),
        standard_error_nats=math.sqrt(total_variance),
        num_characters=len(tokenizer.normalize(text)),
        num_tokens=len(token_ids),
        num_sequences=num_sequences,
        num_time_strata=num_time_strata,
        num_replicates=num_replicates,
        seed=seed,
        strata=[
            TimeStratumEstimate(block_index, low, high, float(nats), math.sqrt(float(var)))
            for (block_index, low, high), nats, var in zip(time_strata(scheduler, num_time_strata), total, variance)
        ],
    )
