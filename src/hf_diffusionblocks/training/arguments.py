"""Command-line flags shared by every `examples/train_<family>.py` script, and their typed settings."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, fields, replace
from typing import Any

from ..argument_checks import check_number
from ..modeling.block_container import validate_block_indices
from ..smoke import apply_smoke_caps

TRAINING_MODES = ("blockwise", "end_to_end")
# Steps per block when neither --max_train_steps nor --num_train_epochs is given.
DEFAULT_MAX_TRAIN_STEPS = 1000


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """`--help` keeps the script's docstring as written and shows every flag's default (a default of None or
    False is left out: the flag's help says what leaving it unset means)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


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
    noise_partition: bool = True,
    layer_split: bool = True,
) -> None:
    """The flags every training script shares, named as in diffusers' training examples where they mean the
    same thing (docs/architecture.md, 'Data flow at training').

    `defaults` overrides per family; a family with a baseline of its own adds it to `training_modes` (the
    recurrent family's `bptt`); a family whose blocks split something other than a continuous noise range
    (masked diffusion splits the masking time) passes `noise_partition=False` and gets no `--partition` /
    `--overlap`, rather than flags it would refuse; one whose blocks are not a split of its layers (the
    recurrent family's iterations, a converted pretrained model) passes `layer_split=False` and gets no
    `--layers_per_block`."""
    if not set(TRAINING_MODES) <= set(training_modes):
        raise ValueError(f"training_modes must include {TRAINING_MODES}, got {training_modes}.")
    group = parser.add_argument_group("DiffusionBlocks training")
    group.add_argument("--block_index", type=parse_block_index, default="all",
                       help="Block to train (0 = highest noise), or 'all' to train every block one after another.")
    group.add_argument("--training_mode", choices=training_modes, default="blockwise",
                       help="'blockwise' trains B independent blocks; 'end_to_end' trains the same layers as one "
                            "block over the whole noise range (the baseline).")
    group.add_argument("--num_blocks", type=int, default=3, help="Number of blocks B (end_to_end uses 1).")
    if layer_split:
        group.add_argument("--layers_per_block", type=int, nargs="+", default=None,
                           help="Layers of each block, block 0 (noisiest) first, summing to --num_hidden_layers "
                                "(None: equal shares). Block-wise training only.")
    if noise_partition:
        add_partition_arguments(group)
    group.add_argument("--dataset_name", "--dataset", dest="dataset_name", type=str, default=None,
                       help="A builtin dataset name, a local folder or file, or a `datasets` Hub name.")
    group.add_argument("--output_dir", type=str, required=True, help="Where the pipeline folder, checkpoints and logs go.")
    group.add_argument("--overwrite_output_dir", action="store_true",
                       help="Retrain blocks already finished in --output_dir (without it such a run stops before training).")
    _add_optimization_arguments(group)
    _add_run_arguments(group)
    if defaults:
        parser.set_defaults(**defaults)


def _add_optimization_arguments(group: argparse._ArgumentGroup) -> None:
    """Steps, batch sizes, AdamW, its schedule, clipping and the EMA."""
    group.add_argument("--max_train_steps", type=int, default=None,
                       help=f"Optimisation steps per block (end_to_end: steps of the one block). Default: "
                            f"{DEFAULT_MAX_TRAIN_STEPS}, unless --num_train_epochs is given.")
    group.add_argument("--max_train_steps_per_block", type=int, nargs="+", default=None,
                       help="Steps of each block, one number per block (instead of --max_train_steps), e.g. more "
                            "for the high-noise block 0. With --block_index b, block b trains its own number.")
    group.add_argument("--num_train_epochs", type=int, default=None,
                       help="Train each block for this many passes over the training examples instead of "
                            "--max_train_steps (steps = epochs x examples // (batch size x data-parallel replicas)).")
    group.add_argument("--train_batch_size", type=int, default=128, help="Examples per forward pass and process.")
    group.add_argument("--train_batch_size_per_block", type=int, nargs="+", default=None,
                       help="Examples per forward pass of each block, one number per block (instead of "
                            "--train_batch_size), e.g. more for a block whose loss sees few targets per example.")
    group.add_argument("--gradient_accumulation_steps", type=int, default=1,
                       help="Forward/backward passes whose gradients are summed before each optimizer step: each "
                            "step sees train_batch_size x this many examples per process.")
    group.add_argument("--learning_rate", type=float, default=1e-3, help="AdamW learning rate after warm-up.")
    group.add_argument("--lr_scheduler", type=str, default="constant_with_warmup",
                       help="A diffusers learning-rate schedule name (constant, constant_with_warmup, cosine, linear, ...).")
    group.add_argument("--lr_warmup_steps", type=int, default=100, help="Warm-up steps, per block.")
    group.add_argument("--adam_beta1", type=float, default=0.9, help="AdamW beta1.")
    group.add_argument("--adam_beta2", type=float, default=0.999, help="AdamW beta2.")
    group.add_argument("--adam_weight_decay", type=float, default=0.0, help="AdamW weight decay.")
    group.add_argument("--adam_epsilon", type=float, default=1e-8, help="AdamW epsilon.")
    group.add_argument("--max_grad_norm", type=float, default=1.0, help="Gradient clipping norm (0 disables).")
    group.add_argument("--use_ema", action="store_true",
                       help="Keep an exponential moving average of each block's weights (diffusers' EMAModel) and "
                            "save it as the block's weights.")
    group.add_argument("--ema_decay", type=float, default=0.9999, help="EMA decay, with --use_ema.")


