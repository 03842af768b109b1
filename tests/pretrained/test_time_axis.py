"""TimeAxisPartition: boundaries, masses, routing, training draws and step counts, with hand-derived numbers."""

import pytest
import torch
from diffusers import DDPMScheduler, DiTPipeline, FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

from hf_diffusionblocks.pretrained.time_axis import (
    TimeAxisPartition,
    default_num_inference_steps,
    sampling_steps_per_block,
    time_partition_from_scheduler_config,
)


def test_ddpm_equiprobable_boundaries_are_equal_slices_of_the_train_steps():
    partition = TimeAxisPartition(4, "ddpm", 1000, overlap=0.0)
    assert partition.block_timesteps.tolist() == [1000.0, 750.0, 500.0, 250.0, 0.0]
    # block 0 owns t in {750..999}: 250 of 1000 train steps
    assert [partition.block_mass(b) for b in range(4)] == pytest.approx([0.25] * 4)
    t = torch.tensor([999, 750, 749, 500, 499, 250, 249, 0])
    assert partition.block_index_for_level(t).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_ddpm_three_blocks_split_1000_steps_333_333_334():
    partition = TimeAxisPartition(3, "ddpm", 1000, overlap=0.0)
    # boundaries 666.67 and 333.33: block 0 = {667..999}, block 1 = {334..666}, block 2 = {0..333}
    counts = partition.steps_per_block(torch.arange(1000))
    assert counts == [333, 333, 334]
    assert partition.block_mass(2) == pytest.approx(0.334)


def test_flow_boundary_is_the_shifted_logit_normal_median():
    # B=2, logit-normal(0, 1): the median u is sigmoid(0) = 0.5; shift 3 maps it to 3·0.5/(1 + 2·0.5) = 0.75
    partition = TimeAxisPartition(2, "flow", 1000, overlap=0.0, logit_mean=0.0, logit_std=1.0, shift=3.0)
    assert partition.block_timesteps.tolist() == pytest.approx([1000.0, 750.0, 0.0])
    # with mean 1: u = sigmoid(1) = 0.7311, unshifted (shift 1) → 731.06
    shifted_mean = TimeAxisPartition(2, "flow", 1000, overlap=0.0, logit_mean=1.0, shift=1.0)
    assert float(shifted_mean.block_timesteps[1]) == pytest.approx(731.0586, abs=1e-3)
    assert [partition.block_mass(b) for b in range(2)] == pytest.approx([0.5, 0.5])


def test_flow_four_blocks_quartiles():
    # Φ⁻¹(0.25) = -0.67449 → u = sigmoid(-0.67449) = 0.33750 → shift 3: 1.01250 / 1.67500 = 0.60448
    partition = TimeAxisPartition(4, "flow", 1000, overlap=0.0, shift=3.0)
    assert float(partition.block_timesteps[3]) == pytest.approx(604.48, abs=0.02)
    assert float(partition.block_timesteps[2]) == pytest.approx(750.0)


def test_uniform_partition_splits_the_axis_evenly_whatever_the_distribution():
    partition = TimeAxisPartition(2, "flow", 1000, partition="uniform", overlap=0.0, shift=3.0)
    assert partition.block_timesteps.tolist() == [1000.0, 500.0, 0.0]
    # mass of [0, 500): u = 0.5 / (3 - 2·0.5) = 0.25 → Φ(logit 0.25) = Φ(-1.0986) = 0.13596
    assert partition.block_mass(1) == pytest.approx(0.13596, abs=1e-4)


def test_overlap_widens_by_gamma_of_the_block_mass_and_training_draws_stay_inside():
    partition = TimeAxisPartition(4, "ddpm", 1000, overlap=0.1)
    # block 1 = [500, 750) has mass 0.25; γ = 0.1 widens by 0.025 each side → [475, 775]
    assert partition.training_interval(1) == pytest.approx((475.0, 775.0))
    assert partition.training_interval(0) == pytest.approx((725.0, 1000.0))  # clipped at the top
    drawn = partition.sample_training_timesteps(1, 4000, torch.Generator().manual_seed(0))
    assert drawn.dtype == torch.long and int(drawn.min()) >= 475 and int(drawn.max()) <= 774
    flow = TimeAxisPartition(2, "flow", 1000, overlap=0.0, shift=3.0)
    drawn = flow.sample_training_timesteps(0, 4000, torch.Generator().manual_seed(0))
    assert float(drawn.min()) >= 750.0 and float(drawn.max()) <= 1000.0


def test_default_sampling_steps_per_block():
    # DDPMScheduler, 50 "leading" steps: t = 980, 960, ..., 0. Boundaries 750/500/250:
    # block 0 = 760..980 (12), block 1 = 500..740 (13), block 2 = 260..480 (12), block 3 = 0..240 (13)
    assert default_num_inference_steps(DiTPipeline) == 50
    partition = TimeAxisPartition(4, "ddpm", 1000)
    assert sampling_steps_per_block(partition, DDPMScheduler(), 50) == [12, 13, 12, 13]
    # SD3: 28 steps of FlowMatchEuler with shift 3; every step is counted once
    assert default_num_inference_steps(StableDiffusion3Pipeline) == 28
    flow = time_partition_from_scheduler_config(dict(FlowMatchEulerDiscreteScheduler(shift=3.0).config), 2)
    assert flow.time_axis == "flow" and flow.shift == 3.0
    counts = sampling_steps_per_block(flow, FlowMatchEulerDiscreteScheduler(shift=3.0), 28)
    timesteps = FlowMatchEulerDiscreteScheduler(shift=3.0)
    timesteps.set_timesteps(28)
    assert counts == [int((timesteps.timesteps >= 750).sum()), int((timesteps.timesteps < 750).sum())]
    assert sum(counts) == 28


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_blocks": 0}, "num_blocks"),
        ({"num_blocks": 2, "overlap": 1.0}, "overlap"),
        ({"num_blocks": 2, "time_axis": "edm"}, "time_axis"),
        ({"num_blocks": 2, "partition": "uniform_log"}, "partition"),
        ({"num_blocks": 2, "time_axis": "flow", "logit_std": 0.0}, "logit_std"),
    ],
)
def test_bad_settings_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TimeAxisPartition(**kwargs)


def test_timestep_outside_the_axis_is_named():
    with pytest.raises(ValueError, match="timestep must lie in"):
        TimeAxisPartition(2).block_index_for_level(torch.tensor([1500.0]))
