"""DiffusionBlocksScheduler: the VE probability-flow ODE split into B blocks (continuous noise).

Training: `sample_training_sigmas(block_index, ...)` draws σ from the truncated log-normal
restricted to a block's overlap-extended interval. Inference: `set_timesteps(N)` builds N sigmas
equally spaced in the truncated CDF (equal steps per block for the equi-probability partition),
and `block_indices[i]` says which block runs model evaluation i. `step` takes the *denoised*
estimate D (the models apply EDM preconditioning themselves) and integrates
`dz/dσ = (z − D) / σ` with Euler or Heun, or takes an ancestral step (`solver="ancestral"`): it draws
z(σ_next) from the Gaussian bridge q(z_σ_next | x_0, z_σ) around a clean estimate x_0, the reverse
process of DDPM written for the VE noise z = x + σ·ε (docs/method.md, 'Ancestral sampling').

Note: Eq. 4/5 of the paper print the Euler update with the wrong sign; the update used here,
`z ← z + (σ_next − σ)·(z − D)/σ`, is the probability-flow ODE of EDM (Karras et al. 2022, Alg. 1).
"""

from __future__ import annotations

from typing import Literal

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin, SchedulerOutput

from ..argument_checks import check_values_in_range
from ..partition import TIMESTEP_SPACINGS, format_partition_table, partition_from
from ..preconditioning import EDMPreconditioning, add_noise

SOLVERS = ("euler", "heun", "ancestral")


