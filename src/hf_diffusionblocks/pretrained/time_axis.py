"""Block partitions on a pretrained model's own time axis.

A diffusers transformer is called with the timestep its scheduler gives it, not with an EDM σ, so
the blocks of a converted model are intervals of *that* value:

- `"ddpm"` (DiT, PixArt): integer timesteps `t ∈ {0, …, T−1}` (`T = num_train_timesteps`), drawn
  uniformly in training (DDPM, Ho et al. 2020). The model is called with `t` itself.
- `"flow"` (SD3): rectified-flow time `s ∈ [0, 1]` drawn as `u ~ sigmoid(N(logit_mean, logit_std²))`
  and shifted, `s = shift·u / (1 + (shift − 1)·u)` (Esser et al. 2024, the `logit_normal`
  weighting of diffusers' SD3 training scripts); the model is called with `t = s·T`.

Both are handled through one object: the training CDF `F` of the model's timestep, so that
`"equiprobable"` puts 1/B of the training mass in every block and the overlap γ widens a block by γ
of its own mass on each side (the time-axis analogue of the library's `NoisePartition`, whose
overlap widens a block by γ of its own width in ln σ). `"uniform"` splits the timestep range into B
equal widths. As in the library, block 0 owns the highest noise, and boundaries are decreasing:
block b owns `[block_timesteps[b + 1], block_timesteps[b])`, block 0 also its top value; a
timestep equal to an inner boundary belongs to the higher-noise block.
"""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass
from typing import Any

import torch

from ..argument_checks import check_block_index, check_integer, check_number
from ..partition import MAX_NUM_BLOCKS, normal_cdf, normal_icdf

TIME_AXES = ("ddpm", "flow")
TIME_PARTITIONS = ("equiprobable", "uniform")