def _add_run_arguments(group: argparse._ArgumentGroup) -> None:
    """Checkpoints, logs, validation, precision, tracking, the Hub and the seed."""
    group.add_argument("--checkpointing_steps", type=int, default=500, help="Save a resumable checkpoint every N steps.")
    group.add_argument("--checkpoints_total_limit", type=int, default=2, help="Keep at most this many checkpoints per block.")
    group.add_argument("--resume_from_checkpoint", type=str, default=None,
                       help="'latest' or a checkpoint folder; finished blocks are skipped.")
    group.add_argument("--logging_steps", type=int, default=50,
                       help="Log the loss every N steps (and print a progress line when output is not a terminal).")
    group.add_argument("--validation_steps", type=int, default=0,
                       help="Run the family's validation (images, or the held-out loss) every N steps "
                            "(0: only at the end of each block).")
    group.add_argument("--mixed_precision", choices=("no", "fp16", "bf16"), default="no", help="Autocast precision.")
    group.add_argument("--report_to", type=str, default="tensorboard", help="'tensorboard', 'wandb', 'all' or 'none'.")
    group.add_argument("--push_to_hub", action="store_true", help="Upload each block to the Hub as soon as it is done.")
    group.add_argument("--hub_model_id", type=str, default=None, help="Hub repo id for --push_to_hub (org/name).")
    group.add_argument("--hub_token", type=str, default=None,
                       help="Hub token for --push_to_hub (default: the token saved by `hf auth login`).")
    group.add_argument("--seed", type=int, default=0, help="Seed of the initialisation, the batch order and the noise.")


def add_partition_arguments(group: argparse._ArgumentGroup) -> None:
    """`--partition` and `--overlap`: how a continuous noise range is split between blocks."""
    group.add_argument("--partition", choices=("equiprobable", "uniform_linear", "uniform_log"), default="equiprobable",
                       help="How the noise range is split between blocks.")
    group.add_argument("--overlap", type=float, default=0.05,
                       help="Block overlap gamma: each block also trains a little beyond its interval (paper: 0.05 "
                            "images, 0.1 text).")


