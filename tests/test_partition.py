"""The noise partition: reference values (docs/method.md, 'Equi-probability partition'), equal mass, overlap, routing, sampling, bad input."""

import math

import pytest
import torch
from scipy import stats

from hf_diffusionblocks.partition import BlockPartition, NoisePartition, assign_layers_to_blocks, format_partition_table
from hf_diffusionblocks.pretrained import TimeAxisPartition
from hf_diffusionblocks.schedulers import DiffusionBlocksScheduler, MaskedDiffusionBlocksScheduler

REFERENCE_BOUNDARIES = {
    2: [0.002, 0.3012, 80],
    3: [0.002, 0.1796, 0.5050, 80],
    4: [0.002, 0.1341, 0.3012, 0.6766, 80],
    6: [0.002, 0.0943, 0.1796, 0.3012, 0.5050, 0.9617, 80],
}


@pytest.mark.parametrize("num_blocks", sorted(REFERENCE_BOUNDARIES))
def test_equiprobable_boundaries_match_reference(num_blocks):
    boundaries = NoisePartition(num_blocks=num_blocks).block_sigmas
    increasing = boundaries.flip(0).tolist()
    assert increasing == pytest.approx(REFERENCE_BOUNDARIES[num_blocks], abs=5e-5)
    assert torch.all(boundaries[:-1] > boundaries[1:]), "block_sigmas must decrease (block 0 = highest noise)"


@pytest.mark.parametrize("num_blocks", [1, 2, 3, 5, 8])
def test_equiprobable_blocks_hold_equal_mass(num_blocks):
    partition = NoisePartition(num_blocks=num_blocks)
    masses = [float(partition.probability_mass(*partition.block_interval(b))) for b in range(num_blocks)]
    assert masses == pytest.approx([1 / num_blocks] * num_blocks, abs=1e-9)


def test_uniform_partitions_are_equal_width_in_sigma_and_log_sigma():
    linear = NoisePartition(num_blocks=4, partition="uniform_linear").block_sigmas
    widths = (linear[:-1] - linear[1:]).tolist()
    assert widths == pytest.approx([(80 - 0.002) / 4] * 4)
    log = NoisePartition(num_blocks=4, partition="uniform_log").block_sigmas.log()
    assert (log[:-1] - log[1:]).tolist() == pytest.approx([math.log(80 / 0.002) / 4] * 4)


def test_overlap_ranges_match_reference():
    partition = NoisePartition(num_blocks=3, overlap=0.05)
    expected_increasing = [(0.002, 0.2249), (0.1706, 0.5318), (0.392, 80.0)]
    got_increasing = [partition.training_interval(b) for b in reversed(range(3))]
    for got, expected in zip(got_increasing, expected_increasing):
        assert got == pytest.approx(expected, abs=5e-4)


def test_zero_overlap_training_interval_is_the_block_interval():
    partition = NoisePartition(num_blocks=3, overlap=0.0)
    for block_index in range(3):
        assert partition.training_interval(block_index) == partition.block_interval(block_index)


def test_routing_at_and_around_boundaries():
    partition = NoisePartition(num_blocks=3)
    sigmas = partition.block_sigmas
    # a boundary belongs to the block below it in index (the block whose top it is)
    assert partition.block_index_for_level(sigmas).tolist() == [0, 1, 2, 2]
    assert partition.block_index_for_level(sigmas[1] * (1 + 1e-6)).item() == 0
    assert partition.block_index_for_level(sigmas[1] * (1 - 1e-6)).item() == 1
    with pytest.raises(ValueError, match="sigma must lie in"):
        partition.block_index_for_level(100.0)
    with pytest.raises(ValueError, match="sigma must lie in"):
        partition.block_index_for_level(1e-4)


@pytest.mark.parametrize("block_index", [0, 1, 2])
def test_training_sigmas_stay_in_block_and_follow_truncated_lognormal(block_index):
    partition = NoisePartition(num_blocks=3)
    low, high = partition.training_interval(block_index)
    sigmas = partition.sample_training_sigmas(block_index, 4000, torch.Generator().manual_seed(block_index))
    assert sigmas.shape == (4000,)
    assert float(sigmas.min()) >= low * (1 - 1e-6) and float(sigmas.max()) <= high * (1 + 1e-6)
    # Kolmogorov–Smirnov against the log-normal truncated to [low, high]
    a = (math.log(low) - partition.p_mean) / partition.p_std
    b = (math.log(high) - partition.p_mean) / partition.p_std
    standardized = (sigmas.double().log().numpy() - partition.p_mean) / partition.p_std
    assert stats.kstest(standardized, stats.truncnorm(a, b).cdf).pvalue > 0.01
    # and it is not a uniform draw in log space (the test has power)
    log_uniform = stats.uniform(loc=a, scale=b - a).cdf
    if block_index == 0:
        assert stats.kstest(standardized, log_uniform).pvalue < 1e-6


def test_training_sigmas_are_reproducible_with_a_generator():
    partition = NoisePartition(num_blocks=3)
    first = partition.sample_training_sigmas(1, 16, torch.Generator().manual_seed(3))
    second = partition.sample_training_sigmas(1, 16, torch.Generator().manual_seed(3))
    assert torch.equal(first, second)


