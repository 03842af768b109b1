"""A training run of an image family from its parsed flags: what `examples/train_dit.py` and
`examples/train_vit.py` call once their arguments are checked.

    summary = train_dit(args)      # data → config → DiTTrainingTask → the blocks of this process
                                   # → the sample grid and the model card once every block is there

The flags each function reads are those of the shared training flags (`arguments.py`) and of the
script's family group (`--model_size`, `--patch_size`, `--resolution`, ...). Data and config are
built first, so a bad dataset or size fails before anything is written to `--output_dir`.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
import json
import logging
import os

import torch
from accelerate import Accelerator

from ..data import load_image_dataset
from ..models.dit import DIT_SIZES, DiffusionBlocksDiTConfig, DiffusionBlocksDiTModel
from ..models.vit import VIT_SIZES, DiffusionBlocksForImageClassification, DiffusionBlocksViTConfig
from ..models.vit.evaluation_vit import accuracy_metric_path, predict_labels
from ..pipelines import DiffusionBlocksImagePipeline
from ..schedulers import DiffusionBlocksScheduler
from ..utils.image_grid import save_image_grid
from .image_task import DiTTrainingTask, ViTTrainingTask, first_examples, log_image
from .launch import create_accelerator, finish_run, train_assigned_blocks, write_card_and_publish
from .output_folder import HubTarget, complete_pipeline, every_block_saved
from .runtime import setup_logging
from .tracking import log_metrics

logger = logging.getLogger(__name__)

# What of eval_results.json the ViT's model card shows.
VIT_CARD_METRICS = ("accuracy", "num_examples", "num_inference_steps")


def load_image_splits(args: argparse.Namespace):
    """The "train" and "test" splits of `--dataset_name` (`--image_column`, `--label_column`, `--resolution`)."""
    return tuple(load_image_dataset(args.dataset_name, split, args.image_column, args.label_column, args.resolution)
                 for split in ("train", "test"))


def block_layout(args: argparse.Namespace) -> dict:
    """The config fields of the blocks: one block over the whole noise range when training end to end."""
    end_to_end = args.training_mode == "end_to_end"
    return dict(
        num_blocks=1 if end_to_end else args.num_blocks,
        layers_per_block=None if end_to_end else args.layers_per_block,
        partition=args.partition,
        overlap=0.0 if end_to_end else args.overlap,
    )


def build_dit_config(args: argparse.Namespace, train_set) -> DiffusionBlocksDiTConfig:
    # --hidden_size / --num_hidden_layers / --num_attention_heads override the named size
    size = replace(DIT_SIZES[args.model_size], **{
        name: getattr(args, name) for name in ("hidden_size", "num_hidden_layers", "num_attention_heads")
        if getattr(args, name, None) is not None
    })
    config = DiffusionBlocksDiTConfig(
        image_size=train_set.image_size, patch_size=args.patch_size, num_channels=train_set.num_channels,
        hidden_size=size.hidden_size, num_hidden_layers=size.num_hidden_layers,
        num_attention_heads=size.num_attention_heads, intermediate_size=size.intermediate_size,
        num_labels=train_set.num_labels, class_dropout_prob=args.class_dropout_prob, **block_layout(args),
    )
    config.id2label = dict(enumerate(train_set.class_names))
    return config


def build_vit_config(args: argparse.Namespace, train_set) -> DiffusionBlocksViTConfig:
    size = VIT_SIZES[args.model_size]
    config = DiffusionBlocksViTConfig(
        image_size=train_set.image_size, patch_size=args.patch_size, num_channels=train_set.num_channels,
        num_labels=train_set.num_labels, hidden_size=size.hidden_size,
        num_hidden_layers=args.num_hidden_layers or size.num_hidden_layers, num_attention_heads=size.num_attention_heads,
        intermediate_size=size.intermediate_size, label_embedding_dim=args.label_embedding_dim,
        classifier_type="standard" if args.training_mode == "end_to_end" else "diffusion",
        p_mean=args.p_mean, p_std=args.p_std, **block_layout(args),
    )
    config.id2label = dict(enumerate(train_set.class_names))
    return config


def write_sample_grid(args: argparse.Namespace, class_names: list[str], accelerator: Accelerator) -> str | None:
    """When every block is in the output folder: sample `--samples_per_class` images of every class into samples.png."""
    pipeline = complete_pipeline(DiffusionBlocksImagePipeline, DiffusionBlocksDiTModel, args.output_dir, accelerator.device,
                                 "the sample grid")
    if pipeline is None:
        return None
    config = pipeline.transformer.config
    labels = torch.arange(config.num_labels).repeat(args.samples_per_class)
    images = pipeline(class_labels=labels, guidance_scale=args.guidance_scale, num_inference_steps=args.num_inference_steps,
                      generator=torch.Generator().manual_seed(args.seed), output_type="pt").images
    path = os.path.join(args.output_dir, "samples.png")
    save_image_grid(images * 2 - 1, path, nrow=config.num_labels)
    log_image(accelerator, "samples/per_class_columns", path, 0)
    logger.info("sample grid (one column per class: %s) written to %s", ", ".join(class_names), path)
    return path


def evaluate_accuracy(args: argparse.Namespace, test_set, accelerator: Accelerator) -> dict | None:
    """When every block is in the output folder: test accuracy with the `evaluate` accuracy module, into
    eval_results.json (`--max_eval_samples`, `--eval_batch_size`, `--num_inference_steps`)."""
    import evaluate

    if not every_block_saved(DiffusionBlocksForImageClassification, args.output_dir, "the test accuracy"):
        return None
    model = DiffusionBlocksForImageClassification.from_pretrained(args.output_dir).to(accelerator.device)
    config = model.config
    images, labels = first_examples(test_set, args.max_eval_samples)
    predictions = predict_labels(model, images, args.eval_batch_size, args.num_inference_steps)
    result = evaluate.load(accuracy_metric_path()).compute(predictions=predictions.tolist(), references=labels.tolist())
    result.update(num_examples=len(labels), num_inference_steps=args.num_inference_steps or config.num_blocks,
                  classifier_type=config.classifier_type, num_blocks=config.num_blocks)
    with open(os.path.join(args.output_dir, "eval_results.json"), "w", encoding="utf-8") as file:
        json.dump(result, file, indent=2)
    log_metrics(accelerator, {"test/accuracy": result["accuracy"]}, step=0)
    logger.info("test accuracy %.4f on %d images", result["accuracy"], len(labels))
    return result


def train_dit(args: argparse.Namespace, project_name: str = "train_dit") -> dict:
    """Train the DiT blocks of this process; once every block is there, the sample grid and the model card."""
    setup_logging()
    train_set, validation_set = load_image_splits(args)
    config = build_dit_config(args, train_set)
    accelerator = create_accelerator(args, project_name)
    task = DiTTrainingTask(config, train_set, validation_set, args.output_dir, HubTarget.from_args(args))
    logger.info("%s, %d training images\n%s", args.training_mode, task.num_examples,
                task.scheduler.partition_table(config.resolved_layers_per_block))
    outcome = train_assigned_blocks(task, args, config.num_blocks, accelerator)
    samples = None
    if outcome.assignment.is_group_leader:  # the last group to finish finds every block present
        samples = write_sample_grid(args, train_set.class_names, accelerator)
        if samples:
            write_card_and_publish(args, "dit", sample_grid="samples.png")
    return finish_run(accelerator, args, config.num_blocks, outcome, sample_grid=samples)


def train_vit(args: argparse.Namespace, project_name: str = "train_vit") -> dict:
    """Train the ViT blocks of this process; once every block is there, the test accuracy and the model card."""
    setup_logging()
    train_set, test_set = load_image_splits(args)
    config = build_vit_config(args, train_set)
    accelerator = create_accelerator(args, project_name)
    task = ViTTrainingTask(config, train_set, test_set, args.output_dir, objective=args.objective,
                           max_train_samples=args.max_train_samples, hub=HubTarget.from_args(args))
    table = DiffusionBlocksScheduler(**config.scheduler_kwargs()).partition_table(config.resolved_layers_per_block)
    logger.info("%s (%s), %d training images\n%s", args.training_mode, config.classifier_type, task.num_examples, table)
    outcome = train_assigned_blocks(task, args, config.num_blocks, accelerator)
    evaluation = evaluate_accuracy(args, test_set, accelerator) if outcome.assignment.is_group_leader else None
    if evaluation is not None:  # every block is there
        write_card_and_publish(args, "vit", metrics={f"test {name}": evaluation[name] for name in VIT_CARD_METRICS})
    return finish_run(accelerator, args, config.num_blocks, outcome, eval=evaluation)
