"""Command-line flags shared by every `examples/train_<family>.py` script, and their typed settings."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from typing import Any

TRAINING_MODES = ("blockwise", "end_to_end")


def parse_block_index(value: str) -> int | str:
    """`--block_index`: a block index, or `all`."""
    if value == "all":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--block_index must be an integer or 'all', got {value!r}.") from None


def add_common_training_arguments(
    parser: argparse.ArgumentParser,
    *,
    defaults: dict[str, Any] | None = None,
    training_modes: tuple[str, ...] = TRAINING_MODES,
) -> None:
    """The flags every training script shares (docs/architecture.md, 'Data flow at training') plus the usual optimisation flags; `defaults` overrides per family, and a
    family with a baseline of its own adds it to `training_modes` (the recurrent family's `bptt`)."""
    if not set(TRAINING_MODES) <= set(training_modes):
        raise ValueError(f"training_modes must include {TRAINING_MODES}, got {training_modes}.")
    group = parser.add_argument_group("DiffusionBlocks training")
    group.add_argument("--block_index", type=parse_block_index, default="all",
                       help="Block to train (0 = highest noise), or 'all' to train every block one after another.")
    group.add_argument("--training_mode", choices=training_modes, default="blockwise",
                       help="'blockwise' trains B independent blocks; 'end_to_end' trains the same layers as one "
                            "block over the whole noise range (the baseline).")
    group.add_argument("--num_blocks", type=int, default=3, help="Number of blocks B (ignored by end_to_end, which uses 1).")
    group.add_argument("--partition", choices=("equiprobable", "uniform_linear", "uniform_log"), default="equiprobable",
                       help="How the noise range is split between blocks.")
    group.add_argument("--overlap", type=float, default=0.05, help="Block overlap gamma (paper: 0.05 images, 0.1 text).")
    group.add_argument("--dataset", type=str, required=False, help="Dataset name or path.")
    group.add_argument("--output_dir", type=str, required=True, help="Where the pipeline folder, checkpoints and logs go.")
    group.add_argument("--max_train_steps", type=int, default=1000,
                       help="Optimisation steps per block (end_to_end: steps of the one block).")
    group.add_argument("--train_batch_size", type=int, default=128)
    group.add_argument("--learning_rate", type=float, default=1e-3)
    group.add_argument("--lr_scheduler", type=str, default="constant_with_warmup",
                       help="A diffusers learning-rate schedule name (constant, constant_with_warmup, cosine, linear, ...).")
    group.add_argument("--lr_warmup_steps", type=int, default=100, help="Warm-up steps, per block.")
    group.add_argument("--adam_beta1", type=float, default=0.9)
    group.add_argument("--adam_beta2", type=float, default=0.999)
    group.add_argument("--adam_weight_decay", type=float, default=0.0)
    group.add_argument("--adam_epsilon", type=float, default=1e-8)
    group.add_argument("--max_grad_norm", type=float, default=1.0, help="Gradient clipping norm (0 disables).")
    group.add_argument("--checkpointing_steps", type=int, default=500, help="Save a resumable checkpoint every N steps.")
    group.add_argument("--checkpoints_total_limit", type=int, default=2, help="Keep at most this many checkpoints per block.")
    group.add_argument("--resume_from_checkpoint", type=str, default=None,
                       help="'latest' or a checkpoint folder; finished blocks are skipped.")
    group.add_argument("--logging_steps", type=int, default=50)
    group.add_argument("--validation_steps", type=int, default=0,
                       help="Log validation images every N steps (0: only at the end of each block).")
    group.add_argument("--mixed_precision", choices=("no", "fp16", "bf16"), default="no")
    group.add_argument("--report_to", type=str, default="tensorboard", help="'tensorboard', 'wandb', 'all' or 'none'.")
    group.add_argument("--push_to_hub", action="store_true", help="Upload each block to the Hub as soon as it is done.")
    group.add_argument("--hub_model_id", type=str, default=None, help="Hub repo id for --push_to_hub (org/name).")
    group.add_argument("--hub_token", type=str, default=None)
    group.add_argument("--seed", type=int, default=0)
    if defaults:
        parser.set_defaults(**defaults)


def require_at_least(args: argparse.Namespace, names: tuple[str, ...], minimum: int = 1) -> None:
    """Raise a `ValueError` naming the first flag of `names` below `minimum` (flags left at None are unset)."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < minimum:
            raise ValueError(f"--{name} must be >= {minimum}, got {value}.")


def validate_common_arguments(args: argparse.Namespace) -> None:
    """Cross-field checks with errors that name the flag."""
    require_at_least(args, ("max_train_steps", "train_batch_size", "checkpointing_steps", "logging_steps", "num_blocks"))
    if args.lr_warmup_steps < 0 or args.validation_steps < 0:
        raise ValueError("--lr_warmup_steps and --validation_steps must be >= 0.")
    if args.push_to_hub and not args.hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id org/name.")
    if args.training_mode == "end_to_end" and args.block_index not in ("all", 0):
        raise ValueError(f"--training_mode end_to_end trains a single block: --block_index must be 0 or 'all', got {args.block_index}.")


@dataclass
class OptimizationSettings:
    """What `BlockTrainer` needs from the command line, typed."""

    output_dir: str
    max_train_steps: int = 1000
    train_batch_size: int = 128
    learning_rate: float = 1e-3
    lr_scheduler: str = "constant_with_warmup"
    lr_warmup_steps: int = 100
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 0.0
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    checkpointing_steps: int = 500
    checkpoints_total_limit: int | None = 2
    resume_from_checkpoint: str | None = None
    logging_steps: int = 50
    validation_steps: int = 0
    mixed_precision: str = "no"
    seed: int = 0

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "OptimizationSettings":
        return cls(**{field.name: getattr(args, field.name) for field in fields(cls)})
