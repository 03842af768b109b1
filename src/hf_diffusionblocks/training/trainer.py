"""The block-wise training loop, written once for every family.

Training block b builds only block b (`task.build_model([b])`), gives only its parameters to
its optimizer, and never runs another block: peak memory is that of L/B layers. End-to-end
training is the same loop on a model with `num_blocks=1`.

A family plugs in through a `TrainingTask` (its model, its batches, its loss, its pictures).
Resuming is exact: batches come from `BatchOrder` (a function of seed, block and step), the
σ/noise generator is re-seeded from (seed, block, replica, step) at every step, and the optimizer,
learning-rate schedule and gradient scaler are checkpointed. Several processes may train one
block data-parallel (`BlockProcessGroup`); its first process saves.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from accelerate import Accelerator
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel

from ..modeling.block_checkpoint import load_block_file, tensors_digest
from ..modeling.configuration_blocks import BlockPartitionedConfig
from ..modeling.modeling_blocks import DiffusionBlocksPreTrainedModel
from .arguments import OptimizationSettings
from .checkpointing import BlockCheckpointManager, check_resumable
from .progress import training_progress
from .data_order import BatchOrder
from .distributed import BlockAssignment, BlockProcessGroup, local_batch
from .tracking import log_metrics

logger = logging.getLogger(__name__)


class TrainingTask(Protocol):
    """What a model family provides to `BlockTrainer`."""

    num_examples: int
    config: BlockPartitionedConfig | None  # the model's config (None: the task checks its folder itself)
    model_dir: str                   # where finished blocks are saved (config.json + block_<b>.safetensors)

    def build_model(self, block_indices: list[int]) -> DiffusionBlocksPreTrainedModel:
        """A model with only `block_indices` materialised."""

    def get_batch(self, indices: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]:
        """The training examples at `indices`, on `device`."""

    def loss(
        self, model: DiffusionBlocksPreTrainedModel, block_index: int, batch: dict[str, torch.Tensor], generator: torch.Generator
    ) -> torch.Tensor:
        """The block's local objective on one batch (all randomness from `generator`)."""

    def log_validation(
        self, model: DiffusionBlocksPreTrainedModel, block_index: int, step: int, accelerator: Accelerator
    ) -> None:
        """Log pictures or metrics for one block (optional work; may do nothing)."""

    def save_block(self, model: DiffusionBlocksPreTrainedModel, block_index: int, training_steps: int) -> None:
        """Write the finished block into the run's output folder, then `publish_block` it."""

    def publish_block(self, block_index: int) -> None:
        """Upload the saved block and the shared files to the Hub (nothing when the run does not push)."""

    def finished_steps(self, block_index: int) -> int | None:
        """Training steps of the block already saved in the output folder (None if absent)."""


# Settings that shape the optimisation trajectory: a resume under other values would not continue the run.
# (Logging, checkpointing and validation frequencies may change freely.)
RESUME_DEFINING_SETTINGS = (
    "max_train_steps", "train_batch_size", "learning_rate", "lr_scheduler", "lr_warmup_steps", "adam_beta1",
    "adam_beta2", "adam_weight_decay", "adam_epsilon", "max_grad_norm", "mixed_precision", "seed",
    "gradient_accumulation_steps", "use_ema", "ema_decay",
)


@dataclass
class BlockTrainingResult:
    block_index: int
    steps: int
    final_loss: float
    seconds: float
    resumed_from: int | None = None
    skipped: bool = False
    weights_sha256: str | None = None


