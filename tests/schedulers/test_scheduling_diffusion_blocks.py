"""DiffusionBlocksScheduler: config round trip, grid and routing, sampler correctness on Gaussian data."""

import pytest
import torch
from scheduler_common import SchedulerCommonTests

from hf_diffusionblocks import DiffusionBlocksScheduler


def gaussian_denoiser(variance: float):
    """The exact denoiser of y ~ N(0, variance·I): D(z, σ) = variance / (variance + σ²) · z."""
    return lambda z, sigma: variance / (variance + sigma**2) * z


def sample_gaussian(scheduler, num_inference_steps, variance, num_samples=20000, seed=0):
    denoiser = gaussian_denoiser(variance)
    scheduler.set_timesteps(num_inference_steps)
    generator = torch.Generator().manual_seed(seed)
    sample = torch.randn(num_samples, 1, generator=generator, dtype=torch.float64) * scheduler.init_noise_sigma
    calls = []
    for sigma, block_index in zip(scheduler.timesteps, scheduler.block_indices.tolist()):
        calls.append((float(sigma), block_index))
        denoised = denoiser(sample, sigma.double())
        sample = scheduler.step(denoised, sigma, sample).prev_sample
    return sample, calls


def test_save_and_load_round_trip(tmp_path):
    scheduler = DiffusionBlocksScheduler(num_blocks=4, partition="uniform_log", overlap=0.1, solver="heun")
    scheduler.save_pretrained(tmp_path)
    loaded = DiffusionBlocksScheduler.from_pretrained(tmp_path)
    public = lambda config: {k: v for k, v in config.items() if not k.startswith('_')}
    assert public(loaded.config) == public(scheduler.config)
    assert torch.equal(loaded.block_sigmas, scheduler.block_sigmas)


def test_set_timesteps_routes_equal_steps_to_every_block():
    scheduler = DiffusionBlocksScheduler(num_blocks=3)
    scheduler.set_timesteps(12)
    assert scheduler.sigmas.shape == (13,)
    assert scheduler.block_indices.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert torch.all(scheduler.timesteps[:-1] > scheduler.timesteps[1:])


def test_midpoint_spacing_runs_one_step_inside_each_block_and_still_samples():
    scheduler = DiffusionBlocksScheduler(num_blocks=3, timestep_spacing="midpoints")
    scheduler.set_timesteps(3)
    assert scheduler.block_indices.tolist() == [0, 1, 2]
    assert torch.equal(scheduler.sigmas.double(), scheduler.noise_partition.inference_sigmas(3, "midpoints").float().double())
    edges = DiffusionBlocksScheduler(num_blocks=3)
    edges.set_timesteps(3)
    assert scheduler.sigmas[0] == edges.sigmas[0] == 80.0 and not torch.equal(scheduler.sigmas, edges.sigmas)
    sample, _ = sample_gaussian(DiffusionBlocksScheduler(num_blocks=3, timestep_spacing="midpoints"), 48, variance=0.25)
    assert float(sample.std()) == pytest.approx(0.5, rel=0.05)


def test_heun_evaluations_run_on_the_block_of_their_step():
    scheduler = DiffusionBlocksScheduler(num_blocks=3, solver="heun")
    scheduler.set_timesteps(6)
    assert len(scheduler.timesteps) == 2 * 6 - 1
    assert scheduler.block_indices.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2]


@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_sampler_recovers_gaussian_variance(solver):
    variance = 0.25
    scheduler = DiffusionBlocksScheduler(num_blocks=3, solver=solver)
    sample, calls = sample_gaussian(scheduler, 48, variance)
    assert float(sample.var()) == pytest.approx(variance, rel=0.05)
    # every block is used, in order 0 → B−1
    blocks = [block for _, block in calls]
    assert blocks == sorted(blocks) and set(blocks) == {0, 1, 2}


