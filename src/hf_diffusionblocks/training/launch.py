"""What every `examples/train_<family>.py` does around its family's `TrainingTask`, written once.

    accelerator = create_accelerator(args, "train_dit")
    ...build the family's config and task...
    outcome = train_assigned_blocks(task, args, config.num_blocks, accelerator)
    if outcome.assignment.is_group_leader: ...samples or metrics, then once every block is there:
        write_card_and_publish(args, "dit", metrics=..., sample_grid=...)
    finish_run(accelerator, args, config.num_blocks, outcome, samples=...)

`train_assigned_blocks` makes every script block-parallel: under `torchrun`/`accelerate launch`
with several processes, each process trains the blocks `assign_blocks` gives it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
from dataclasses import dataclass
from typing import Any

from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration

from ..hub import push_root_files_to_hub
from ..model_card import write_model_card
from ..atomic_io import read_json_file, remove_stale_temporaries_below
from ..modeling.block_checkpoint import CONFIG_NAME
from ..modeling.configuration_blocks import BlockPartitionedConfig
from .arguments import OptimizationSettings, resolve_max_train_steps
from .checkpointing import BlockCheckpointManager
from .distributed import BlockAssignment, BlockProcessGroup, assign_blocks, init_distributed
from .runtime import configure_cpu_threads, setup_logging
from .tracking import attach_process_writer, close_process_writer
from .trainer import BlockTrainer, BlockTrainingResult, TrainingTask

logger = logging.getLogger(__name__)


def create_accelerator(args: argparse.Namespace, project_name: str) -> Accelerator:
    """An `Accelerator` for mixed precision and tracking, logging into `<output_dir>/logs`; on the CPU it also
    sets the number of torch threads (`runtime.configure_cpu_threads`).

    It creates `<output_dir>/logs`, so a script calls it once its arguments and data have been checked."""
    setup_logging()
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        log_with=None if args.report_to == "none" else args.report_to,
        project_config=ProjectConfiguration(project_dir=args.output_dir, logging_dir=os.path.join(args.output_dir, "logs")),
    )
    if args.report_to != "none":
        hyperparameters = {key: value for key, value in vars(args).items() if isinstance(value, (int, float, str, bool))}
        accelerator.init_trackers(project_name, config=hyperparameters)
        attach_process_writer(accelerator, args.report_to, project_name, accelerator.logging_dir)
    configure_cpu_threads(accelerator.device.type)
    return accelerator


def check_output_folder_config(model_dir: str, config: BlockPartitionedConfig) -> None:
    """Refuse to train into a folder whose saved model has another architecture: the blocks already there
    would not fit this run's, and the folder would end up mixing two models."""
    path = os.path.join(model_dir, CONFIG_NAME)
    if not os.path.isfile(path):
        return
    saved = read_json_file(path)
    differing = config.differing_fields(saved) if isinstance(saved, dict) else ["(not a JSON object)"]
    if differing:
        details = ", ".join(
            f"{name}: saved {saved.get(name)!r} vs now {config.architecture_dict().get(name)!r}" for name in differing
        )
        raise ValueError(
            f"--output_dir: {path} holds a model with another configuration ({details}); this run's blocks could not "
            "be assembled with the blocks already there. Use the same flags, or a new --output_dir."
        )


@dataclass
class TrainingOutcome:
    results: list[BlockTrainingResult]
    assignment: BlockAssignment
    rank: int
    world_size: int


def train_assigned_blocks(
    task: TrainingTask, args: argparse.Namespace, num_blocks: int, accelerator: Accelerator
) -> TrainingOutcome:
    """Train the blocks this process is assigned (`--block_index` and the launch's processes)."""
    rank, world_size = init_distributed()
    # what a run killed mid-save left behind (temporaries of processes that are gone; live ones are kept)
    remove_stale_temporaries_below(args.output_dir)
    if task.config is not None:  # a converted pretrained model's task checks its folder against its manifest
        check_output_folder_config(task.model_dir, task.config)
    assignment, all_groups = assign_blocks(args.block_index, num_blocks, rank, world_size)
    if world_size > 1:
        logger.info("process %d/%d trains blocks %s with ranks %s", rank, world_size, assignment.block_indices, assignment.group_ranks)
    check_finished_blocks(task, assignment, args)
    if args.num_train_epochs is not None:
        steps = resolve_max_train_steps(args, task.num_examples, assignment.group_size)
        logger.info("%d epoch(s) of %d examples at batch %d x %d replica(s): %d steps per block",
                    args.num_train_epochs, task.num_examples, args.train_batch_size, assignment.group_size, steps)
    trainer = BlockTrainer(task, OptimizationSettings.from_args(args), accelerator, BlockProcessGroup(assignment, all_groups))
    results = [trainer.train_block(block_index) for block_index in assignment.block_indices]
    return TrainingOutcome(results, assignment, rank, world_size)