def require_at_least(args: argparse.Namespace, names: tuple[str, ...], minimum: int = 1) -> None:
    """Raise a `ValueError` naming the first flag of `names` below `minimum` (flags left at None are unset)."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < minimum:
            raise ValueError(f"--{name} must be >= {minimum}, got {value}.")


def validate_common_arguments(args: argparse.Namespace) -> None:
    """Cross-field checks with errors that name the flag; run before anything is written.

    Also settles the step budget: `--max_train_steps` and `--num_train_epochs` exclude each other, and
    with neither the budget is `DEFAULT_MAX_TRAIN_STEPS` (epochs become steps in `resolve_max_train_steps`,
    once the number of examples is known)."""
    require_at_least(args, ("max_train_steps", "num_train_epochs", "train_batch_size", "gradient_accumulation_steps",
                            "checkpointing_steps", "logging_steps", "num_blocks"))
    # optimiser numbers: finite and in range (a NaN would otherwise pass every `>` test and train silently wrong)
    check_number(args.learning_rate, "--learning_rate", 0, minimum_exclusive=True)
    check_number(args.adam_beta1, "--adam_beta1", 0, 1, maximum_exclusive=True)
    check_number(args.adam_beta2, "--adam_beta2", 0, 1, maximum_exclusive=True)
    check_number(args.adam_weight_decay, "--adam_weight_decay", 0)
    check_number(args.adam_epsilon, "--adam_epsilon", 0, minimum_exclusive=True)
    check_number(args.max_grad_norm, "--max_grad_norm", 0, hint=" (0 disables clipping)")
    check_number(args.ema_decay, "--ema_decay", 0, 1, maximum_exclusive=True)
    if args.checkpoints_total_limit is not None:
        require_at_least(args, ("checkpoints_total_limit",))
    if args.lr_warmup_steps < 0 or args.validation_steps < 0:
        raise ValueError("--lr_warmup_steps and --validation_steps must be >= 0.")
    if args.max_train_steps is not None and args.num_train_epochs is not None:
        raise ValueError(
            f"give --max_train_steps ({args.max_train_steps}) or --num_train_epochs ({args.num_train_epochs}), not both."
        )
    per_block = _per_block_values(args, "max_train_steps_per_block")
    if per_block is not None:
        if args.max_train_steps is not None or args.num_train_epochs is not None:
            raise ValueError("give --max_train_steps_per_block, or --max_train_steps / --num_train_epochs, not both.")
        args.max_train_steps = max(per_block)  # the longest block: what step-counted settings are checked against
    if _per_block_values(args, "train_batch_size_per_block") is not None and args.num_train_epochs is not None:
        raise ValueError("--train_batch_size_per_block counts steps, not epochs: give --max_train_steps, not --num_train_epochs.")
    if args.max_train_steps is None and args.num_train_epochs is None:
        args.max_train_steps = DEFAULT_MAX_TRAIN_STEPS
    if args.overwrite_output_dir and args.resume_from_checkpoint:
        raise ValueError(
            "--overwrite_output_dir retrains finished blocks from scratch and --resume_from_checkpoint continues "
            "from a checkpoint and skips them: choose one."
        )
    if args.push_to_hub and not args.hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id org/name.")
    if args.hub_token and not args.push_to_hub:
        raise ValueError("--hub_token is used by --push_to_hub only; add --push_to_hub or drop the token.")
    if getattr(args, "layers_per_block", None) is not None:
        if args.training_mode == "end_to_end":
            raise ValueError("--layers_per_block splits the layers among blocks; end-to-end training has one block (drop the flag).")
        if len(args.layers_per_block) != args.num_blocks or min(args.layers_per_block) < 1:
            raise ValueError(
                f"--layers_per_block needs one count >= 1 per block (--num_blocks {args.num_blocks}), got {args.layers_per_block}."
            )
    if args.training_mode == "end_to_end" and args.block_index not in ("all", 0):
        raise ValueError(f"--training_mode end_to_end trains a single block: --block_index must be 0 or 'all', got {args.block_index}.")
    if args.training_mode == "blockwise" and args.block_index != "all":
        validate_block_indices([args.block_index], args.num_blocks)
    apply_smoke_caps(args)  # HF_DIFFUSIONBLOCKS_SMOKE=1: tiny step counts and sizes (the documentation's tests)


def _per_block_values(args: argparse.Namespace, name: str) -> list[int] | None:
    """`--<name>` (one integer >= 1 per block of a block-wise run), checked; None when not given."""
    values = getattr(args, name, None)
    if values is None:
        return None
    if args.training_mode != "blockwise" or len(values) != args.num_blocks:
        raise ValueError(
            f"--{name} needs one number per block of a blockwise run (--num_blocks {args.num_blocks}), got {values} "
            f"with --training_mode {args.training_mode}."
        )
    if min(values) < 1:
        raise ValueError(f"--{name} must all be >= 1, got {values}.")
    return values


def resolve_max_train_steps(args: argparse.Namespace, num_examples: int, replicas: int = 1) -> int:
    """`--max_train_steps`, or `--num_train_epochs` passes over `num_examples` at `train_batch_size` per
    process, `gradient_accumulation_steps` passes per step and `replicas` data-parallel processes per block
    (`BatchOrder` drops an epoch's last partial batch, so an epoch is
    `num_examples // (train_batch_size * gradient_accumulation_steps * replicas)` steps). Sets and returns
    `args.max_train_steps`."""
    if args.num_train_epochs is None:
        return args.max_train_steps
    steps_per_epoch = num_examples // (args.train_batch_size * args.gradient_accumulation_steps * replicas)
    if steps_per_epoch < 1:
        raise ValueError(
            f"--num_train_epochs needs at least one full batch: {num_examples} training examples, "
            f"--train_batch_size {args.train_batch_size} x --gradient_accumulation_steps "
            f"{args.gradient_accumulation_steps} x {replicas} replica(s)."
        )
    args.max_train_steps = args.num_train_epochs * steps_per_epoch
    return args.max_train_steps


# The flags that say what a run trains on, whichever script has them: a resumed run must read the same data.
TRAINING_DATA_FLAGS = ("dataset_name", "train_file", "text_column", "validation_split_percentage", "image_column",
                       "label_column", "resolution", "max_train_samples", "latents_file")


def training_data(args: argparse.Namespace) -> tuple[tuple[str, Any], ...]:
    """`(flag, value)` of every `TRAINING_DATA_FLAGS` flag `args` sets (files as absolute paths): the data's identity."""
    values = ((name, getattr(args, name, None)) for name in TRAINING_DATA_FLAGS)
    return tuple((name, os.path.abspath(value) if name.endswith("_file") else value)
                 for name, value in values if value is not None)


