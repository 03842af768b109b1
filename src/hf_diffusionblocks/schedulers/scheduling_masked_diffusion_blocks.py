"""MaskedDiffusionBlocksScheduler: masked (absorbing-state) diffusion split into B blocks.

Each token is masked independently with probability 1 − α(t), t ∈ [0, 1] (MD4 / MDLM). The
continuous-time NELBO is `∫₀¹ w(t) E[Σ_masked −log p(x₀ | x_t)] dt` with
`w(t) = −α'(t) / (1 − α(t))`. Blocks take equal decrements of α (DiffusionBlocks, Sec. 4.3):
the boundary between blocks is where α(t) = k / B. Block 0 owns the noisiest interval (t near 1),
so `block_times` decreases from 1 to 0 and block b covers `[block_times[b+1], block_times[b]]`.

Per-block training draws t uniformly in the block's interval and weights the loss by
`(t_high − t_low) · w(t)`; the B per-block expectations then add up to the full NELBO.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin, SchedulerOutput

from ..argument_checks import check_block_index, check_integer, check_number, check_values_in_range

SCHEDULES = ("linear", "cosine")


def _rand(shape: torch.Size, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """U(0, 1) drawn on the generator's device (so a CPU generator works with GPU tensors), then moved."""
    draw_device = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=draw_device).to(device)


