"""EDM preconditioning and the denoising score matching loss weight (Karras et al. 2022, Table 1).

Every continuous-noise family wraps its raw network F with these coefficients:
`D(z, σ, x) = c_skip(σ)·z + c_out(σ)·F(c_in(σ)·z, c_noise(σ), x)`, and weights the loss at σ by
`λ(σ) = (σ² + σ_data²) / (σ·σ_data)²`, which makes the effective target of F unit-variance.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .argument_checks import check_number


def _broadcast_to(sigma: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Reshape a per-sample σ of shape `(batch,)` to broadcast against `reference` `(batch, ...)`."""
    sigma = torch.as_tensor(sigma, dtype=reference.dtype, device=reference.device)
    if sigma.ndim == 0:
        return sigma
    return sigma.reshape(sigma.shape + (1,) * (reference.ndim - sigma.ndim))


@dataclass(frozen=True)
class EDMPreconditioning:
    """The EDM coefficients for a data standard deviation `sigma_data` (paper default 0.5)."""

    sigma_data: float = 0.5

    def __post_init__(self):
        check_number(self.sigma_data, "sigma_data", minimum=0, minimum_exclusive=True)

    def c_skip(self, sigma: torch.Tensor) -> torch.Tensor:
        """σ_d² / (σ² + σ_d²): → 1 as σ → 0, so the denoiser passes a clean input through."""
        return self.sigma_data**2 / (sigma**2 + self.sigma_data**2)

    def c_out(self, sigma: torch.Tensor) -> torch.Tensor:
        """σ·σ_d / √(σ² + σ_d²)."""
        return sigma * self.sigma_data / (sigma**2 + self.sigma_data**2).sqrt()

    def c_in(self, sigma: torch.Tensor) -> torch.Tensor:
        """1 / √(σ² + σ_d²): unit-variance network input."""
        return 1.0 / (sigma**2 + self.sigma_data**2).sqrt()

    def c_noise(self, sigma: torch.Tensor) -> torch.Tensor:
        """¼·ln σ: the noise-level input of the network."""
        return sigma.log() / 4.0

    def loss_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        """λ(σ) = (σ² + σ_d²) / (σ·σ_d)²."""
        return (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2

    def scale_input(self, noisy: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """c_in(σ)·z for z of shape `(batch, ...)` and σ of shape `(batch,)`."""
        return self.c_in(_broadcast_to(sigma, noisy)) * noisy

    def denoise(self, noisy: torch.Tensor, network_output: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """D = c_skip(σ)·z + c_out(σ)·F, with F the raw network output of the shape of z."""
        sigma = _broadcast_to(sigma, noisy)
        return self.c_skip(sigma) * noisy + self.c_out(sigma) * network_output

    def weighted_l2_loss(
        self, denoised: torch.Tensor, target: torch.Tensor, sigma: torch.Tensor
    ) -> torch.Tensor:
        """mean over the batch of λ(σ)·mean‖D − y‖² (per-sample mean over the other dimensions)."""
        per_sample = (denoised.float() - target.float()).pow(2).flatten(1).mean(dim=1)
        return (self.loss_weight(sigma.float()) * per_sample).mean()

    def effective_network_target(self, noisy: torch.Tensor, target: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """(y − c_skip·z) / c_out: what F must output for D to equal y."""
        sigma = _broadcast_to(sigma, noisy)
        return (target - self.c_skip(sigma) * noisy) / self.c_out(sigma)


def add_noise(sample: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The VE forward process z_σ = y + σ·ε, σ of shape `(batch,)` or scalar."""
    return sample + _broadcast_to(sigma, sample) * noise
