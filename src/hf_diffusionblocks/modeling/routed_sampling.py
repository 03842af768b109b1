"""The block-routed sampling loop every continuous-noise family runs: one ODE step per model evaluation,
each evaluation on the block that owns its σ.

The DiT pipeline (images), the causal LM (the next token's embedding), the ViT classifier (the label)
and the recurrent-depth LM (the core's state) differ only in what one evaluation computes; the loop over
the scheduler's grid, the routing and the step are written here once.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch

from ..schedulers.scheduling_diffusion_blocks import DiffusionBlocksScheduler

# (block_index, sigma, sample, evaluation_index) -> (denoised estimate D of `sample`'s shape, the readout to keep)
Denoiser = Callable[[int, torch.Tensor, torch.Tensor, int], tuple[torch.Tensor, Any]]


def integrate_routed_ode(
    scheduler: DiffusionBlocksScheduler,
    sample: torch.Tensor,
    denoise: Denoiser,
    progress: Callable[[list], Iterable] | None = None,
    generator: torch.Generator | None = None,
    final_step: bool = True,
) -> tuple[torch.Tensor, Any]:
    """Integrate from `sample` over the scheduler's grid (after `set_timesteps`); returns the final sample and
    the readout of the last evaluation (e.g. its logits).

    Args:
        scheduler (`DiffusionBlocksScheduler`): with `set_timesteps` called; its `block_indices[i]` is the
            block that runs evaluation i.
        sample (`torch.Tensor`): the starting point, usually σ_max·ε.
        denoise (`Callable`): `(block_index, sigma, sample, evaluation_index) -> (denoised, readout)`.
        progress (`Callable`, *optional*): wraps the list of `(sigma, block_index)` evaluations, e.g. a
            pipeline's `progress_bar`.
        generator (`torch.Generator`, *optional*): handed to every `scheduler.step`: the source of the fresh
            noise of an ancestral step (torch's global generator when None); Euler and Heun draw nothing.
        final_step (`bool`, defaults to True): False stops after the last evaluation, without the step from
            its σ to 0, and returns the sample the last evaluation saw. For a sampler whose result is the
            last readout (the causal LM's next-token logits): the state at σ = 0 is never used, and a clean
            estimate drawn at random (ancestral) would move `generator` for nothing. The last evaluation's
            `denoise` may then return None as its denoised estimate.
    """
    if scheduler.timesteps is None:
        raise ValueError("call scheduler.set_timesteps(num_inference_steps) before integrating.")
    evaluations = list(zip(scheduler.timesteps, scheduler.block_indices.tolist()))
    readout, last = None, len(evaluations) - 1
    for index, (sigma, block_index) in enumerate(progress(evaluations) if progress is not None else evaluations):
        denoised, readout = denoise(block_index, sigma, sample, index)
        if index == last and not final_step:
            break
        sample = scheduler.step(denoised, sigma, sample, generator=generator).prev_sample
    return sample, readout
