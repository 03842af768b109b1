"""Block-wise training shared by every family: flags, batch order, checkpoints, the training loop, and the
training tasks of the families (text_task, image_task, pretrained_task) with the runs built on them."""

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
from .block_model import BlockTrainableModel
from .checkpointing import BlockCheckpoint, BlockCheckpointManager
from .data_order import BatchOrder
from .distributed import BlockAssignment, BlockProcessGroup, assign_blocks, init_distributed, local_batch
from .optimization import BlockOptimization
from .output_folder import BlockOutputFolder, HubTarget
from .trainer import BlockTrainer, BlockTrainingResult, TrainingTask


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
    "BlockOptimization",
    "BlockOutputFolder",
    "BlockTrainableModel",
    "HubTarget",
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