@dataclass
class OptimizationSettings:
    """What `BlockTrainer` needs from the command line, typed (`training_data`: what it trains on, see
    `training_data()`)."""

    output_dir: str
    max_train_steps: int = DEFAULT_MAX_TRAIN_STEPS
    max_train_steps_per_block: tuple[int, ...] | None = None
    train_batch_size: int = 128
    train_batch_size_per_block: tuple[int, ...] | None = None
    learning_rate: float = 1e-3
    lr_scheduler: str = "constant_with_warmup"
    lr_warmup_steps: int = 100
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 0.0
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    gradient_accumulation_steps: int = 1
    use_ema: bool = False
    ema_decay: float = 0.9999
    checkpointing_steps: int = 500
    checkpoints_total_limit: int | None = 2
    resume_from_checkpoint: str | None = None
    logging_steps: int = 50
    validation_steps: int = 0
    mixed_precision: str = "no"
    seed: int = 0
    training_data: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "OptimizationSettings":
        values = {field.name: getattr(args, field.name, field.default) for field in fields(cls)}
        values["training_data"] = training_data(args)
        for name in ("max_train_steps_per_block", "train_batch_size_per_block"):
            if values[name] is not None:
                values[name] = tuple(values[name])
        return cls(**values)

    def for_block(self, block_index: int) -> "OptimizationSettings":
        """The settings block `block_index` trains under: its own step count and batch size with
        `max_train_steps_per_block` / `train_batch_size_per_block`."""
        changes = {}
        if self.max_train_steps_per_block is not None:
            changes["max_train_steps"] = self.max_train_steps_per_block[block_index]
        if self.train_batch_size_per_block is not None:
            changes["train_batch_size"] = self.train_batch_size_per_block[block_index]
        return replace(self, **changes) if changes else self


def add_text_data_arguments(parser: argparse.ArgumentParser, default_dataset: str = "shakespeare") -> None:
    """The text families' data flags, after transformers' `run_clm`: a dataset by name, or local text files.

    `--dataset_name` then defaults to `default_dataset` only when no `--train_file` is given
    (`validate_text_data_arguments` settles it)."""
    dataset_action = parser._option_string_actions["--dataset_name"]
    dataset_action.default = None
    dataset_action.help = (f"'shakespeare', 'jargon', a local text file, or a `datasets` text dataset (a local folder, "
                           f"e.g. of train.txt / validation.txt, or a Hub name). Default: {default_dataset}, unless "
                           "--train_file is given.")
    parser.set_defaults(dataset_name=None, default_dataset_name=default_dataset)
    group = parser.add_argument_group("text data")
    group.add_argument("--train_file", type=str, default=None, help="A local text file to train on (instead of --dataset_name).")
    group.add_argument("--validation_file", type=str, default=None,
                       help="A local text file for the validation loss (None: carve --validation_split_percentage "
                            "off the end of the training text, as for a dataset without a validation split).")
    group.add_argument("--validation_split_percentage", type=float, default=5,
                       help="Percent of the training text held out for validation when there is no validation text.")
    group.add_argument("--text_column", type=str, default=None, help="Text column of a `datasets` dataset (None: 'text').")


def validate_text_data_arguments(args: argparse.Namespace) -> None:
    """One source of training text, and the default dataset when none is named."""
    if args.dataset_name is not None and args.train_file is not None:
        raise ValueError(f"give --dataset_name ({args.dataset_name}) or --train_file ({args.train_file}), not both.")
    if args.validation_file is not None and args.train_file is None:
        raise ValueError("--validation_file goes with --train_file (a dataset brings its own validation split).")
    if args.dataset_name is None and args.train_file is None:
        args.dataset_name = args.default_dataset_name
    if not 0 < args.validation_split_percentage <= 50:
        raise ValueError(f"--validation_split_percentage must be in (0, 50], got {args.validation_split_percentage}.")
    for flag in ("train_file", "validation_file"):
        path = getattr(args, flag)
        if path is not None and not os.path.isfile(os.path.expanduser(path)):
            raise ValueError(f"--{flag} {path}: no such file.")