def test_heun_is_closer_than_euler_at_equal_steps():
    variance, steps = 0.25, 12
    euler, _ = sample_gaussian(DiffusionBlocksScheduler(num_blocks=3, solver="euler"), steps, variance)
    heun, _ = sample_gaussian(DiffusionBlocksScheduler(num_blocks=3, solver="heun"), steps, variance)
    # the exact ODE maps N(0, σ_max²) to N(0, variance·σ_max²/(variance + σ_max²)) ≈ variance
    assert abs(float(heun.var()) - variance) < abs(float(euler.var()) - variance)


def sample_gaussian_ancestral(num_inference_steps, variance, clean_estimate, num_samples=40000, seed=0):
    """Ancestral sampling of y ~ N(0, variance); `clean_estimate` is "posterior_sample" (x_0 drawn from the
    exact posterior p(y | z) = N(D, variance·σ²/(variance + σ²))) or "posterior_mean" (x_0 = D)."""
    scheduler = DiffusionBlocksScheduler(num_blocks=3, solver="ancestral")
    scheduler.set_timesteps(num_inference_steps)
    generator = torch.Generator().manual_seed(seed)
    sample = torch.randn(num_samples, 1, generator=generator, dtype=torch.float64) * scheduler.init_noise_sigma
    for sigma in scheduler.timesteps:
        sigma = sigma.double()
        clean = gaussian_denoiser(variance)(sample, sigma)
        if clean_estimate == "posterior_sample":
            posterior_std = (variance * sigma**2 / (variance + sigma**2)).sqrt()
            clean = clean + posterior_std * torch.randn(sample.shape, generator=generator, dtype=torch.float64)
        sample = scheduler.step(clean, sigma, sample, generator=generator).prev_sample
    return sample


@pytest.mark.parametrize("num_inference_steps", [3, 12])
def test_ancestral_step_is_exact_with_posterior_samples(num_inference_steps):
    # q(z_σ' | x_0, z_σ) is the exact bridge: with x_0 drawn from the exact posterior every step lands on
    # the marginal at σ', so even one step per block ends at the data distribution (Euler at 3 steps does not)
    variance = 0.25
    sample = sample_gaussian_ancestral(num_inference_steps, variance, "posterior_sample")
    assert float(sample.var()) == pytest.approx(variance, rel=0.03)
    euler, _ = sample_gaussian(DiffusionBlocksScheduler(num_blocks=3), 3, variance)
    assert abs(float(euler.var()) - variance) > 0.1 * variance


def test_ancestral_step_with_the_posterior_mean_loses_the_posterior_variance():
    # x_0 = D drops Var(x | z)·(1 − r²)² from every step: the chain ends too narrow
    variance = 0.25
    assert float(sample_gaussian_ancestral(3, variance, "posterior_mean").var()) < 0.8 * variance


def test_ancestral_step_draws_from_its_generator_and_ends_on_the_clean_estimate():
    scheduler = DiffusionBlocksScheduler(num_blocks=2, solver="ancestral")
    scheduler.set_timesteps(2)
    assert scheduler.timesteps.shape == (2,) and scheduler.block_indices.tolist() == [0, 1]
    sample, clean = torch.randn(4, 3), torch.ones(4, 3)
    draws = []
    for _ in range(2):
        scheduler.set_timesteps(2)
        draws.append(scheduler.step(clean, scheduler.timesteps[0], sample, generator=torch.Generator().manual_seed(1)).prev_sample)
    assert torch.equal(draws[0], draws[1])
    last = scheduler.step(clean, scheduler.timesteps[1], draws[0]).prev_sample
    assert torch.equal(last, clean)


def test_step_checks_its_inputs():
    scheduler = DiffusionBlocksScheduler(num_blocks=2)
    with pytest.raises(ValueError, match="set_timesteps"):
        scheduler.step(torch.zeros(1), 80.0, torch.zeros(1))
    scheduler.set_timesteps(2)
    with pytest.raises(ValueError, match="expected the model output at sigma"):
        scheduler.step(torch.zeros(1), 1.0, torch.zeros(1))


