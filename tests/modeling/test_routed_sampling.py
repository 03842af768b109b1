"""integrate_routed_ode: every evaluation on the block that owns its σ, the scheduler's steps, the last readout."""

import pytest
import torch

from hf_diffusionblocks import DiffusionBlocksScheduler
from hf_diffusionblocks.modeling.routed_sampling import integrate_routed_ode


@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_routes_each_evaluation_and_matches_the_written_out_loop(solver):
    scheduler = DiffusionBlocksScheduler(num_blocks=3, solver=solver)
    scheduler.set_timesteps(6)
    start = torch.randn(5, 2, generator=torch.Generator().manual_seed(0)) * scheduler.init_noise_sigma
    calls, wrapped = [], []

    def denoise(block_index, sigma, sample, evaluation_index):
        calls.append((block_index, float(sigma), evaluation_index))
        return 0.25 / (0.25 + sigma**2) * sample, evaluation_index   # exact denoiser of N(0, 0.25) data

    def progress(evaluations):
        wrapped.append(len(evaluations))
        return evaluations

    sample, readout = integrate_routed_ode(scheduler, start, denoise, progress=progress)
    assert [call[0] for call in calls] == scheduler.block_indices.tolist()
    assert [call[1] for call in calls] == pytest.approx(scheduler.timesteps.tolist())
    assert readout == len(calls) - 1 and wrapped == [len(calls)]

    reference = DiffusionBlocksScheduler(num_blocks=3, solver=solver)
    reference.set_timesteps(6)
    expected = start
    for sigma in reference.timesteps:
        expected = reference.step(0.25 / (0.25 + sigma**2) * expected, sigma, expected).prev_sample
    assert torch.equal(sample, expected)


def test_needs_set_timesteps():
    with pytest.raises(ValueError, match="set_timesteps"):
        integrate_routed_ode(DiffusionBlocksScheduler(), torch.zeros(1), lambda *args: (args[2], None))


def test_ancestral_steps_draw_their_noise_from_the_generator():
    def run(seed):
        scheduler = DiffusionBlocksScheduler(num_blocks=3, solver="ancestral")
        scheduler.set_timesteps(4)
        start = torch.ones(2, 3) * scheduler.init_noise_sigma
        return integrate_routed_ode(scheduler, start, lambda b, sigma, sample, i: (0.5 * sample, None),
                                    generator=torch.Generator().manual_seed(seed))[0]

    reference = DiffusionBlocksScheduler(num_blocks=3, solver="ancestral")
    reference.set_timesteps(4)
    generator, expected = torch.Generator().manual_seed(0), torch.ones(2, 3) * reference.init_noise_sigma
    for sigma in reference.timesteps:
        expected = reference.step(0.5 * expected, sigma, expected, generator=generator).prev_sample
    assert torch.equal(run(0), expected)
    assert not torch.equal(run(0), run(1))


def test_without_the_final_step_the_loop_ends_at_the_last_evaluation():
    scheduler = DiffusionBlocksScheduler(num_blocks=2)
    scheduler.set_timesteps(3)
    start = torch.randn(4, 2, generator=torch.Generator().manual_seed(0)) * scheduler.init_noise_sigma
    seen = []

    def denoise(block_index, sigma, sample, evaluation_index):
        seen.append(sample)
        last = evaluation_index == len(scheduler.timesteps) - 1
        return (None if last else 0.5 * sample), evaluation_index   # no estimate where no step follows

    sample, readout = integrate_routed_ode(scheduler, start, denoise, final_step=False)
    assert readout == 2 and len(seen) == 3
    assert sample is seen[-1]                                         # the state the last evaluation saw
    assert scheduler.step_index == 2                                  # two steps taken, not three
