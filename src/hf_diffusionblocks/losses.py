"""Per-block training objectives.

`BlockDenoisingLoss` is DiffusionBlocks' local objective for continuous targets (Eq. 6): for block
b, draw σ from p_noise restricted to the block's overlap-extended interval, noise the target,
run block b alone, and weight the L2 error by λ(σ). With `num_blocks=1` it is the ordinary EDM
loss of end-to-end training.
"""

from __future__ import annotations

import torch

from .partition import NoisePartition
from .preconditioning import EDMPreconditioning, add_noise


class BlockDenoisingLoss:
    """E_{σ ~ p_noise|block b, ε} [λ(σ)·‖D_b(y + σε, σ, x) − y‖²].

    Args:
        noise_partition: the partition the model was configured with.
        preconditioning: the EDM coefficients (σ_data).
    """

    def __init__(self, noise_partition: NoisePartition, preconditioning: EDMPreconditioning):
        self.noise_partition = noise_partition
        self.preconditioning = preconditioning

    def __call__(
        self,
        model,
        block_index: int,
        target: torch.Tensor,
        generator: torch.Generator | None = None,
        **conditioning,
    ) -> torch.Tensor:
        """`model.forward_block(block_index, noisy, sigma, **conditioning).sample` must return D; target `(batch, ...)`."""
        sigma = self.noise_partition.sample_training_sigmas(block_index, target.shape[0], generator)
        sigma = sigma.to(device=target.device, dtype=target.dtype)
        noise = torch.randn(target.shape, generator=generator, dtype=target.dtype).to(target.device)
        denoised = model.forward_block(block_index, add_noise(target, noise, sigma), sigma, **conditioning).sample
        return self.preconditioning.weighted_l2_loss(denoised, target, sigma)