def test_add_noise_and_training_sigmas():
    scheduler = DiffusionBlocksScheduler(num_blocks=3)
    clean, noise = torch.ones(2, 3), torch.ones(2, 3)
    noisy = scheduler.add_noise(clean, noise, torch.tensor([0.5, 2.0]))
    assert noisy[:, 0].tolist() == [1.5, 3.0]
    sigmas = scheduler.sample_training_sigmas(2, 100, torch.Generator().manual_seed(0))
    low, high = scheduler.training_interval(2)
    assert sigmas.min() >= low and sigmas.max() <= high
    assert scheduler.block_index_for_sigma(torch.tensor([80.0, 0.3, 0.002])).tolist() == [0, 1, 2]


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"num_blocks": 0}, "num_blocks"),
        ({"sigma_min": 90.0}, "sigma_min"),
        ({"partition": "quantile"}, "partition"),
        ({"overlap": -1.0}, "overlap"),
        ({"solver": "rk4"}, "solver"),
        ({"timestep_spacing": "leading"}, "timestep_spacing"),
    ],
)
def test_bad_config_raises_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        DiffusionBlocksScheduler(**kwargs)


def test_block_index_out_of_range():
    with pytest.raises(ValueError, match="block_index"):
        DiffusionBlocksScheduler(num_blocks=3).sample_training_sigmas(3, 4)


def test_partition_table():
    table = DiffusionBlocksScheduler(num_blocks=3).partition_table([4, 4, 4])
    assert "0.1796" in table and "0.5050" in table and "4-7" in table


class TestDiffusionBlocksSchedulerCommon(SchedulerCommonTests):
    """The common scheduler tests; the model output is the exact denoiser of N(0, 0.25) data."""

    scheduler_class = DiffusionBlocksScheduler
    config = {"num_blocks": 3, "partition": "equiprobable", "overlap": 0.05}

    def clean_sample(self) -> torch.Tensor:
        return torch.randn(4, 2, 3, generator=torch.Generator().manual_seed(0)) * 0.5

    def model_output(self, sample, timestep, generator):
        return gaussian_denoiser(0.25)(sample, torch.as_tensor(timestep))

    def step(self, scheduler, model_output, timestep, sample, generator, return_dict=True):
        return scheduler.step(model_output, timestep, sample, return_dict=return_dict)

    def add_noise(self, scheduler, sample, levels, generator):
        noise = torch.randn(sample.shape, generator=generator)
        return scheduler.add_noise(sample, noise, levels)


class TestDiffusionBlocksHeunSchedulerCommon(TestDiffusionBlocksSchedulerCommon):
    config = {"num_blocks": 4, "partition": "uniform_log", "solver": "heun", "timestep_spacing": "midpoints"}
    equal_steps_per_block = False  # uniform in ln σ is not uniform in probability mass, and Heun's last step is single


def test_set_timesteps_again_restarts_on_the_same_grid():
    """The grid of a step count is built once per scheduler (generation sets it again for every token)."""
    scheduler = DiffusionBlocksScheduler(num_blocks=4)
    scheduler.set_timesteps(8)
    sigmas, block_indices = scheduler.sigmas.clone(), scheduler.block_indices.clone()
    sample = torch.randn(2, 3)
    for sigma in scheduler.timesteps:
        sample = scheduler.step(torch.zeros_like(sample), sigma, sample).prev_sample
    scheduler.set_timesteps(4)
    assert len(scheduler.timesteps) == 4 and scheduler.step_index == 0
    scheduler.set_timesteps(8)
    assert scheduler.step_index == 0
    assert torch.equal(scheduler.sigmas, sigmas) and torch.equal(scheduler.block_indices, block_indices)
    fresh = DiffusionBlocksScheduler(num_blocks=4)
    fresh.set_timesteps(8)
    assert torch.equal(fresh.sigmas, sigmas)
