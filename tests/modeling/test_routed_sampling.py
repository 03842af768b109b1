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
