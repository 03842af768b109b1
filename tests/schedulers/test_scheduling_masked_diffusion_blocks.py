"""MaskedDiffusionBlocksScheduler: partition in α, NELBO weights, sampling."""

import pytest
import torch
from scheduler_common import SchedulerCommonTests

from hf_diffusionblocks import MaskedDiffusionBlocksScheduler
from hf_diffusionblocks.models.masked_lm import stratified_times


def test_linear_block_times_are_equal_alpha_decrements():
    scheduler = MaskedDiffusionBlocksScheduler(num_blocks=3, schedule="linear")
    assert scheduler.block_times.tolist() == pytest.approx([1.0, 2 / 3, 1 / 3, 0.0])
    assert scheduler.alpha(scheduler.block_times).tolist() == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0])


def test_cosine_block_times_are_equal_alpha_decrements():
    scheduler = MaskedDiffusionBlocksScheduler(num_blocks=4, schedule="cosine")
    alphas = scheduler.alpha(scheduler.block_times)
    assert alphas.tolist() == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0], abs=1e-9)
    # not the linear boundaries
    assert scheduler.block_times[1].item() != pytest.approx(0.75)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_alpha_derivative_matches_finite_difference(schedule):
    scheduler = MaskedDiffusionBlocksScheduler(schedule=schedule)
    t = torch.tensor([0.1, 0.4, 0.8], dtype=torch.float64)
    numeric = (scheduler.alpha(t + 1e-6) - scheduler.alpha(t - 1e-6)) / 2e-6
    assert scheduler.alpha_derivative(t).tolist() == pytest.approx(numeric.tolist(), rel=1e-5)


def test_linear_nelbo_weight_is_one_over_t():
    scheduler = MaskedDiffusionBlocksScheduler(schedule="linear")
    t = torch.tensor([0.1, 0.5, 1.0])
    assert scheduler.nelbo_weight(t).tolist() == pytest.approx([10.0, 2.0, 1.0])


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_per_block_weights_add_up_to_the_nelbo_integral(schedule):
    # For a per-token loss that does not depend on t, ∫ w(t)·(1 − α(t)) dt = 1 (one masked-token loss per token):
    # the Monte-Carlo sum over blocks of (t_hi − t_lo)·E_U[w(t)(1 − α(t))] must give 1.
    scheduler = MaskedDiffusionBlocksScheduler(num_blocks=3, schedule=schedule)
    total = 0.0
    for block_index in range(3):
        t = stratified_times(*scheduler.block_interval(block_index), 200000, torch.Generator().manual_seed(block_index))
        weight = scheduler.training_loss_weight(block_index, t).double()
        total += float((weight * (1 - scheduler.alpha(t))).mean())
    assert total == pytest.approx(1.0, rel=1e-2)


def test_routing_and_training_times():
    scheduler = MaskedDiffusionBlocksScheduler(num_blocks=3)
    assert scheduler.block_index_for_time(torch.tensor([1.0, 2 / 3, 0.5, 0.2, 0.0])).tolist() == [0, 0, 1, 2, 2]
    assert scheduler.block_interval(1) == pytest.approx((1 / 3, 2 / 3))
    with pytest.raises(ValueError, match="t must lie"):
        scheduler.block_index_for_time(1.5)


def test_unmasking_sampler_reveals_everything_and_never_emits_mask():
    scheduler = MaskedDiffusionBlocksScheduler(num_blocks=3)
    vocab, mask_id = 5, 4
    scheduler.set_timesteps(6)
    assert scheduler.block_indices.tolist() == [0, 0, 1, 1, 2, 2]
    sample = torch.full((8, 32), mask_id)
    generator = torch.Generator().manual_seed(0)
    masked_counts = []
    for t in scheduler.timesteps:
        logits = torch.zeros(8, 32, vocab)
        logits[..., mask_id] = 100.0  # the sampler must exclude the mask token anyway
        sample = scheduler.step(logits, t, sample, mask_token_id=mask_id, generator=generator).prev_sample
        masked_counts.append(int((sample == mask_id).sum()))
    assert masked_counts[-1] == 0
    assert masked_counts == sorted(masked_counts, reverse=True)
    assert 0 < masked_counts[2] < 8 * 32  # partially unmasked half way


def test_add_noise_masks_with_probability_one_minus_alpha():
    scheduler = MaskedDiffusionBlocksScheduler()
    ids = torch.zeros(4, 5000, dtype=torch.long)
    noisy, masked = scheduler.add_noise(ids, torch.tensor([0.0, 0.25, 0.5, 1.0]), mask_token_id=9, generator=torch.Generator().manual_seed(0))
    fractions = masked.float().mean(dim=1).tolist()
    assert fractions[0] == 0.0 and fractions[3] == 1.0
    assert fractions[1] == pytest.approx(0.25, abs=0.03) and fractions[2] == pytest.approx(0.5, abs=0.03)
    assert torch.all(noisy[masked] == 9)


def test_save_load_and_bad_input(tmp_path):
    scheduler = MaskedDiffusionBlocksScheduler(num_blocks=4, schedule="cosine")
    scheduler.save_pretrained(tmp_path)
    assert torch.equal(MaskedDiffusionBlocksScheduler.from_pretrained(tmp_path).block_times, scheduler.block_times)
    with pytest.raises(ValueError, match="schedule"):
        MaskedDiffusionBlocksScheduler(schedule="sqrt")
    with pytest.raises(ValueError, match="num_blocks"):
        MaskedDiffusionBlocksScheduler(num_blocks=0)
    with pytest.raises(ValueError, match="block_index"):
        scheduler.block_interval(4)


MASK_TOKEN_ID = 9


class TestMaskedDiffusionBlocksSchedulerCommon(SchedulerCommonTests):
    """The common scheduler tests; the model output is random logits over 10 ids (9 is the mask)."""

    scheduler_class = MaskedDiffusionBlocksScheduler
    config = {"num_blocks": 3, "schedule": "cosine"}

    def clean_sample(self) -> torch.Tensor:
        return torch.randint(0, MASK_TOKEN_ID, (4, 16), generator=torch.Generator().manual_seed(0))

    def model_output(self, sample, timestep, generator):
        return torch.randn(*sample.shape, MASK_TOKEN_ID + 1, generator=generator)

    def step(self, scheduler, model_output, timestep, sample, generator, return_dict=True):
        return scheduler.step(model_output, timestep, sample, MASK_TOKEN_ID, generator=generator, return_dict=return_dict)

    def add_noise(self, scheduler, sample, levels, generator):
        return scheduler.add_noise(sample, levels, MASK_TOKEN_ID, generator=generator)[0]