class MaskedDiffusionBlocksScheduler(SchedulerMixin, ConfigMixin):
    """Masking schedule, block partition in time (a `partition.BlockPartition` over t), and ancestral unmasking
    sampler.

    Args:
        num_blocks (`int`, defaults to 3): number of blocks B (paper: 3 on text8).
        schedule (`"linear" | "cosine"`, defaults to `"linear"`): α(t) = 1 − t, or
            α(t) = 1 − cos(π/2 · (1 − t)).
    """

    _compatibles: list = []
    order = 1

    @register_to_config
    def __init__(self, num_blocks: int = 3, schedule: Literal["linear", "cosine"] = "linear"):
        check_integer(num_blocks, "num_blocks", minimum=1)
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {schedule!r}.")
        self.num_inference_steps: int | None = None
        self.times: torch.Tensor | None = None
        self.timesteps: torch.Tensor | None = None
        self.block_indices: torch.Tensor | None = None
        self._step_index: int | None = None

    # ---- the masking schedule --------------------------------------------------------------
    def alpha(self, t: torch.Tensor | float) -> torch.Tensor:
        """α(t): the probability that a token is still unmasked at time t."""
        t = torch.as_tensor(t, dtype=torch.float64)
        if self.config.schedule == "linear":
            return 1.0 - t
        return 1.0 - torch.cos(0.5 * math.pi * (1.0 - t))

    def alpha_derivative(self, t: torch.Tensor | float) -> torch.Tensor:
        """α'(t)."""
        t = torch.as_tensor(t, dtype=torch.float64)
        if self.config.schedule == "linear":
            return -torch.ones_like(t)
        return -0.5 * math.pi * torch.sin(0.5 * math.pi * (1.0 - t))

    def time_for_alpha(self, alpha: torch.Tensor | float) -> torch.Tensor:
        """The inverse of α(t)."""
        alpha = torch.as_tensor(alpha, dtype=torch.float64)
        if self.config.schedule == "linear":
            return 1.0 - alpha
        return 1.0 - (2.0 / math.pi) * torch.arccos(1.0 - alpha)

    def nelbo_weight(self, t: torch.Tensor) -> torch.Tensor:
        """w(t) = −α'(t) / (1 − α(t)), the weight of the masked-token cross-entropy (1/t for linear)."""
        t = torch.as_tensor(t, dtype=torch.float64)
        return -self.alpha_derivative(t) / (1.0 - self.alpha(t))

    # ---- the partition ---------------------------------------------------------------------
    @property
    def block_times(self) -> torch.Tensor:
        """Boundaries `(num_blocks + 1,)`, decreasing from 1 to 0, with α(block_times[k]) = k / B."""
        alphas = torch.linspace(0.0, 1.0, self.config.num_blocks + 1, dtype=torch.float64)
        times = self.time_for_alpha(alphas)
        times[0], times[-1] = 1.0, 0.0
        return times

    @property
    def num_blocks(self) -> int:
        """B."""
        return self.config.num_blocks

    def check_block_index(self, block_index: int) -> None:
        check_block_index(block_index, self.config.num_blocks)

    def block_interval(self, block_index: int) -> tuple[float, float]:
        """(t_low, t_high) of `block_index`."""
        self.check_block_index(block_index)
        times = self.block_times
        return float(times[block_index + 1]), float(times[block_index])

    def block_index_for_level(self, level: torch.Tensor | float) -> torch.Tensor:
        """The block that owns time t = `level`: block b owns `(block_times[b+1], block_times[b]]`; t = 0 goes to
        the last block."""
        t = torch.as_tensor(level, dtype=torch.float64)
        check_values_in_range(t, "t", 0, 1)
        inner_increasing = self.block_times[1:-1].flip(0)
        return (self.config.num_blocks - 1 - torch.searchsorted(inner_increasing, t, right=False)).long()

    def block_index_for_time(self, t: torch.Tensor | float) -> torch.Tensor:
        """The block that owns t: `block_index_for_level` under the name of the masking time axis, kept because
        it is this scheduler's documented API."""
        return self.block_index_for_level(t)

    def training_loss_weight(self, block_index: int, t: torch.Tensor) -> torch.Tensor:
        """(t_high − t_low)·w(t): makes the B per-block losses add up to the NELBO; t in (0, 1] (w(0) is infinite)."""
        check_values_in_range(t, "t", 0, 1, minimum_exclusive=True)
        low, high = self.block_interval(block_index)
        return ((high - low) * self.nelbo_weight(t)).float()

    def add_noise(
        self, original_samples: torch.Tensor, t: torch.Tensor, mask_token_id: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask each token with probability 1 − α(t), t in [0, 1]. Returns (noisy ids, boolean mask of masked positions)."""
        # a NaN t would make every comparison with α(t) false: nothing masked, silently
        check_values_in_range(t, "t", 0, 1)
        keep_probability = self.alpha(t).to(torch.float32).reshape(-1, *([1] * (original_samples.ndim - 1)))
        uniform = _rand(original_samples.shape, generator, original_samples.device)
        masked = uniform >= keep_probability.to(original_samples.device)
        return torch.where(masked, torch.full_like(original_samples, mask_token_id), original_samples), masked

    # ---- sampling --------------------------------------------------------------------------
    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        """Times equally spaced in α from t=1 to t=0 (`num_inference_steps + 1` values); the block of each step."""
        num_inference_steps = check_integer(num_inference_steps, "num_inference_steps", minimum=1)
        alphas = torch.linspace(0.0, 1.0, num_inference_steps + 1, dtype=torch.float64)
        times = self.time_for_alpha(alphas)
        times[0], times[-1] = 1.0, 0.0
        if num_inference_steps % self.config.num_blocks == 0:
            stride = num_inference_steps // self.config.num_blocks
            times[::stride] = self.block_times
        self.num_inference_steps = num_inference_steps
        self.times = times.to(device=device, dtype=torch.float32)
        self.timesteps = self.times[:-1]
        self.block_indices = self.block_index_for_level(times[:-1]).to(device)
        self._step_index = 0

    @property
    def step_index(self) -> int | None:
        return self._step_index

    def step(
        self,
        model_output: torch.Tensor,
        timestep: torch.Tensor | float,
        sample: torch.Tensor,
        mask_token_id: int,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple[torch.Tensor]:
        """Ancestral unmasking from t to s < t.

        Each masked token is revealed with probability (α(s) − α(t)) / (1 − α(t)), its value drawn
        from softmax(logits / temperature) with the mask token excluded; revealed tokens stay.

        Args:
            model_output (`torch.Tensor` of shape `(batch, seq_len, vocab_size)`): logits of x₀.
            timestep: the current t (`self.timesteps[i]`).
            sample (`torch.LongTensor` of shape `(batch, seq_len)`): the current partially masked ids.
            mask_token_id (`int`): id of the mask token.
        """
        if self._step_index is None:
            raise ValueError("call set_timesteps(num_inference_steps) before step().")
        if self._step_index >= self.num_inference_steps:
            raise ValueError(f"all {self.num_inference_steps} steps are done; call set_timesteps again.")
        temperature = check_number(temperature, "temperature", minimum=0, minimum_exclusive=True)
        if model_output.ndim != sample.ndim + 1 or model_output.shape[:-1] != sample.shape:
            raise ValueError(
                f"model_output must have shape (*sample.shape, vocab_size) = ({', '.join(map(str, sample.shape))}, vocab_size), "
                f"got {tuple(model_output.shape)}."
            )
        t, s = self.times[self._step_index], self.times[self._step_index + 1]
        if not torch.isclose(torch.as_tensor(timestep, dtype=torch.float32).cpu(), t.cpu()):
            raise ValueError(f"step() expected the model output at t={float(t)}, got timestep={float(timestep)}.")
        alpha_t, alpha_s = float(self.alpha(t)), float(self.alpha(s))
        reveal_probability = 1.0 if s <= 0 else (alpha_s - alpha_t) / (1.0 - alpha_t)

        logits = model_output.float() / temperature
        logits[..., mask_token_id] = -float("inf")
        probabilities = logits.softmax(dim=-1)                                    # (batch, seq, vocab)
        draw_device = generator.device if generator is not None else sample.device
        proposals = torch.multinomial(
            probabilities.flatten(0, 1).to(draw_device), 1, generator=generator
        ).view(sample.shape).to(sample.device)                                    # (batch, seq)
        uniform = _rand(sample.shape, generator, sample.device)
        reveal = (sample == mask_token_id) & (uniform < reveal_probability)
        next_sample = torch.where(reveal, proposals, sample)
        self._step_index += 1
        if not return_dict:
            return (next_sample,)
        return SchedulerOutput(prev_sample=next_sample)

    def __len__(self) -> int:
        return self.config.num_blocks
