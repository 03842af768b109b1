"""The block-wise training loop, written once for every family.

Training block b builds only block b (`task.build_model([b])`), gives only its parameters to
its optimizer, and never runs another block: peak memory is that of L/B layers. End-to-end
training is the same loop on a model with `num_blocks=1`.

A family plugs in through a `TrainingTask` (its model, its batches, its loss, its pictures; the
output-folder part is `output_folder.BlockOutputFolder`'s); the model it builds speaks
`block_model.BlockTrainableModel`. Resuming is exact: batches come from `BatchOrder` (a function of
seed, block and step), the σ/noise generator is re-seeded from (seed, block, replica, step) at every
step, and the optimizer, learning-rate schedule, gradient scaler and EMA (`BlockOptimization`) are
checkpointed; a checkpoint saves and restores itself (`checkpointing.py`). Several processes may train
one block data-parallel (`BlockProcessGroup`); its first process saves.

`train_block` is three parts: resume (`_start`: build, or restore a checkpoint), step (`_step`), and
what happens between steps (`_log`, `_between_steps`: checkpoints and validation), then `_finish`.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from accelerate import Accelerator

from ..modeling.block_checkpoint import tensors_digest
from ..modeling.configuration_blocks import BlockPartitionedConfig
from .arguments import OptimizationSettings
from .block_model import BlockTrainableModel
from .checkpointing import BlockCheckpointManager, resume_settings
from .data_order import BatchOrder
from .distributed import BlockAssignment, BlockProcessGroup, local_batch
from .optimization import BlockOptimization
from .progress import training_progress
from .tracking import log_metrics

logger = logging.getLogger(__name__)


class TrainingTask(Protocol):
    """What a model family provides to `BlockTrainer`."""

    num_examples: int
    config: BlockPartitionedConfig | None  # the model's config (None: the task checks its folder itself)
    model_dir: str                   # where finished blocks are saved (config.json + block_<b>.safetensors)

    def build_model(self, block_indices: list[int]) -> BlockTrainableModel:
        """A model with only `block_indices` materialised."""

    def get_batch(self, indices: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]:
        """The training examples at `indices`, on `device`."""

    def loss(
        self, model: BlockTrainableModel, block_index: int, batch: dict[str, torch.Tensor], generator: torch.Generator
    ) -> torch.Tensor:
        """The block's local objective on one batch (all randomness from `generator`)."""

    def log_validation(
        self, model: BlockTrainableModel, block_index: int, step: int, accelerator: Accelerator
    ) -> None:
        """Log pictures or metrics for one block (optional work; may do nothing)."""

    def save_block(self, model: BlockTrainableModel, block_index: int, training_steps: int) -> None:
        """Write the finished block into the run's output folder, then `publish_block` it."""

    def publish_block(self, block_index: int) -> None:
        """Upload the saved block and the shared files to the Hub (nothing when the run does not push)."""

    def finished_steps(self, block_index: int) -> int | None:
        """Training steps of the block already saved in the output folder (None if absent)."""


@dataclass
class BlockTrainingResult:
    block_index: int
    steps: int
    final_loss: float
    seconds: float
    resumed_from: int | None = None
    skipped: bool = False
    weights_sha256: str | None = None


def block_weights_digest(model: BlockTrainableModel, block_index: int) -> str:
    """SHA-256 of a block's weights, as recorded in its block file: equal digests mean bit-identical blocks."""
    return tensors_digest(model.block_state_dict(block_index))


@dataclass
class BlockRun:
    """One block's training in progress: its model, optimisation, batch order and checkpoints."""

    block_index: int
    settings: OptimizationSettings
    model: BlockTrainableModel
    optimization: BlockOptimization
    order: BatchOrder
    checkpoints: BlockCheckpointManager
    start_step: int = 0
    resumed_from: int | None = None
    generator: torch.Generator = field(default_factory=torch.Generator)


