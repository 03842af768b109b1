"""Partitioning the noise range of a variance-exploding diffusion into B blocks.

`BlockPartition` is what every partition of a noise axis into blocks provides, whatever the axis: σ here,
a pretrained model's own timesteps (`pretrained/time_axis.py`), the masking time t of masked diffusion
(`MaskedDiffusionBlocksScheduler`). Code that routes a noise level to its block asks any of them the same
question, `block_index_for_level`.

The noise distribution is the EDM log-normal `ln σ ~ N(p_mean, p_std²)` truncated to
`[sigma_min, sigma_max]`. Block 0 owns the highest noise; boundaries are returned decreasing,
so block `b` covers `[block_sigmas[b + 1], block_sigmas[b]]`.

Partitions (DiffusionBlocks, Sec. 3.3 and the ablation of Table 6):
- `"equiprobable"`: every block holds 1/B of the probability mass of the truncated log-normal;
- `"uniform_linear"`: equal widths in σ;
- `"uniform_log"`: equal widths in ln σ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Protocol, Sequence, runtime_checkable

import torch

from .argument_checks import check_block_index, check_integer, check_number, check_values_in_range

PartitionName = Literal["equiprobable", "uniform_linear", "uniform_log"]
PARTITIONS: tuple[str, ...] = ("equiprobable", "uniform_linear", "uniform_log")
TIMESTEP_SPACINGS: tuple[str, ...] = ("edges", "midpoints")
# The most blocks any config may ask for. Configs are read from anywhere (a Hub repo, a downloaded folder) and
# much of the work they start is per block (one header request, one file, one table row each), so the count is
# bounded before any of it starts; DiffusionBlocks' partitions use a handful of blocks.
MAX_NUM_BLOCKS = 1024


def normal_cdf(x: torch.Tensor) -> torch.Tensor:
    """Φ, the standard normal CDF."""
    return torch.special.ndtr(x)


def normal_icdf(u: torch.Tensor) -> torch.Tensor:
    """Φ⁻¹, the standard normal quantile function."""
    return torch.special.ndtri(u)


@runtime_checkable
class BlockPartition(Protocol):
    """A noise axis cut into `num_blocks` intervals; block 0 owns the noisiest one.

    Implemented by `NoisePartition` (σ), `pretrained.TimeAxisPartition` (a pretrained model's timesteps) and
    `MaskedDiffusionBlocksScheduler` (masking time t).
    """

    @property
    def num_blocks(self) -> int:
        """B."""

    def check_block_index(self, block_index: int) -> None:
        """A `ValueError` naming the valid range unless `block_index` is an int in `[0, num_blocks)`."""

    def block_interval(self, block_index: int) -> tuple[float, float]:
        """(low, high): the levels `block_index` owns when routing."""

    def block_index_for_level(self, level: torch.Tensor | float) -> torch.Tensor:
        """The block that owns each noise level (a long tensor of the input's shape); a `ValueError` for a
        level outside the axis."""


@dataclass(frozen=True)
class NoisePartition:
    """The truncated log-normal noise distribution and its split into `num_blocks` intervals.

    Args:
        num_blocks (`int`, defaults to 3): number of blocks B (paper: 3 for DiT/ViT/MDM, 4 for AR).
        sigma_min (`float`, defaults to 0.002): lowest noise level (EDM).
        sigma_max (`float`, defaults to 80.0): highest noise level (EDM).
        p_mean (`float`, defaults to -1.2): mean of ln σ under the training distribution (EDM).
        p_std (`float`, defaults to 1.2): standard deviation of ln σ (EDM).
        partition (`str`, defaults to `"equiprobable"`): one of `"equiprobable"`, `"uniform_linear"`,
            `"uniform_log"`.
        overlap (`float`, defaults to 0.05): block overlap γ in [0, 1); block `[lo, hi]` trains on
            `[lo / α, hi · α]` with `α = (hi / lo)^γ`, clipped to `[sigma_min, sigma_max]`
            (paper: 0.05 for images, 0.1 for text).
    """

    num_blocks: int = 3
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    p_mean: float = -1.2
    p_std: float = 1.2
    partition: str = "equiprobable"
    overlap: float = 0.05

    def __post_init__(self):
        validate_partition_settings(**{name: getattr(self, name) for name in PARTITION_FIELDS})

    # ---- the truncated log-normal ----------------------------------------------------------
    def sigma_to_cdf(self, sigma: torch.Tensor | float) -> torch.Tensor:
        """Φ((ln σ − p_mean) / p_std), the untruncated log-normal CDF at σ (float64)."""
        sigma = torch.as_tensor(sigma, dtype=torch.float64)
        return normal_cdf((sigma.log() - self.p_mean) / self.p_std)

    def cdf_to_sigma(self, u: torch.Tensor) -> torch.Tensor:
        """Inverse of `sigma_to_cdf`: exp(p_mean + p_std · Φ⁻¹(u)) (float64)."""
        u = torch.as_tensor(u, dtype=torch.float64)
        return torch.exp(self.p_mean + self.p_std * normal_icdf(u))

    @property
    def cdf_range(self) -> tuple[float, float]:
        """(q_min, q_max): the CDF at sigma_min and sigma_max."""
        return float(self.sigma_to_cdf(self.sigma_min)), float(self.sigma_to_cdf(self.sigma_max))

    def probability_mass(self, low: torch.Tensor | float, high: torch.Tensor | float) -> torch.Tensor:
        """Mass of the truncated log-normal on `[low, high]`."""
        q_min, q_max = self.cdf_range
        return (self.sigma_to_cdf(high) - self.sigma_to_cdf(low)) / (q_max - q_min)

    # ---- the partition ---------------------------------------------------------------------
    @property
    def block_sigmas(self) -> torch.Tensor:
        """Boundaries, float64 tensor of shape `(num_blocks + 1,)`, decreasing from sigma_max to sigma_min."""
        fractions = torch.linspace(0.0, 1.0, self.num_blocks + 1, dtype=torch.float64)
        if self.partition == "equiprobable":
            q_min, q_max = self.cdf_range
            increasing = self.cdf_to_sigma(q_min + fractions * (q_max - q_min))
        elif self.partition == "uniform_linear":
            increasing = self.sigma_min + fractions * (self.sigma_max - self.sigma_min)
        else:  # uniform_log
            log_min, log_max = math.log(self.sigma_min), math.log(self.sigma_max)
            increasing = torch.exp(log_min + fractions * (log_max - log_min))
        # Pin the ends exactly: Φ⁻¹(Φ(x)) loses a few ulps in the tails.
        increasing[0], increasing[-1] = self.sigma_min, self.sigma_max
        return increasing.flip(0)

    def block_interval(self, block_index: int) -> tuple[float, float]:
        """(low, high): the non-overlapping interval of `block_index`, used for routing."""
        self.check_block_index(block_index)
        sigmas = self.block_sigmas
        return float(sigmas[block_index + 1]), float(sigmas[block_index])

    def training_interval(self, block_index: int) -> tuple[float, float]:
        """(low, high): the overlap-extended interval `[lo / α, hi · α]`, α = (hi / lo)^γ, clipped."""
        low, high = self.block_interval(block_index)
        alpha = (high / low) ** self.overlap
        return max(low / alpha, self.sigma_min), min(high * alpha, self.sigma_max)

    def block_index_for_level(self, level: torch.Tensor | float) -> torch.Tensor:
        """The block that owns σ = `level` at inference: block b owns `(block_sigmas[b+1], block_sigmas[b]]`.

        σ = sigma_min belongs to the last block. Values outside `[sigma_min, sigma_max]` (beyond a
        relative tolerance of 1e-6) raise a `ValueError`.
        """
        sigma = torch.as_tensor(level, dtype=torch.float64)
        tolerance = 1e-6
        check_values_in_range(
            sigma, "sigma", self.sigma_min * (1 - tolerance), self.sigma_max * (1 + tolerance),
            range_text=f"[sigma_min={self.sigma_min}, sigma_max={self.sigma_max}]",
        )
        # Inner boundaries in increasing order; σ equal to a boundary goes to the block above it.
        inner_increasing = self.block_sigmas[1:-1].flip(0)
        blocks_from_bottom = torch.searchsorted(inner_increasing, sigma, right=False)
        return (self.num_blocks - 1 - blocks_from_bottom).long()

    def check_block_index(self, block_index: int) -> None:
        check_block_index(block_index, self.num_blocks)

    # ---- sampling --------------------------------------------------------------------------
    def sample_training_sigmas(
        self, block_index: int, batch_size: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Draw σ from p_noise restricted to the block's overlap-extended interval (inverse CDF).

        Returns a float32 tensor of shape `(batch_size,)`.
        """
        low, high = self.training_interval(block_index)
        return self.sample_sigmas_between(low, high, batch_size, generator)

    def sample_sigmas_between(
        self, low: float, high: float, batch_size: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Draw σ from the log-normal truncated to `[low, high]`: u ~ U(Φ(ℓ_lo), Φ(ℓ_hi)), σ = exp(p_mean + p_std Φ⁻¹(u))."""
        batch_size = check_integer(batch_size, "batch_size", minimum=1)
        u_low, u_high = self.sigma_to_cdf(low), self.sigma_to_cdf(high)
        uniform = torch.rand(batch_size, generator=generator, dtype=torch.float64)
        sigmas = self.cdf_to_sigma(u_low + uniform * (u_high - u_low))
        return sigmas.clamp(low, high).float()

    def inference_sigmas(self, num_inference_steps: int, timestep_spacing: str = "edges") -> torch.Tensor:
        """N sigmas descending from sigma_max on a grid of N equal cells of the truncated CDF, then a final 0.

        `timestep_spacing="edges"` puts step i at the upper edge of cell i; `"midpoints"` at its middle
        (step 0 stays at sigma_max, where sampling starts). Returns float64 `(num_inference_steps + 1,)`.
        For the equi-probability partition and N a multiple of B, every block runs exactly N / B steps;
        with edges the block boundaries are grid points, with midpoints every evaluation after the
        first lies inside its block's interval, away from the boundary where the block saw only
        the overlap's share of its training noise (the better choice for few steps, e.g. one per block).
        """
        num_inference_steps = check_integer(num_inference_steps, "num_inference_steps", minimum=1)
        if timestep_spacing not in TIMESTEP_SPACINGS:
            raise ValueError(f"timestep_spacing must be one of {list(TIMESTEP_SPACINGS)}, got {timestep_spacing!r}.")
        q_min, q_max = self.cdf_range
        offset = 0.5 if timestep_spacing == "midpoints" else 0.0
        steps = (torch.arange(num_inference_steps, dtype=torch.float64) + offset) / num_inference_steps
        sigmas = self.cdf_to_sigma(q_max - steps * (q_max - q_min))
        sigmas[0] = self.sigma_max
        if timestep_spacing == "edges" and self.partition == "equiprobable" and num_inference_steps % self.num_blocks == 0:
            # Snap grid points that are block boundaries onto the exact boundary values, so routing
            # does not depend on the last ulp of Φ⁻¹.
            stride = num_inference_steps // self.num_blocks
            sigmas[::stride] = self.block_sigmas[:-1]
        return torch.cat([sigmas, sigmas.new_zeros(1)])


# The fields that define a partition: configs, schedulers and the CLI carry them under these names.
PARTITION_FIELDS = ("num_blocks", "sigma_min", "sigma_max", "p_mean", "p_std", "partition", "overlap")


def partition_from(settings: Any) -> NoisePartition:
    """The `NoisePartition` of any object carrying the `PARTITION_FIELDS` as attributes (a config, parsed flags)."""
    return NoisePartition(**{name: getattr(settings, name) for name in PARTITION_FIELDS})


def validate_partition_settings(
    *,
    num_blocks: int,
    sigma_min: float,
    sigma_max: float,
    p_mean: float,
    p_std: float,
    partition: str,
    overlap: float,
) -> None:
    """Raise a `ValueError` naming the field for every invalid partition setting.

    Every number must be finite (an infinite sigma_max makes every boundary above the first infinite,
    a NaN one makes them NaN); `0 < sigma_min < sigma_max`, `p_std > 0`, `0 <= overlap < 1`.
    """
    check_integer(num_blocks, "num_blocks", minimum=1, maximum=MAX_NUM_BLOCKS)
    check_number(sigma_min, "sigma_min", minimum=0, minimum_exclusive=True)
    check_number(sigma_max, "sigma_max", minimum=0, minimum_exclusive=True)
    if not sigma_min < sigma_max:
        raise ValueError(f"sigma_min must be < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}.")
    check_number(p_mean, "p_mean")
    check_number(p_std, "p_std", minimum=0, minimum_exclusive=True)
    if partition not in PARTITIONS:
        raise ValueError(f"partition must be one of {list(PARTITIONS)}, got {partition!r}.")
    # γ >= 1 stretches a block's training interval by at least its own width on both sides: it is no
    # longer an overlap but another partition.
    check_number(overlap, "overlap", minimum=0, maximum=1, maximum_exclusive=True)


def assign_layers_to_blocks(
    num_hidden_layers: int, num_blocks: int, layers_per_block: Sequence[int] | None = None
) -> list[int]:
    """Number of layers of each block.

    Without `layers_per_block`, `num_hidden_layers` must be divisible by `num_blocks` (the
    reference implementation silently drops the remainder; we refuse). With it, the list must
    have `num_blocks` positive entries that add up to `num_hidden_layers`. Either way `num_blocks` is at most
    `MAX_NUM_BLOCKS` (and, every block holding a layer, at most `num_hidden_layers`).
    """
    check_integer(num_hidden_layers, "num_hidden_layers", minimum=1)
    check_integer(num_blocks, "num_blocks", minimum=1, maximum=MAX_NUM_BLOCKS)
    if layers_per_block is None:
        if num_hidden_layers % num_blocks != 0:
            raise ValueError(
                f"num_hidden_layers={num_hidden_layers} is not divisible by num_blocks={num_blocks}; "
                f"pass layers_per_block (a list of {num_blocks} layer counts summing to {num_hidden_layers})."
            )
        return [num_hidden_layers // num_blocks] * num_blocks
    layers_per_block = list(layers_per_block)
    if len(layers_per_block) != num_blocks:
        raise ValueError(f"layers_per_block must have num_blocks={num_blocks} entries, got {layers_per_block}.")
    # int(1.5) would silently give a block one layer
    layers_per_block = [check_integer(n, f"layers_per_block[{i}]", minimum=1) for i, n in enumerate(layers_per_block)]
    if sum(layers_per_block) != num_hidden_layers:
        raise ValueError(
            f"layers_per_block={layers_per_block} sums to {sum(layers_per_block)}, "
            f"but num_hidden_layers={num_hidden_layers}."
        )
    return layers_per_block


def format_partition_table(
    partition: NoisePartition, layers_per_block: Sequence[int] | None = None
) -> str:
    """A printable table: block ↔ σ interval ↔ training interval (with overlap) ↔ probability mass ↔ layers."""
    header = f"{'block':>5}  {'sigma interval':>22}  {'training interval':>22}  {'mass':>7}"
    if layers_per_block is not None:
        header += f"  {'layers':>9}"
    lines = [
        f"partition={partition.partition}  num_blocks={partition.num_blocks}  "
        f"sigma=[{partition.sigma_min:g}, {partition.sigma_max:g}]  p_mean={partition.p_mean:g}  "
        f"p_std={partition.p_std:g}  overlap={partition.overlap:g}",
        header,
    ]
    first_layer = 0
    for block_index in range(partition.num_blocks):
        low, high = partition.block_interval(block_index)
        train_low, train_high = partition.training_interval(block_index)
        mass = float(partition.probability_mass(low, high))
        row = (
            f"{block_index:>5}  {f'[{low:.4f}, {high:.4f}]':>22}  "
            f"{f'[{train_low:.4f}, {train_high:.4f}]':>22}  {mass:>7.4f}"
        )
        if layers_per_block is not None:
            count = layers_per_block[block_index]
            row += f"  {f'{first_layer}-{first_layer + count - 1}':>9}"
            first_layer += count
        lines.append(row)
    return "\n".join(lines)
