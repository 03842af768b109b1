"""Block-wise training shared by every family: flags, batch order, checkpoints, the training loop."""

from .arguments import (
    TRAINING_MODES,
    OptimizationSettings,
    add_common_training_arguments,
    parse_block_index,
    require_at_least,
    validate_common_arguments,
)
from .checkpointing import BlockCheckpoint, BlockCheckpointManager
from .data_order import BatchOrder
from .distributed import BlockAssignment, BlockProcessGroup, assign_blocks, init_distributed, local_batch
from .trainer import BlockTrainer, BlockTrainingResult, TrainingTask


__all__ = [
    "TRAINING_MODES",
    "BatchOrder",
    "BlockAssignment",
    "BlockProcessGroup",
    "BlockCheckpoint",
    "BlockCheckpointManager",
    "BlockTrainer",
    "BlockTrainingResult",
    "OptimizationSettings",
    "TrainingTask",
    "add_common_training_arguments",
    "assign_blocks",
    "init_distributed",
    "local_batch",
    "parse_block_index",
    "require_at_least",
    "validate_common_arguments",
]