@dataclass
class RunningLoss:
    """The mean training loss since the last log line."""

    total: float = 0.0
    count: int = 0
    last_mean: float = math.nan

    def add(self, value: float) -> None:
        self.total += value
        self.count += 1

    def take_mean(self) -> float:
        """The mean since the last call; starts a new window."""
        self.last_mean = self.total / self.count
        self.total, self.count = 0.0, 0
        return self.last_mean


class BlockTrainer:
    """Trains blocks one at a time with their own optimizer, checkpoints and logs."""

    def __init__(
        self,
        task: TrainingTask,
        settings: OptimizationSettings,
        accelerator: Accelerator,
        process_group: BlockProcessGroup | None = None,
    ):
        self.task = task
        self.settings = settings
        self.accelerator = accelerator
        self.process_group = process_group or BlockProcessGroup(BlockAssignment((), (0,), 0), [])
        self.assignment = self.process_group.assignment

    def _seed(self, block_index: int, purpose: int) -> int:
        return (self.settings.seed * 1_000_003 + block_index * 10_007 + purpose) % (2**63)

    def _step_seed(self, block_index: int, step: int) -> int:
        """Seed of the σ/noise generator at `step`: distinct for every block, replica and step."""
        replica = self.assignment.rank_in_group
        return (((self.settings.seed * 1_000_003 + block_index) * 1_009 + replica) * 100_000_007 + step) % (2**63)

    def train_block(self, block_index: int) -> BlockTrainingResult:
        """Train block `block_index` to its `max_train_steps`, resuming from a checkpoint when asked."""
        settings = self.settings.for_block(block_index)
        finished = self.task.finished_steps(block_index) if settings.resume_from_checkpoint else None
        if finished is not None and finished >= settings.max_train_steps:
            return self._skip_finished(block_index, finished)
        run = self._start(block_index, settings)
        started = time.perf_counter()
        final_loss = self._train_steps(run)
        self._finish(run)
        seconds = time.perf_counter() - started
        logger.info("block %d: done in %.1fs, final loss %.4f.", block_index, seconds, final_loss)
        return BlockTrainingResult(
            block_index, settings.max_train_steps, final_loss, seconds, resumed_from=run.resumed_from,
            weights_sha256=block_weights_digest(run.model, block_index),
        )

    # ---- resume ----------------------------------------------------------------------------
    def _skip_finished(self, block_index: int, finished: int) -> BlockTrainingResult:
        logger.info("block %d already finished (%d steps); skipping.", block_index, finished)
        if self.assignment.is_group_leader:  # an upload that failed in an earlier run is completed here
            self.task.publish_block(block_index)
        return BlockTrainingResult(block_index, finished, math.nan, 0.0, skipped=True)

    def _start(self, block_index: int, settings: OptimizationSettings) -> BlockRun:
        """Build block `block_index` (seeded), its optimisation and batch order; restore its checkpoint when resuming."""
        accelerator = self.accelerator
        torch.manual_seed(self._seed(block_index, purpose=0))
        model = self.task.build_model([block_index]).to(accelerator.device)
        model.train()
        self.process_group.broadcast_parameters(list(model.parameters()))  # before the EMA copies them
        optimization = BlockOptimization.build(list(model.block_parameters(block_index)), settings, accelerator.device.type)
        order = BatchOrder(self.task.num_examples, settings.train_batch_size * self.assignment.group_size, settings.seed,
                           stream=block_index)
        checkpoints = BlockCheckpointManager(settings.output_dir, block_index, settings.checkpoints_total_limit)
        run = BlockRun(block_index, settings, model, optimization, order, checkpoints)
        checkpoint = checkpoints.resolve(settings.resume_from_checkpoint)
        if checkpoint is not None:
            checkpoint.restore(model, optimization, self._resume_settings(settings), accelerator.device)
            run.start_step = run.resumed_from = checkpoint.step
            logger.info("block %d: resumed from %s (step %d).", block_index, checkpoint.path, checkpoint.step)
        logger.info(
            "block %d: %d trainable parameters, %d layers, steps %d → %d.",
            block_index, sum(p.numel() for p in optimization.parameters), model.layers_per_block[block_index],
            run.start_step, settings.max_train_steps,
        )
        return run

    def _resume_settings(self, settings: OptimizationSettings) -> dict[str, Any]:
        return resume_settings(settings, self.assignment.group_size)

    # ---- steps -----------------------------------------------------------------------------
    def _train_steps(self, run: BlockRun) -> float:
        """Steps `start_step` → `max_train_steps` with their logs, checkpoints and validations; the last logged loss."""
        settings = run.settings
        # a bar in a terminal, a plain log line every logging_steps otherwise; nothing on the other processes
        progress = training_progress(
            range(run.start_step, settings.max_train_steps),
            initial=run.start_step,
            total=settings.max_train_steps,
            desc=f"block {run.block_index}",
            disable=not self.accelerator.is_local_main_process,
            log_every=settings.logging_steps,
        )
        running = RunningLoss()
        for step in progress:
            running.add(self._step(run, step).item())
            completed = step + 1
            if completed % settings.logging_steps == 0 or completed == settings.max_train_steps:
                self._log(run, progress, completed, running.take_mean())
            self._between_steps(run, completed)
        progress.close()
        return running.last_mean

    def _step(self, run: BlockRun, step: int) -> torch.Tensor:
        """One optimisation step: its k micro-steps' gradients, averaged over the replicas; the step's loss (detached)."""
        accumulation, loss = run.settings.gradient_accumulation_steps, None
        # pass m of step s is micro-step s·k + m: its batch and noise depend on (seed, block, micro-step)
        # only, so resuming is exact and k = 1 is the plain loop
        for micro_step in range(step * accumulation, (step + 1) * accumulation):
            run.generator.manual_seed(self._step_seed(run.block_index, micro_step))
            indices = local_batch(run.order.indices_for_step(micro_step), self.assignment)
            batch = self.task.get_batch(indices, self.accelerator.device)
            with self.accelerator.autocast():
                micro_loss = self.task.loss(run.model, run.block_index, batch, run.generator) / accumulation
            run.optimization.scaler.scale(micro_loss).backward()
            loss = micro_loss.detach() if loss is None else loss + micro_loss.detach()  # stays on the device
        self.process_group.average_gradients(run.optimization.parameters)
        run.optimization.step(run.settings.max_grad_norm)
        return loss

    # ---- logs, checkpoints, validation -----------------------------------------------------
    def _log(self, run: BlockRun, progress, completed: int, mean_loss: float) -> None:
        learning_rate = run.optimization.learning_rate
        metrics = {f"train/loss_block_{run.block_index}": mean_loss, f"train/lr_block_{run.block_index}": learning_rate}
        log_metrics(self.accelerator, metrics, step=completed)
        progress.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{learning_rate:.2e}")

    def _between_steps(self, run: BlockRun, completed: int) -> None:
        """A checkpoint and a validation when their step comes (the first process of the block's group only;
        none at the last step: the finished block follows)."""
        settings = run.settings
        if completed >= settings.max_train_steps or not self.assignment.is_group_leader:
            return
        if completed % settings.checkpointing_steps == 0:
            run.checkpoints.save(completed, run.model, run.optimization, self._resume_settings(settings))
        if settings.validation_steps and completed % settings.validation_steps == 0:
            run.model.eval()
            self.task.log_validation(run.model, run.block_index, completed, self.accelerator)
            run.model.train()

    def _finish(self, run: BlockRun) -> None:
        """The final weights (averaged with an EMA), their validation, and the finished block in the output folder."""
        run.model.eval()
        run.optimization.use_averaged_weights()  # from here on the block's weights (validation, file, digest)
        if self.assignment.is_group_leader:
            self.task.log_validation(run.model, run.block_index, run.settings.max_train_steps, self.accelerator)
            self.task.save_block(run.model, run.block_index, run.settings.max_train_steps)