def block_weights_digest(model: DiffusionBlocksPreTrainedModel, block_index: int) -> str:
    """SHA-256 of a block's weights, as recorded in its block file: equal digests mean bit-identical blocks."""
    return tensors_digest(model.block_state_dict(block_index))


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

    def _build_optimization(self, model: DiffusionBlocksPreTrainedModel, block_index: int, settings: OptimizationSettings):
        optimizer = torch.optim.AdamW(
            list(model.block_parameters(block_index)),
            lr=settings.learning_rate,
            betas=(settings.adam_beta1, settings.adam_beta2),
            weight_decay=settings.adam_weight_decay,
            eps=settings.adam_epsilon,
        )
        lr_schedule = get_scheduler(
            settings.lr_scheduler,
            optimizer=optimizer,
            num_warmup_steps=settings.lr_warmup_steps,
            num_training_steps=settings.max_train_steps,
        )
        scaler = torch.amp.GradScaler(self.accelerator.device.type, enabled=settings.mixed_precision == "fp16")
        return optimizer, lr_schedule, scaler

    def train_block(self, block_index: int) -> BlockTrainingResult:
        """Train block `block_index` to its `max_train_steps`, resuming from a checkpoint when asked."""
        settings, accelerator = self.settings.for_block(block_index), self.accelerator
        finished = self.task.finished_steps(block_index) if settings.resume_from_checkpoint else None
        if finished is not None and finished >= settings.max_train_steps:
            logger.info("block %d already finished (%d steps); skipping.", block_index, finished)
            if self.assignment.is_group_leader:  # an upload that failed in an earlier run is completed here
                self.task.publish_block(block_index)
            return BlockTrainingResult(block_index, finished, math.nan, 0.0, skipped=True)

        torch.manual_seed(self._seed(block_index, purpose=0))
        model = self.task.build_model([block_index]).to(accelerator.device)
        model.train()
        optimizer, lr_schedule, scaler = self._build_optimization(model, block_index, settings)
        self.process_group.broadcast_parameters(list(model.parameters()))
        generator = torch.Generator()
        replicas = self.assignment.group_size
        order = BatchOrder(self.task.num_examples, settings.train_batch_size * replicas, settings.seed, stream=block_index)
        manager = BlockCheckpointManager(settings.output_dir, block_index, settings.checkpoints_total_limit)

        start_step = 0
        checkpoint = manager.resolve(settings.resume_from_checkpoint)
        if checkpoint is not None:
            check_resumable(checkpoint, self._resume_settings(settings))
            type(model).check_block_file(checkpoint.weights_path, block_index, model.config)
            tensors = load_block_file(checkpoint.weights_path, device=str(accelerator.device))
            model.load_block_weights(block_index, tensors, source=checkpoint.weights_path)
            state = checkpoint.load_training_state()
            optimizer.load_state_dict(state["optimizer"])
            lr_schedule.load_state_dict(state["lr_schedule"])
            scaler.load_state_dict(state["scaler"])
            start_step = checkpoint.step
            logger.info("block %d: resumed from %s (step %d).", block_index, checkpoint.path, start_step)

        parameters = list(model.block_parameters(block_index))
        ema = EMAModel(parameters, decay=settings.ema_decay) if settings.use_ema else None
        if ema is not None and checkpoint is not None:
            ema.load_state_dict(state["ema"])
        logger.info(
            "block %d: %d trainable parameters, %d layers, steps %d → %d.",
            block_index, sum(p.numel() for p in parameters), model.layers_per_block[block_index],
            start_step, settings.max_train_steps,
        )
        # a bar in a terminal, a plain log line every logging_steps otherwise; nothing on the other processes
        progress = training_progress(
            range(start_step, settings.max_train_steps),
            initial=start_step,
            total=settings.max_train_steps,
            desc=f"block {block_index}",
            disable=not accelerator.is_local_main_process,
            log_every=settings.logging_steps,
        )
        started = time.perf_counter()
        running_loss, running_count, last_loss = 0.0, 0, math.nan
        accumulation = settings.gradient_accumulation_steps
        for step in progress:
            loss = None
            # pass m of step s is micro-step s·k + m: its batch and noise depend on (seed, block, micro-step)
            # only, so resuming is exact and k = 1 is the plain loop
            for micro_step in range(step * accumulation, (step + 1) * accumulation):
                generator.manual_seed(self._step_seed(block_index, micro_step))
                indices = local_batch(order.indices_for_step(micro_step), self.assignment)
                batch = self.task.get_batch(indices, accelerator.device)
                with accelerator.autocast():
                    micro_loss = self.task.loss(model, block_index, batch, generator) / accumulation
                scaler.scale(micro_loss).backward()
                loss = micro_loss.detach() if loss is None else loss + micro_loss.detach()  # stays on the device
            self.process_group.average_gradients(parameters)
            if settings.max_grad_norm > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(parameters, settings.max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            lr_schedule.step()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema.step(parameters)

            running_loss += loss.detach().item()
            running_count += 1
            completed = step + 1
            if completed % settings.logging_steps == 0 or completed == settings.max_train_steps:
                last_loss = running_loss / running_count
                log_metrics(
                    accelerator,
                    {f"train/loss_block_{block_index}": last_loss, f"train/lr_block_{block_index}": lr_schedule.get_last_lr()[0]},
                    step=completed,
                )
                progress.set_postfix(loss=f"{last_loss:.4f}", lr=f"{lr_schedule.get_last_lr()[0]:.2e}")
                running_loss, running_count = 0.0, 0
            if (
                completed % settings.checkpointing_steps == 0
                and completed < settings.max_train_steps
                and self.assignment.is_group_leader
            ):
                self._save_checkpoint(manager, completed, model, optimizer, lr_schedule, scaler, ema, settings)
            if (
                settings.validation_steps
                and completed % settings.validation_steps == 0
                and completed < settings.max_train_steps  # the final validation follows the loop
                and self.assignment.is_group_leader
            ):
                model.eval()
                self.task.log_validation(model, block_index, completed, accelerator)
                model.train()
        progress.close()

        model.eval()
        if ema is not None:  # the averaged weights are the block's weights from here on (validation, file, digest)
            ema.copy_to(parameters)
        if self.assignment.is_group_leader:
            self.task.log_validation(model, block_index, settings.max_train_steps, accelerator)
            self.task.save_block(model, block_index, settings.max_train_steps)
        seconds = time.perf_counter() - started
        logger.info("block %d: done in %.1fs, final loss %.4f.", block_index, seconds, last_loss)
        return BlockTrainingResult(
            block_index, settings.max_train_steps, last_loss, seconds,
            resumed_from=checkpoint.step if checkpoint else None,
            weights_sha256=block_weights_digest(model, block_index),
        )

    def _save_checkpoint(self, manager, step, model, optimizer, lr_schedule, scaler, ema, settings) -> None:
        training_state: dict[str, Any] = {
            "optimizer": optimizer.state_dict(),
            "lr_schedule": lr_schedule.state_dict(),
            "scaler": scaler.state_dict(),
        }
        if ema is not None:
            training_state["ema"] = ema.state_dict()
        trainer_state = {"block_index": manager.block_index, "settings": self._resume_settings(settings)}
        manager.save(step, model, training_state, trainer_state)

    def _resume_settings(self, settings: OptimizationSettings) -> dict[str, Any]:
        """What a resumed run must share with the run that wrote the checkpoint to continue it exactly (`settings`
        of the block: its own `max_train_steps`)."""
        defining = {name: getattr(settings, name) for name in RESUME_DEFINING_SETTINGS}
        return {**defining, "data_parallel_replicas": self.assignment.group_size}
