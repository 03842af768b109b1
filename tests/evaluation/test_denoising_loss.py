"""The denoising loss split over σ intervals: exact on Gaussian data, additive, model-independent draws, bad input."""

import copy
from types import SimpleNamespace

import pytest
import torch

from conftest import randomize_
from hf_diffusionblocks import DiffusionBlocksDiTModel
from hf_diffusionblocks.evaluation import (
    estimate_denoising_loss,
    estimate_denoising_loss_difference,
    estimate_image_denoising_losses_by_stratum,
    interval_strata,
    summarize_denoising_losses,
)
from hf_diffusionblocks.partition import NoisePartition
from hf_diffusionblocks.preconditioning import EDMPreconditioning

SIGMA_DATA = 0.5


class GaussianDenoiser:
    """D(z, σ) = s²/(s² + σ²)·z, the exact posterior mean for data y ~ N(0, s² I); optionally the identity above σ_wrong."""

    def __init__(self, data_std: float, partition: NoisePartition, wrong_above: float | None = None):
        self.data_std = data_std
        self.wrong_above = wrong_above
        self.config = SimpleNamespace(preconditioning=EDMPreconditioning(SIGMA_DATA), noise_partition=partition)
        self.calls = []

    def __call__(self, noisy, sigma, class_labels=None):
        self.calls.append((noisy.clone(), sigma.clone()))
        factor = (self.data_std**2 / (self.data_std**2 + sigma**2)).reshape(-1, 1, 1, 1)
        if self.wrong_above is not None:
            factor = torch.where(sigma.reshape(-1, 1, 1, 1) > self.wrong_above, torch.ones_like(factor), factor)
        return SimpleNamespace(sample=factor * noisy)


def exact_interval_losses(partition: NoisePartition, data_std: float) -> torch.Tensor:
    """E[λ(σ)·s²σ²/(s² + σ²) | σ ∈ I_k] by the midpoint rule on 200,000 cells of the CDF of each interval."""
    losses = []
    for k in range(partition.num_blocks):
        low, high = partition.block_interval(k)
        cdf_low, cdf_high = partition.sigma_to_cdf(low), partition.sigma_to_cdf(high)
        u = cdf_low + (torch.arange(200_000, dtype=torch.float64) + 0.5) / 200_000 * (cdf_high - cdf_low)
        sigma = partition.cdf_to_sigma(u)
        weight = (sigma**2 + SIGMA_DATA**2) / (sigma * SIGMA_DATA) ** 2
        losses.append(float((weight * data_std**2 * sigma**2 / (data_std**2 + sigma**2)).mean()))
    return torch.tensor(losses, dtype=torch.float64)