@dataclass(frozen=True)
class TimeAxisPartition:
    """B blocks on the time axis a pretrained transformer is called with (a `partition.BlockPartition`).

    Args:
        num_blocks (`int`): number of blocks B.
        time_axis (`str`, defaults to `"ddpm"`): `"ddpm"` (discrete, uniform timesteps) or `"flow"`
            (logit-normal flow-matching time with a shift).
        num_train_timesteps (`int`, defaults to 1000): T; the model's timestep lies in `[0, T]`.
        partition (`str`, defaults to `"equiprobable"`): `"equiprobable"` (equal training mass per
            block) or `"uniform"` (equal timestep widths).
        overlap (`float`, defaults to 0.05): γ ∈ [0, 1); block b trains on its interval widened by
            γ of its own training mass on each side, clipped to the axis.
        logit_mean (`float`, defaults to 0.0): mean of the logit-normal (flow only).
        logit_std (`float`, defaults to 1.0): standard deviation of the logit-normal (flow only).
        shift (`float`, defaults to 1.0): the flow scheduler's time shift (SD3: 3.0).
    """

    num_blocks: int
    time_axis: str = "ddpm"
    num_train_timesteps: int = 1000
    partition: str = "equiprobable"
    overlap: float = 0.05
    logit_mean: float = 0.0
    logit_std: float = 1.0
    shift: float = 1.0

    def __post_init__(self):
        check_integer(self.num_blocks, "num_blocks", minimum=1, maximum=MAX_NUM_BLOCKS)
        if self.time_axis not in TIME_AXES:
            raise ValueError(f"time_axis must be one of {list(TIME_AXES)}, got {self.time_axis!r}.")
        check_integer(self.num_train_timesteps, "num_train_timesteps", minimum=self.num_blocks)
        if self.partition not in TIME_PARTITIONS:
            raise ValueError(f"partition must be one of {list(TIME_PARTITIONS)}, got {self.partition!r}.")
        check_number(self.overlap, "overlap", minimum=0, maximum=1, maximum_exclusive=True)
        check_number(self.logit_mean, "logit_mean")
        check_number(self.logit_std, "logit_std", minimum=0, minimum_exclusive=True)
        check_number(self.shift, "shift", minimum=0, minimum_exclusive=True)

    # ---- the training distribution of the model's timestep ----------------------------------
    @property
    def max_timestep(self) -> float:
        """Top of the axis: T for both kinds (DDPM timesteps stop at T−1, the interval is half-open)."""
        return float(self.num_train_timesteps)

    def timestep_to_cdf(self, timestep: torch.Tensor | float) -> torch.Tensor:
        """F(t): the training probability that the model's timestep is below `t` (float64)."""
        t = torch.as_tensor(timestep, dtype=torch.float64) / self.num_train_timesteps
        if self.time_axis == "ddpm":
            # uniform on the integers: P(τ < t) = ceil(t) / T
            return (torch.ceil(t * self.num_train_timesteps) / self.num_train_timesteps).clamp(0, 1)
        s = t.clamp(0, 1)
        u = s / (self.shift - (self.shift - 1) * s)  # inverse of the shift
        logit = torch.log(u) - torch.log1p(-u)
        return normal_cdf((logit - self.logit_mean) / self.logit_std)

    def cdf_to_timestep(self, q: torch.Tensor | float) -> torch.Tensor:
        """F⁻¹(q) on the continuous axis (float64): DDPM q·T, flow T·shift(sigmoid(m + s·Φ⁻¹(q)))."""
        q = torch.as_tensor(q, dtype=torch.float64)
        if self.time_axis == "ddpm":
            return q * self.num_train_timesteps
        u = torch.sigmoid(self.logit_mean + self.logit_std * normal_icdf(q))
        s = self.shift * u / (1 + (self.shift - 1) * u)
        return s * self.num_train_timesteps

    # ---- the partition -----------------------------------------------------------------------
    @property
    def block_timesteps(self) -> torch.Tensor:
        """Boundaries, float64 `(num_blocks + 1,)`, decreasing from T to 0."""
        fractions = torch.linspace(0.0, 1.0, self.num_blocks + 1, dtype=torch.float64)
        if self.partition == "equiprobable":
            increasing = self.cdf_to_timestep(fractions)
        else:
            increasing = fractions * self.num_train_timesteps
        increasing[0], increasing[-1] = 0.0, self.max_timestep  # Φ⁻¹(0), Φ⁻¹(1) are infinite
        return increasing.flip(0)

    def block_interval(self, block_index: int) -> tuple[float, float]:
        """(low, high): the timesteps block `block_index` owns for routing."""
        self.check_block_index(block_index)
        edges = self.block_timesteps
        return float(edges[block_index + 1]), float(edges[block_index])

    def block_mass(self, block_index: int) -> float:
        """Training probability mass of the block's routing interval."""
        low, high = self.block_interval(block_index)
        top = 1.0 if block_index == 0 else float(self.timestep_to_cdf(high))
        return top - float(self.timestep_to_cdf(low))

    def training_cdf_interval(self, block_index: int) -> tuple[float, float]:
        """(q_low, q_high): the block's training interval in CDF coordinates, widened by γ·mass each side."""
        low, high = self.block_interval(block_index)
        q_low = float(self.timestep_to_cdf(low)) if block_index < self.num_blocks - 1 else 0.0
        q_high = float(self.timestep_to_cdf(high)) if block_index > 0 else 1.0
        widen = self.overlap * (q_high - q_low)
        return max(q_low - widen, 0.0), min(q_high + widen, 1.0)

    def training_interval(self, block_index: int) -> tuple[float, float]:
        """(low, high): the overlap-widened interval of timesteps block `block_index` trains on."""
        q_low, q_high = self.training_cdf_interval(block_index)
        return float(self.cdf_to_timestep(q_low)), float(self.cdf_to_timestep(q_high))

    def block_index_for_level(self, level: torch.Tensor | float) -> torch.Tensor:
        """The block that owns each timestep `level` (a long tensor of the input's shape).

        Timesteps outside `[0, T]` (beyond 1e-6·T) raise a `ValueError` naming the range.
        """
        t = torch.as_tensor(level, dtype=torch.float64).detach().cpu()
        tolerance = 1e-6 * self.max_timestep
        if torch.any(t < -tolerance) or torch.any(t > self.max_timestep + tolerance):
            raise ValueError(
                f"timestep must lie in [0, {self.max_timestep:g}] (num_train_timesteps={self.num_train_timesteps}), "
                f"got values in [{float(t.min())}, {float(t.max())}]."
            )
        inner_decreasing = self.block_timesteps[1:-1]
        # number of inner boundaries strictly above t: 0 → block 0 (a boundary value goes up)
        return (inner_decreasing[None, :] > t.reshape(-1, 1)).sum(dim=1).reshape(t.shape).long()

    def check_block_index(self, block_index: int) -> None:
        check_block_index(block_index, self.num_blocks)

    # ---- training --------------------------------------------------------------------------------
    def sample_training_timesteps(
        self, block_index: int, batch_size: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Timesteps from the model's training distribution restricted to the block's training interval.

        DDPM: a long tensor of integer timesteps; flow: float timesteps in `[0, T]` (the model's input).
        """
        q_low, q_high = self.training_cdf_interval(block_index)
        q = q_low + torch.rand(batch_size, generator=generator, dtype=torch.float64) * (q_high - q_low)
        if self.time_axis == "ddpm":
            # F⁻¹ on the integers: the k with k/T ≤ q < (k+1)/T
            return torch.floor(q * self.num_train_timesteps).clamp(0, self.num_train_timesteps - 1).long()
        # keep u away from 0 and 1, where the logit is infinite
        q = q.clamp(1e-9, 1 - 1e-9)
        return self.cdf_to_timestep(q).float()

    # ---- reporting ------------------------------------------------------------------------------
    def steps_per_block(self, timesteps: torch.Tensor) -> list[int]:
        """How many of the given sampling timesteps each block runs."""
        blocks = self.block_index_for_level(timesteps)
        return [int((blocks == b).sum()) for b in range(self.num_blocks)]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self, block_layers: list[str] | None = None) -> str:
        """A printable table: block ↔ timestep interval ↔ training interval ↔ mass ↔ layers (one text per
        block, e.g. `4-7` or `0,4,7,11`, from `ConversionManifest.partition_table`)."""
        lines = [
            f"time_axis={self.time_axis}  partition={self.partition}  num_blocks={self.num_blocks}  "
            f"T={self.num_train_timesteps}  overlap={self.overlap:g}"
            + (f"  logit_mean={self.logit_mean:g}  logit_std={self.logit_std:g}  shift={self.shift:g}" if self.time_axis == "flow" else ""),
            f"{'block':>5}  {'timestep interval':>22}  {'training interval':>22}  {'mass':>7}" + ("  layers" if block_layers else ""),
        ]
        for b in range(self.num_blocks):
            low, high = self.block_interval(b)
            train_low, train_high = self.training_interval(b)
            row = f"{b:>5}  {f'[{low:.2f}, {high:.2f})':>22}  {f'[{train_low:.2f}, {train_high:.2f}]':>22}  {self.block_mass(b):>7.4f}"
            if block_layers:
                row += f"  {block_layers[b]}"
            lines.append(row)
        return "\n".join(lines)


def time_partition_from_scheduler_config(
    scheduler_config: dict[str, Any],
    num_blocks: int,
    *,
    partition: str = "equiprobable",
    overlap: float = 0.05,
    logit_mean: float = 0.0,
    logit_std: float = 1.0,
    where: str = "scheduler_config",
) -> TimeAxisPartition:
    """The partition for a pipeline's scheduler config: flow-matching schedulers give a `"flow"` axis
    with their `shift`, every other (DDPM-family) scheduler a `"ddpm"` axis with its `num_train_timesteps`.

    The logit-normal (mean, std) is how the model was *trained*, which no scheduler config records;
    SD3 was trained with (0, 1). The config's own fields are checked first, errors naming `where` (its file).
    """
    if not isinstance(scheduler_config, dict):
        raise ValueError(f"{where} must be an object (a scheduler config), got {type(scheduler_config).__name__}.")
    class_name = scheduler_config.get("_class_name", "")
    if not isinstance(class_name, str):
        raise ValueError(f"{where}: _class_name must be a string, got {class_name!r}.")
    num_train_timesteps = check_integer(scheduler_config.get("num_train_timesteps", 1000), f"{where}: num_train_timesteps")
    # a config read from disk names its class; one taken from a live scheduler may not, but only
    # flow-matching schedulers have a `shift` and no beta schedule
    if "FlowMatch" in class_name or ("shift" in scheduler_config and "beta_schedule" not in scheduler_config):
        if scheduler_config.get("use_dynamic_shifting"):
            raise ValueError(
                f"scheduler {class_name} uses dynamic (resolution-dependent) shifting; the partition needs a fixed "
                "shift: set use_dynamic_shifting=False and shift in the scheduler config."
            )
        shift = check_number(scheduler_config.get("shift", 1.0), f"{where}: shift", minimum=0, minimum_exclusive=True)
        return TimeAxisPartition(num_blocks, "flow", num_train_timesteps, partition, overlap, logit_mean, logit_std, shift)
    return TimeAxisPartition(num_blocks, "ddpm", num_train_timesteps, partition, overlap)


def default_num_inference_steps(pipeline_class: type) -> int:
    """The `num_inference_steps` default of a diffusers pipeline's `__call__`."""
    parameter = inspect.signature(pipeline_class.__call__).parameters.get("num_inference_steps")
    if parameter is None or not isinstance(parameter.default, int):
        raise ValueError(f"{pipeline_class.__name__}.__call__ has no integer default for num_inference_steps.")
    return parameter.default


# Pipelines that give the scheduler their own sigmas instead of a step count (diffusers' FluxPipeline
# samples `linspace(1, 1/N, N)`, shifted by the scheduler); the others call `set_timesteps(N)`.
PIPELINE_SIGMAS = {"FluxPipeline": lambda count: [1.0 + (1.0 / count - 1.0) * i / max(count - 1, 1) for i in range(count)]}


def sampling_steps_per_block(
    time_partition: TimeAxisPartition, scheduler, num_inference_steps: int, pipeline_name: str | None = None
) -> list[int]:
    """How many model evaluations of `scheduler.set_timesteps(num_inference_steps)` fall in each block
    (with the sigmas `pipeline_name` passes instead, for the pipelines in `PIPELINE_SIGMAS`).

    Multistep solvers call the model once per entry of `scheduler.timesteps`, so this is the
    number of steps each block runs when the pipeline samples with these settings.
    """
    if pipeline_name in PIPELINE_SIGMAS:
        scheduler.set_timesteps(sigmas=PIPELINE_SIGMAS[pipeline_name](num_inference_steps))
    else:
        scheduler.set_timesteps(num_inference_steps)
    return time_partition.steps_per_block(scheduler.timesteps)