def test_inference_grid_gives_equal_steps_per_block():
    partition = NoisePartition(num_blocks=3)
    sigmas = partition.inference_sigmas(12)
    assert sigmas.shape == (13,)
    assert sigmas[0] == 80.0 and sigmas[-1] == 0.0
    assert torch.all(sigmas[:-1] > sigmas[1:])
    assert torch.bincount(partition.block_index_for_level(sigmas[:-1])).tolist() == [4, 4, 4]


@pytest.mark.parametrize("num_blocks, steps", [(3, 3), (4, 8)])
def test_midpoint_grid_evaluates_every_block_inside_its_interval(num_blocks, steps):
    partition = NoisePartition(num_blocks=num_blocks, p_mean=0.2, p_std=1.0)
    sigmas = partition.inference_sigmas(steps, "midpoints")
    assert sigmas[0] == 80.0 and sigmas[-1] == 0.0 and torch.all(sigmas[:-1] > sigmas[1:])
    blocks = partition.block_index_for_level(sigmas[:-1])
    assert torch.bincount(blocks, minlength=num_blocks).tolist() == [steps // num_blocks] * num_blocks
    q_min, q_max = partition.cdf_range
    cells = (q_max - partition.sigma_to_cdf(sigmas[1:-1])) / (q_max - q_min) * steps
    assert torch.allclose(cells, torch.arange(1, steps, dtype=cells.dtype) + 0.5)   # the middle of cells 1 .. N-1
    boundaries = partition.block_sigmas
    for sigma, block in zip(sigmas[1:-1].tolist(), blocks[1:].tolist()):
        assert boundaries[block + 1] < sigma < boundaries[block]                     # never on a boundary
    edges = partition.inference_sigmas(steps)
    assert set(boundaries[:-1].tolist()) <= set(edges.tolist())                       # edges keep the boundaries
    with pytest.raises(ValueError, match="timestep_spacing must be one of"):
        partition.inference_sigmas(steps, "middle")


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"num_blocks": 0}, "num_blocks"),
        ({"sigma_min": 1.0, "sigma_max": 1.0}, "sigma_min"),
        ({"sigma_min": 0.0}, "sigma_min"),
        ({"partition": "linear"}, "partition"),
        ({"overlap": -0.1}, "overlap"),
        ({"p_std": 0.0}, "p_std"),
    ],
)
def test_bad_settings_raise_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        NoisePartition(**kwargs)


@pytest.mark.parametrize("block_index", [-1, 3, 1.0, True])
def test_bad_block_index_raises(block_index):
    with pytest.raises(ValueError, match="block_index"):
        NoisePartition(num_blocks=3).training_interval(block_index)


def test_layer_assignment():
    assert assign_layers_to_blocks(12, 3) == [4, 4, 4]
    assert assign_layers_to_blocks(10, 3, [4, 3, 3]) == [4, 3, 3]
    with pytest.raises(ValueError, match="not divisible"):
        assign_layers_to_blocks(10, 3)
    with pytest.raises(ValueError, match="sums to"):
        assign_layers_to_blocks(10, 3, [4, 4, 4])
    with pytest.raises(ValueError, match="entries"):
        assign_layers_to_blocks(10, 3, [5, 5])


def test_partition_table_lists_blocks_masses_and_layers():
    table = format_partition_table(NoisePartition(num_blocks=3), [4, 4, 4])
    assert "[0.5050, 80.0000]" in table and "[0.1796, 0.5050]" in table
    assert table.count("0.3333") == 3
    assert "8-11" in table


def test_every_partition_answers_which_block_owns_a_level_under_one_name():
    noise, time_axis = NoisePartition(num_blocks=3), TimeAxisPartition(3)
    masked = MaskedDiffusionBlocksScheduler(num_blocks=3)
    for partition, top, bottom in ((noise, noise.sigma_max, noise.sigma_min), (time_axis, 999.0, 0.0), (masked, 1.0, 0.0)):
        assert isinstance(partition, BlockPartition)
        assert partition.num_blocks == 3
        assert partition.block_index_for_level(torch.tensor([top, bottom])).tolist() == [0, 2]
        low, high = partition.block_interval(1)
        assert partition.block_index_for_level((low + high) / 2).item() == 1
    # the schedulers' documented names are the same lookup
    levels = torch.tensor([80.0, 1.0, 0.01])
    assert torch.equal(DiffusionBlocksScheduler(num_blocks=3).block_index_for_sigma(levels), noise.block_index_for_level(levels))
    times = torch.tensor([1.0, 0.5, 0.0])
    assert torch.equal(masked.block_index_for_time(times), masked.block_index_for_level(times))


@pytest.mark.parametrize("bad", [3, -1, True, 1.0, "0"])
def test_every_partition_refuses_a_bad_block_index_with_one_message(bad):
    partitions = (NoisePartition(num_blocks=3), TimeAxisPartition(3), MaskedDiffusionBlocksScheduler(num_blocks=3))
    for partition in partitions:
        with pytest.raises(ValueError, match=r"block_index must be an int in \[0, 2\] \(num_blocks=3\)"):
            partition.check_block_index(bad)