def gaussian_images(data_std: float, num_images: int = 300) -> torch.Tensor:
    return torch.randn(num_images, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * data_std


@pytest.mark.parametrize("data_std", [SIGMA_DATA, 1.0])
def test_the_exact_denoiser_gets_the_known_loss_in_every_interval(data_std):
    partition = NoisePartition(num_blocks=3)
    estimate = estimate_denoising_loss(GaussianDenoiser(data_std, partition), gaussian_images(data_std), partition)
    exact = exact_interval_losses(partition, data_std)
    if data_std == SIGMA_DATA:  # λ(σ)·σ_d²σ²/(σ_d² + σ²) = 1 for every σ
        assert torch.allclose(exact, torch.ones(3, dtype=torch.float64))
    for row, expected in zip(estimate.intervals, exact.tolist()):
        assert 0 < row.conditional_standard_error < 0.03 * expected
        assert abs(row.conditional_loss - expected) < 4 * row.conditional_standard_error
    exact_total = float((exact / 3).sum())  # equi-probability: every interval has mass 1/3
    assert abs(estimate.loss - exact_total) < 4 * estimate.standard_error


def test_shares_add_up_to_the_total_and_a_bad_interval_shows_alone():
    partition = NoisePartition(num_blocks=3)
    images = gaussian_images(1.0, 100)
    middle_high = partition.block_interval(1)[1]
    # Wrong (the identity) only on interval 0, the highest noise.
    estimate = estimate_denoising_loss(GaussianDenoiser(1.0, partition, wrong_above=middle_high), images, partition,
                                       strata_per_interval=3, num_replicates=3)
    assert sum(row.probability_mass for row in estimate.intervals) == pytest.approx(1.0, abs=1e-12)
    assert sum(row.share for row in estimate.intervals) == pytest.approx(estimate.loss, rel=1e-12)
    for row in estimate.intervals:
        assert row.share == pytest.approx(row.probability_mass * row.conditional_loss, rel=1e-12)
    exact = exact_interval_losses(partition, 1.0)
    high, middle, low = estimate.intervals
    assert high.conditional_loss > 4 * float(exact[0])          # the identity at σ ≥ 0.5 is far off
    for row, expected in ((middle, exact[1]), (low, exact[2])):
        assert abs(row.conditional_loss - float(expected)) < 4 * row.conditional_standard_error
    assert [row.interval_index for row in estimate.intervals] == [0, 1, 2]
    assert estimate.format_table().splitlines()[-1].strip().startswith("total")


def test_the_paired_difference_is_zero_where_two_models_agree():
    partition = NoisePartition(num_blocks=3)
    images = gaussian_images(1.0, 50)
    exact = GaussianDenoiser(1.0, partition)
    wrong = GaussianDenoiser(1.0, partition, wrong_above=partition.block_interval(1)[1])
    difference = estimate_denoising_loss_difference(wrong, exact, images, partition, strata_per_interval=2)
    high, middle, low = difference.intervals
    assert high.conditional_loss > 2 * high.conditional_standard_error > 0   # the identity at high σ: heavy-tailed
    assert middle.conditional_loss == low.conditional_loss == middle.conditional_standard_error == 0.0
    one = estimate_denoising_loss(wrong, images, partition, strata_per_interval=2)
    two = estimate_denoising_loss(exact, images, partition, strata_per_interval=2)
    assert difference.loss == pytest.approx(one.loss - two.loss, rel=1e-12)
    assert difference.standard_error < one.standard_error


def test_the_draws_depend_on_neither_the_model_nor_the_batch_size():
    partition = NoisePartition(num_blocks=2)
    images = gaussian_images(1.0, 20)
    first, second = GaussianDenoiser(1.0, partition), GaussianDenoiser(0.3, partition)
    one = estimate_image_denoising_losses_by_stratum(first, images, partition, batch_size=7, num_replicates=1)
    two = estimate_image_denoising_losses_by_stratum(first, images, partition, batch_size=20, num_replicates=1)
    assert torch.equal(one, two) and one.shape == (20, 1, 8)
    estimate_image_denoising_losses_by_stratum(second, images, partition, batch_size=20, num_replicates=1)
    for (noisy_a, sigma_a), (noisy_b, sigma_b) in zip(first.calls[len(first.calls) - 8:], second.calls):
        assert torch.equal(noisy_a, noisy_b) and torch.equal(sigma_a, sigma_b)
    # each sub-stratum's σ lies in it, and the sub-strata tile the intervals
    strata = interval_strata(partition, 4)
    for (_, low, high), (_, sigma) in zip(strata, second.calls):
        assert bool(((sigma >= low * (1 - 1e-6)) & (sigma <= high * (1 + 1e-6))).all())
    assert strata[0][2] == pytest.approx(80.0) and strata[-1][1] == pytest.approx(0.002)
    assert all(a[1] == pytest.approx(b[2]) for a, b in zip(strata, strata[1:]))


def test_block_wise_and_end_to_end_dits_are_split_over_the_same_intervals(tiny_dit_config):
    blockwise = randomize_(DiffusionBlocksDiTModel(tiny_dit_config)).eval()
    end_to_end_config = copy.deepcopy(tiny_dit_config)
    end_to_end_config.num_blocks = 1
    end_to_end = randomize_(DiffusionBlocksDiTModel(end_to_end_config), seed=1).eval()
    images = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    labels = torch.arange(6)
    partition = blockwise.config.noise_partition
    for model in (blockwise, end_to_end):
        estimate = estimate_denoising_loss(model, images, partition, class_labels=labels, strata_per_interval=2)
        assert estimate.num_intervals == 3 and estimate.loss > 0
        assert all(torch.isfinite(torch.tensor(row.conditional_loss)) for row in estimate.intervals)


def test_bad_input_is_named(tiny_dit_config):
    partition = NoisePartition(num_blocks=3)
    model = GaussianDenoiser(1.0, partition)
    images = gaussian_images(1.0, 4)
    with pytest.raises(TypeError, match="partition must be a NoisePartition"):
        estimate_denoising_loss(model, images, "equiprobable")
    with pytest.raises(ValueError, match="images must hold at least 2"):
        estimate_denoising_loss(model, images[:1], partition)
    with pytest.raises(ValueError, match="images must be a floating tensor"):
        estimate_denoising_loss(model, images.long(), partition)
    with pytest.raises(ValueError, match="class_labels must be None or a tensor of shape"):
        estimate_denoising_loss(model, images, partition, class_labels=torch.arange(3))
    with pytest.raises(ValueError, match="num_replicates"):
        estimate_denoising_loss(model, images, partition, num_replicates=0)
    with pytest.raises(ValueError, match="strata_per_interval"):
        estimate_denoising_loss(model, images, partition, strata_per_interval=0)
    with pytest.raises(ValueError, match="batch_size"):
        estimate_denoising_loss(model, images, partition, batch_size=0)
    with pytest.raises(ValueError, match="outside the model's"):
        estimate_denoising_loss(model, images, NoisePartition(num_blocks=3, sigma_max=100.0))
    with pytest.raises(ValueError, match="not a multiple of the partition's 3 intervals"):
        summarize_denoising_losses(torch.zeros(4, 1, 4, dtype=torch.float64), partition, 0, 0.5)
    with pytest.raises(ValueError, match="losses must be a tensor of shape"):
        summarize_denoising_losses(torch.zeros(4, 6), partition, 0, 0.5)
    incomplete = DiffusionBlocksDiTModel(tiny_dit_config, block_indices=[0])
    with pytest.raises(ValueError, match="needs every block"):
        estimate_denoising_loss(incomplete, images, partition)
