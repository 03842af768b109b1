"""A fine-tuning run of a converted pretrained model from its parsed flags: what
`examples/finetune_pretrained.py` calls once its arguments are checked.

    summary = finetune_pretrained(args)   # the output folder as a complete converted folder → the data
                                          # → PretrainedFinetuningTask → the blocks → the model card

Its flags: the shared training flags (`arguments.py`, without the partition and layer-split flags:
the conversion fixed them) and `--converted_dir`, `--latents_file`, `--blocks_to_train`, `--objective`,
`--teacher_device`, `--use_lora`, `--lora_rank`, `--lora_alpha`, `--lora_target_modules`, `--train_stems`, `--gradient_checkpointing`.
"""

from __future__ import annotations

import argparse
import os
import logging

from ..hub import push_missing_blocks_to_hub, push_root_files_to_hub
from ..pretrained.converted_folder import read_manifest
from ..pretrained.converted_pipeline import converted_model_dir, copy_pipeline_components
from ..pretrained.finetuning import prepare_output_folder
from ..pretrained.lora import LoraSettings
from ..model_card import write_converted_model_card
from .launch import TrainingOutcome, create_accelerator, finish_run, train_assigned_blocks
from .output_folder import HubTarget
from .pretrained_task import PretrainedFinetuningTask, load_finetuning_data

logger = logging.getLogger(__name__)


def lora_settings(args: argparse.Namespace) -> LoraSettings | None:
    """The LoRA of `--use_lora` (`--lora_rank`, `--lora_alpha`, `--lora_target_modules`), or None."""
    return LoraSettings(args.lora_rank, args.lora_alpha, 0.0, tuple(args.lora_target_modules)) if args.use_lora else None


def train_requested_blocks(task: PretrainedFinetuningTask, args: argparse.Namespace, accelerator) -> TrainingOutcome:
    """`--blocks_to_train b1,b2,...` one after another, else the blocks of `--block_index` and the launch."""
    num_blocks = task.manifest.num_blocks
    if args.blocks_to_train is None:
        return train_assigned_blocks(task, args, num_blocks, accelerator)
    results = []
    for block_index in args.blocks_to_train:
        args.block_index = block_index
        outcome = train_assigned_blocks(task, args, num_blocks, accelerator)
        results += outcome.results
    outcome.results = results
    return outcome


def finetune_pretrained(args: argparse.Namespace, project_name: str = "finetune_pretrained") -> dict:
    """Fine-tune the blocks of this process, then write the model card (which blocks are fine-tuned, with what)."""
    accelerator = create_accelerator(args, project_name)
    model_dir, subfolder = converted_model_dir(args.converted_dir)  # a converted pipeline folder gives a pipeline folder
    output_model_dir = os.path.join(args.output_dir, subfolder) if subfolder else args.output_dir
    manifest = read_manifest(model_dir)
    if accelerator.is_main_process:
        if subfolder:
            copy_pipeline_components(args.converted_dir, args.output_dir, subfolder)
        prepare_output_folder(model_dir, output_model_dir)
    accelerator.wait_for_everyone()
    clean, conditioning = load_finetuning_data(manifest, latents_file=args.latents_file, dataset_name=args.dataset_name)
    task = PretrainedFinetuningTask(manifest, model_dir, args.output_dir, clean, conditioning, objective=args.objective,
                                    lora=lora_settings(args), train_stems=args.train_stems,
                                    teacher_device=args.teacher_device, hub=HubTarget.from_args(args),
                                    gradient_checkpointing=args.gradient_checkpointing, subfolder=subfolder)
    logger.info("%s, objective %s (%s), %s, %d samples\n%s", manifest.source_class, args.objective, task.objective.prediction_type,
                "LoRA" if args.use_lora else "full", task.num_examples, manifest.partition_table())
    outcome = train_requested_blocks(task, args, accelerator)
    if outcome.assignment.is_group_leader:
        # says which blocks are fine-tuned, with what, after this run
        write_converted_model_card(output_model_dir, pipeline_dir=args.output_dir if subfolder else None)
        if args.push_to_hub:
            push_root_files_to_hub(args.output_dir, args.hub_model_id, token=args.hub_token, commit_message="Update model card")
            # the blocks no process of this run trained: without them the repo would not load
            push_missing_blocks_to_hub(args.output_dir, args.hub_model_id, token=args.hub_token)
    return finish_run(accelerator, args, manifest.num_blocks, outcome, objective=args.objective, lora=args.use_lora,
                      gradient_checkpointing=args.gradient_checkpointing)
