"""Block-wise training shared by every family: flags, batch order, checkpoints, the training loop."""

from ..modeling.modeling_blocks import validate_block_indices
from .arguments import (
    DEFAULT_MAX_TRAIN_STEPS,
    TRAINING_MODES,
    HelpFormatter,
    OptimizationSettings,
    add_common_training_arguments,
    add_partition_arguments,
    add_text_data_arguments,
    parse_block_index,
    require_at_least,
    resolve_max_train_steps,
    validate_common_arguments,
    validate_text_data_arguments,
)
from .checkpointing import BlockCheckpoint, BlockCheckpointManager
from .data_order import BatchOrder
from .distributed import BlockAssignment, BlockProcessGroup, assign_blocks, init_distributed, local_batch
from .trainer import BlockTrainer, BlockTrainingResult, TrainingTask


def blocks_to_train(block_index: int | str, num_blocks: int) -> list[int]:
    """`--block_index`: `all` → every block in order; an int → that block (validated)."""
    if block_index == "all":
        return list(range(num_blocks))
    return validate_block_indices([block_index], num_blocks)


__all__ = [
    "DEFAULT_MAX_TRAIN_STEPS",
    "HelpFormatter",
    "TRAINING_MODES",
    "add_partition_arguments",
    "add_text_data_arguments",
    "validate_text_data_arguments",
    "resolve_max_train_steps",
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
    "blocks_to_train",
    "parse_block_index",
    "require_at_least",
    "validate_common_arguments",
]