class DiffusionBlocksScheduler(SchedulerMixin, ConfigMixin):
    """Noise partition, training-σ sampler and block-routed ODE sampler of DiffusionBlocks.

    Args:
        num_blocks (`int`, defaults to 3): number of blocks B.
        sigma_min (`float`, defaults to 0.002): lowest noise level (EDM).
        sigma_max (`float`, defaults to 80.0): highest noise level; sampling starts from σ_max·ε.
        sigma_data (`float`, defaults to 0.5): data standard deviation of EDM preconditioning.
        p_mean (`float`, defaults to -1.2): mean of ln σ of the training noise distribution.
        p_std (`float`, defaults to 1.2): standard deviation of ln σ.
        partition (`"equiprobable" | "uniform_linear" | "uniform_log"`, defaults to `"equiprobable"`):
            how the σ range is split (the paper's method, and its uniform ablations in σ and ln σ).
        overlap (`float`, defaults to 0.05): block overlap γ used for training (0.1 for text).
        solver (`"euler" | "heun"`, defaults to `"euler"`): first-order Euler (the paper) or a
            second-order Heun step (two evaluations per step, the corrector on the same block as the
            predictor). Heun is applied to the ODE in the coordinates x = z/σ, u = 1/σ, where it
            reads dx/du = D: the trapezoid then averages D, is exact when D is constant over a step,
            and stays accurate on the CDF-spaced grid, whose first step is long (80 → 3.4 for 48
            steps; the trapezoid in σ errs by 20% there on Gaussian data).
        timestep_spacing (`"edges" | "midpoints"`, defaults to `"edges"`): where the evaluations after
            the first sit in their cells of the CDF grid (see `NoisePartition.inference_sigmas`). Edges
            put block boundaries on the grid; midpoints evaluate every block inside its interval, which
            matters with few steps (the ViT classifier's one step per block: +0.5 to +1.3 points).
            `"ancestral"`: one evaluation per step; `step` takes a clean estimate x_0 (the denoised D, or for
            discrete targets the embedding of a token drawn from the readout) and returns a draw of
            z(σ_next) = x_0 + r²·(z − x_0) + σ_next·√(1 − r²)·ε, r = σ_next/σ, with ε from `generator`:
            the exact posterior q(z_σ_next | x_0, z_σ) of the VE process, and x_0 itself at σ_next = 0.
    """

    _compatibles: list = []
    order = 1

    @register_to_config
    def __init__(
        self,
        num_blocks: int = 3,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        sigma_data: float = 0.5,
        p_mean: float = -1.2,
        p_std: float = 1.2,
        partition: Literal["equiprobable", "uniform_linear", "uniform_log"] = "equiprobable",
        overlap: float = 0.05,
        solver: Literal["euler", "heun"] = "euler",
        timestep_spacing: Literal["edges", "midpoints"] = "edges",
    ):
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {list(SOLVERS)}, got {solver!r}.")
        if timestep_spacing not in TIMESTEP_SPACINGS:
            raise ValueError(f"timestep_spacing must be one of {list(TIMESTEP_SPACINGS)}, got {timestep_spacing!r}.")
        self.noise_partition = partition_from(self.config)
        self.preconditioning = EDMPreconditioning(sigma_data=sigma_data)
        self.order = 2 if solver == "heun" else 1
        self.num_inference_steps: int | None = None
        self.sigmas: torch.Tensor | None = None
        self.timesteps: torch.Tensor | None = None
        self.block_indices: torch.Tensor | None = None
        self._step_index: int | None = None
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = None
        # (num_inference_steps, device) → (sigmas, timesteps, block_indices): an autoregressive sampler
        # sets the same grid once per generated token, and building it costs as much as a small layer.
        self._grids: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    # ---- partition -------------------------------------------------------------------------
    @property
    def block_sigmas(self) -> torch.Tensor:
        """Boundaries `(num_blocks + 1,)`, decreasing from σ_max to σ_min; block b covers `[block_sigmas[b+1], block_sigmas[b]]`."""
        return self.noise_partition.block_sigmas

    @property
    def init_noise_sigma(self) -> float:
        """Sampling starts from σ_max·ε."""
        return self.config.sigma_max

    def block_index_for_sigma(self, sigma: torch.Tensor | float) -> torch.Tensor:
        """The block that owns σ at inference (block b owns `(block_sigmas[b+1], block_sigmas[b]]`): the
        partition's `block_index_for_level`, kept under the σ name because it is this scheduler's documented API."""
        return self.noise_partition.block_index_for_level(sigma)

    def training_interval(self, block_index: int) -> tuple[float, float]:
        """The overlap-extended σ interval block `block_index` trains on."""
        return self.noise_partition.training_interval(block_index)

    def sample_training_sigmas(
        self, block_index: int, batch_size: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """σ of shape `(batch_size,)` from p_noise restricted to the block's overlap-extended interval."""
        return self.noise_partition.sample_training_sigmas(block_index, batch_size, generator)

    def partition_table(self, layers_per_block: list[int] | None = None) -> str:
        """A printable table block ↔ σ interval ↔ training interval ↔ probability mass [↔ layers]."""
        return format_partition_table(self.noise_partition, layers_per_block)

    # ---- forward process -------------------------------------------------------------------
    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """z_σ = y + σ·ε; `timesteps` are the noise levels σ, shape `(batch,)` or scalar, finite and >= 0."""
        check_values_in_range(timesteps, "timesteps (the noise levels sigma)", minimum=0)
        return add_noise(original_samples, noise, timesteps)

    def scale_model_input(self, sample: torch.Tensor, timestep: torch.Tensor | float | None = None) -> torch.Tensor:
        """Identity: the DiffusionBlocks models apply c_in themselves."""
        return sample

    # ---- sampling --------------------------------------------------------------------------
    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        """Build the CDF-spaced σ grid of `num_inference_steps` steps and the block of every model evaluation.

        Sets `sigmas` (`num_inference_steps + 1`, last 0), `timesteps` (the σ of each model
        evaluation) and `block_indices` (the block that runs it). Heun evaluates twice per step but
        once on the final step to σ = 0. `num_inference_steps` is an integer >= 1; fewer steps than
        blocks skip blocks, which the samplers built on this scheduler refuse (`check_num_inference_steps`)
        except the recurrent-depth LM, whose K = 1 readout is its predictive distribution.
        """
        key = (num_inference_steps, str(device))
        if key not in self._grids:
            sigmas = self.noise_partition.inference_sigmas(num_inference_steps, self.config.timestep_spacing)
            step_blocks = self.noise_partition.block_index_for_level(sigmas[:-1])
            if self.config.solver != "heun":
                timesteps, block_indices = sigmas[:-1], step_blocks
            else:
                # predictor at σ_i and corrector at σ_{i+1}, both on the block of step i
                timesteps = torch.stack([sigmas[:-1], sigmas[1:]], dim=1).flatten()[:-1]
                block_indices = step_blocks.repeat_interleave(2)[:-1]
            self._grids[key] = (
                sigmas.to(device=device, dtype=torch.float32),
                timesteps.to(device=device, dtype=torch.float32),
                block_indices.to(device=device),
            )
        self.num_inference_steps = num_inference_steps
        self.sigmas, self.timesteps, self.block_indices = self._grids[key]
        self._step_index = 0
        self._pending = None

    @property
    def step_index(self) -> int | None:
        """Index of the current step in `sigmas` (None before `set_timesteps`)."""
        return self._step_index

    def step(
        self,
        model_output: torch.Tensor,
        timestep: torch.Tensor | float,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple[torch.Tensor]:
        """Advance the sampler by one model evaluation.

        Args:
            model_output (`torch.Tensor`): the denoised estimate D(z, σ) at `timestep`, shape of `sample`
                (`"ancestral"`: any clean estimate x_0, e.g. the embedding of a token drawn from the readout).
            timestep (`float` or `torch.Tensor`): the σ this evaluation was made at (`self.timesteps[i]`).
            sample (`torch.Tensor`): the current z the model was evaluated on.
            generator (`torch.Generator`, *optional*, `"ancestral"` only): source of the fresh noise, drawn on
                the generator's device (torch's global generator when None).
        """
        if self._step_index is None:
            raise ValueError("call set_timesteps(num_inference_steps) before step().")
        if self._step_index >= self.num_inference_steps:
            raise ValueError(f"all {self.num_inference_steps} steps are done; call set_timesteps again.")
        if model_output.shape != sample.shape:  # broadcasting would silently mix samples
            raise ValueError(
                f"model_output must have the shape of sample {tuple(sample.shape)}, got {tuple(model_output.shape)}."
            )
        sigma, sigma_next = self.sigmas[self._step_index], self.sigmas[self._step_index + 1]
        expected = sigma_next if self._pending is not None else sigma
        expected_value, given_value = float(expected), float(timestep)
        # torch.isclose's rule (rtol 1e-5, atol 1e-8) on Python floats: a step costs a few tensor ops, not twenty
        if not abs(given_value - expected_value) <= 1e-8 + 1e-5 * abs(expected_value):
            raise ValueError(f"step() expected the model output at sigma={expected_value}, got timestep={given_value}.")

        if self.config.solver == "ancestral":
            next_sample = self._ancestral_step(model_output, sigma, sigma_next, sample, generator)
            self._step_index += 1
        elif self._pending is None:
            derivative = (sample - model_output) / sigma  # dz/dσ = (z − D)/σ
            next_sample = sample + (sigma_next - sigma) * derivative
            if self.config.solver == "heun" and sigma_next > 0:
                self._pending = (sample, model_output)  # corrector evaluates D at (next_sample, σ_next)
            else:
                self._step_index += 1
        else:
            # Trapezoid on D in x = z/σ, u = 1/σ, where the ODE reads dx/du = D (see the class docstring).
            start_sample, start_denoised = self._pending
            ratio = sigma_next / sigma
            next_sample = ratio * start_sample + (1 - ratio) * 0.5 * (start_denoised + model_output)
            self._pending = None
            self._step_index += 1
        next_sample = next_sample.to(model_output.dtype)
        if not return_dict:
            return (next_sample,)
        return SchedulerOutput(prev_sample=next_sample)

    @staticmethod
    def _ancestral_step(clean, sigma, sigma_next, sample, generator):
        """A draw of q(z_σ_next | x_0 = clean, z_σ = sample) = N(x_0 + r²(z − x_0), σ_next²(1 − r²)), r = σ_next/σ."""
        ratio_squared = (sigma_next / sigma) ** 2
        mean = clean + ratio_squared * (sample - clean)
        if sigma_next == 0:
            return mean
        device = generator.device if generator is not None else sample.device
        noise = torch.randn(sample.shape, generator=generator, device=device, dtype=torch.float32).to(sample.device)
        return mean + sigma_next * (1 - ratio_squared).sqrt() * noise.to(mean.dtype)

    def __len__(self) -> int:
        return self.config.num_blocks