def check_finished_blocks(task: TrainingTask, assignment: BlockAssignment, args: argparse.Namespace) -> None:
    """Refuse to retrain a block already finished in the output folder unless `--overwrite_output_dir` says so.

    With `--resume_from_checkpoint` a finished block is skipped (by `BlockTrainer`), so nothing is refused.
    With `--overwrite_output_dir` the blocks' old checkpoints are removed: they belong to the run being
    replaced, and a later `--resume_from_checkpoint latest` must not pick one of them up. Only the first
    process of a block's group removes them: it is the one that writes the new ones."""
    if args.resume_from_checkpoint:
        return
    if args.overwrite_output_dir:
        for block_index in assignment.block_indices if assignment.is_group_leader else ():
            directory = BlockCheckpointManager(args.output_dir, block_index).directory
            if os.path.isdir(directory):
                logger.info("--overwrite_output_dir: removing the old checkpoints of block %d (%s)", block_index, directory)
                shutil.rmtree(directory)
        return
    finished = {b: task.finished_steps(b) for b in assignment.block_indices}
    finished = {b: steps for b, steps in finished.items() if steps is not None}
    if finished:
        described = ", ".join(f"block {b} ({steps} steps)" for b, steps in sorted(finished.items()))
        raise ValueError(
            f"--output_dir {args.output_dir} already holds finished {described}. Pass --overwrite_output_dir to retrain "
            f"them, --resume_from_checkpoint latest to keep them and train the rest, or another --output_dir."
        )


# The flags a model card lists under "Training details" (the steps of each block are in its own table).
CARD_TRAINING_FLAGS = ("train_batch_size", "train_batch_size_per_block", "learning_rate", "lr_scheduler", "lr_warmup_steps", "seed")


def write_card_and_publish(
    args: argparse.Namespace, family: str, *, metrics: dict[str, Any] | None = None, sample_grid: str | None = None
) -> str:
    """Once the output folder holds every block: write its model card (`README.md`) and, with `--push_to_hub`,
    upload the shared files again, in one commit, so the card and what was written with it (samples,
    `eval_results.json`) reach the repo. Returns the card's path.

    The card names the data (`--dataset_name`, else `--train_file`), the training mode, `metrics` and the
    optimisation flags of `CARD_TRAINING_FLAGS`; the family's entry in `hf_diffusionblocks.families` gives
    its tags, pipeline tag, default steps and usage."""
    path = write_model_card(
        args.output_dir,
        family=family,
        dataset=getattr(args, "dataset_name", None) or getattr(args, "train_file", None),
        training_mode=args.training_mode,
        metrics=metrics,
        sample_grid=sample_grid,
        extra={name: getattr(args, name) for name in CARD_TRAINING_FLAGS if getattr(args, name, None) is not None},
        repo_id=args.hub_model_id,
    )
    logger.info("model card written to %s", path)
    if args.push_to_hub:
        push_root_files_to_hub(args.output_dir, args.hub_model_id, token=args.hub_token,
                               commit_message="Upload the model card and the final outputs")
    return path


def finish_run(
    accelerator: Accelerator, args: argparse.Namespace, num_blocks: int, outcome: TrainingOutcome, **extra: Any
) -> dict[str, Any]:
    """End tracking and print (and return) the run's JSON summary."""
    summary = {
        "output_dir": args.output_dir,
        "training_mode": args.training_mode,
        "num_blocks": num_blocks,
        "rank": outcome.rank,
        "blocks": [vars(result) for result in outcome.results],
        **extra,
    }
    accelerator.end_training()
    close_process_writer(accelerator)
    print(json.dumps(summary, indent=2))
    return summary
