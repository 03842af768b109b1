#!/usr/bin/env python
"""Train a DiffusionBlocks ViT classifier, block by block (or end to end, the baseline).

    accelerate launch examples/train_vit.py --dataset_name fashion_mnist --output_dir outputs/vit-fashion

`--block_index b` trains block b alone (only its parameters are built and optimised): it reads the
image patches and a noisy label token z = E_y + σε with σ in its own noise interval, and learns
p(y | x, z) (`--objective`). `--block_index all` trains the blocks one after another.
`--training_mode end_to_end` is the paper's baseline: the same network (same layers, embedders and
head) trained end to end as an ordinary classifier with cross-entropy, one pass per image
(`classifier_type="standard"`: label token = a learned [CLS] embedding, constant AdaLN input).

The output folder is a model folder: `DiffusionBlocksForImageClassification.from_pretrained(output_dir)`
loads every block, `from_pretrained(output_dir, block_index=b)` block b alone. When every block is
there, the test accuracy (B Euler steps from σ_max, the label from the last readout) is computed with
the library's `evaluate` accuracy module and written to `eval_results.json`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os

import torch
from accelerate import Accelerator

from hf_diffusionblocks import DiffusionBlocksForImageClassification, DiffusionBlocksScheduler, DiffusionBlocksViTConfig
from hf_diffusionblocks.data import load_image_dataset
from hf_diffusionblocks.hub import push_shared_files_and_block
from hf_diffusionblocks.modeling.block_checkpoint import block_weights_name
from hf_diffusionblocks.models.vit import LABEL_OBJECTIVES, VIT_SIZES, classification_training_loss
from hf_diffusionblocks.models.vit.evaluation_vit import accuracy_metric_path, predict_labels
from hf_diffusionblocks.training import HelpFormatter, add_common_training_arguments, require_at_least, validate_common_arguments
from hf_diffusionblocks.training.runtime import run_script, setup_logging
from hf_diffusionblocks.training.tracking import log_metrics
from hf_diffusionblocks.training.launch import (
    create_accelerator,
    finish_run,
    finished_block_steps,
    train_assigned_blocks,
    write_card_and_publish,
)

logger = logging.getLogger("train_vit")

# What of eval_results.json the model card shows.
CARD_METRICS = ("accuracy", "num_examples", "num_inference_steps")

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_common_training_arguments(parser, defaults={"dataset_name": "digits", "lr_warmup_steps": 50})
    vit = parser.add_argument_group("ViT")
    vit.add_argument("--model_size", choices=sorted(VIT_SIZES), default="XS",
                     help="ViT width/depth: " + ", ".join(f"{k}={v}" for k, v in VIT_SIZES.items()))
    vit.add_argument("--num_hidden_layers", type=int, default=None, help="Override the depth of --model_size.")
    vit.add_argument("--patch_size", type=int, default=2, help="Side of a patch; must divide the image side.")
    vit.add_argument("--resolution", "--image_size", dest="resolution", type=int, default=None,
                     help="Resize images to this side (None: their native size).")
    vit.add_argument("--image_column", type=str, default=None, help="Image column of a `datasets` dataset (None: the first image column).")
    vit.add_argument("--label_column", type=str, default=None, help="Label column of a `datasets` dataset (None: the first class-label column).")
    vit.add_argument("--label_embedding_dim", type=int, default=None,
                     help="Dimension of the label space (default: the number of classes).")
    vit.add_argument("--objective", choices=LABEL_OBJECTIVES, default="cross_entropy",
                     help="Block loss: cross-entropy of the readout, or lambda(sigma)-weighted L2 on softmax(logits)·E.")
    vit.add_argument("--p_mean", type=float, default=DiffusionBlocksViTConfig.p_mean,
                     help="Mean of ln(sigma) of the noise distribution (EDM's images: -1.2; see DiffusionBlocksViTConfig).")
    vit.add_argument("--p_std", type=float, default=DiffusionBlocksViTConfig.p_std,
                     help="Std of ln(sigma) of the noise distribution (EDM's images: 1.2).")
    vit.add_argument("--max_train_samples", type=int, default=None, help="Train on the first N training images.")
    vit.add_argument("--max_eval_samples", type=int, default=None, help="Evaluate on the first N test images.")
    vit.add_argument("--num_inference_steps", type=int, default=None,
                     help="Euler steps of the evaluation (default: num_blocks, one step per block).")
    vit.add_argument("--eval_batch_size", type=int, default=500, help="Images per batch of the final test evaluation.")
    args = parser.parse_args(argv)
    validate_common_arguments(args)
    validate_vit_arguments(args)
    return args


def validate_vit_arguments(args: argparse.Namespace) -> None:
    require_at_least(args, ("max_train_samples", "max_eval_samples", "num_inference_steps", "num_hidden_layers", "patch_size",
                            "eval_batch_size"))


def build_config(args: argparse.Namespace, num_channels: int, image_size: int, num_labels: int) -> DiffusionBlocksViTConfig:
    size = VIT_SIZES[args.model_size]
    end_to_end = args.training_mode == "end_to_end"
    return DiffusionBlocksViTConfig(
        image_size=image_size,
        patch_size=args.patch_size,
        num_channels=num_channels,
        num_labels=num_labels,
        hidden_size=size.hidden_size,
        num_hidden_layers=args.num_hidden_layers or size.num_hidden_layers,
        num_attention_heads=size.num_attention_heads,
        intermediate_size=size.intermediate_size,
        label_embedding_dim=args.label_embedding_dim,
        classifier_type="standard" if end_to_end else "diffusion",
        num_blocks=1 if end_to_end else args.num_blocks,
        layers_per_block=None if end_to_end else args.layers_per_block,
        partition=args.partition,
        overlap=0.0 if end_to_end else args.overlap,
        p_mean=args.p_mean,
        p_std=args.p_std,
    )


def first(dataset, count: int | None):
    """The first `count` examples (all when None)."""
    if count is None:
        return dataset.images, dataset.labels
    return dataset.images[:count], dataset.labels[:count]


class ViTTrainingTask:
    """The ViT family's part of block-wise training: images, the block loss, validation, outputs."""

    def __init__(self, config: DiffusionBlocksViTConfig, train_set, validation_set, args: argparse.Namespace):
        self.config = config
        self.images, self.labels = first(train_set, args.max_train_samples)
        self.num_examples = len(self.labels)
        self.validation_images, self.validation_labels = validation_set.images[:256], validation_set.labels[:256]
        self.objective = args.objective
        self.output_dir = self.model_dir = args.output_dir
        self.push_to_hub, self.hub_model_id, self.hub_token = args.push_to_hub, args.hub_model_id, args.hub_token

    def build_model(self, block_indices: list[int]) -> DiffusionBlocksForImageClassification:
        return DiffusionBlocksForImageClassification(self.config, block_indices=block_indices)

    def get_batch(self, indices: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.images[indices].to(device), "labels": self.labels[indices].to(device)}

    def loss(self, model, block_index: int, batch: dict[str, torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        return classification_training_loss(
            model, block_index, batch["pixel_values"], batch["labels"], generator, self.objective
        )

    @torch.no_grad()
    def log_validation(self, model, block_index: int, step: int, accelerator: Accelerator) -> None:
        """The block's loss on 256 fixed test images with fixed σ and noise."""
        batch = self.get_batch(torch.arange(len(self.validation_labels)), accelerator.device)
        value = float(self.loss(model, block_index, batch, torch.Generator().manual_seed(0)))
        log_metrics(accelerator, {f"validation/loss_block_{block_index}": value}, step=step)
        logger.info("block %d step %d: validation loss %.4f", block_index, step, value)

    def save_block(self, model, block_index: int, training_steps: int) -> None:
        model.block_training_steps[block_index] = training_steps
        model.save_pretrained(self.output_dir, block_indices=[block_index])
        self.publish_block(block_index)

    def publish_block(self, block_index: int) -> None:
        """Upload the shared files, then the saved block as its own commit (nothing without --push_to_hub).

        Called again for a finished block by a resumed run, so an upload that failed is completed."""
        if self.push_to_hub:
            push_shared_files_and_block(self.output_dir, self.hub_model_id, block_index, subfolder="", token=self.hub_token,
                                        commit_message="Upload config and index")

    def finished_steps(self, block_index: int) -> int | None:
        return finished_block_steps(self.model_dir, block_index)


def evaluate_accuracy(args: argparse.Namespace, test_set, accelerator: Accelerator) -> dict | None:
    """When every block is in the output folder: test accuracy with the `evaluate` accuracy module."""
    import evaluate

    config = DiffusionBlocksForImageClassification.load_config(args.output_dir)
    present = [b for b in range(config.num_blocks) if os.path.isfile(os.path.join(args.output_dir, block_weights_name(b)))]
    if len(present) < config.num_blocks:
        logger.info("blocks %s of %d are done; the test accuracy is computed when all are.", present, config.num_blocks)
        return None
    model = DiffusionBlocksForImageClassification.from_pretrained(args.output_dir).to(accelerator.device)
    images, labels = first(test_set, args.max_eval_samples)
    predictions = predict_labels(model, images, args.eval_batch_size, args.num_inference_steps)
    metric = evaluate.load(accuracy_metric_path())
    result = metric.compute(predictions=predictions.tolist(), references=labels.tolist())
    result.update(num_examples=len(labels), num_inference_steps=args.num_inference_steps or config.num_blocks,
                  classifier_type=config.classifier_type, num_blocks=config.num_blocks)
    with open(os.path.join(args.output_dir, "eval_results.json"), "w", encoding="utf-8") as file:
        json.dump(result, file, indent=2)
    log_metrics(accelerator, {"test/accuracy": result["accuracy"]}, step=0)
    logger.info("test accuracy %.4f on %d images", result["accuracy"], len(labels))
    return result


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    setup_logging()
    # data and config first: a bad dataset or size fails before anything is written to --output_dir
    train_set = load_image_dataset(args.dataset_name, "train", args.image_column, args.label_column, args.resolution)
    test_set = load_image_dataset(args.dataset_name, "test", args.image_column, args.label_column, args.resolution)
    config = build_config(args, train_set.num_channels, train_set.image_size, train_set.num_labels)
    config.id2label = dict(enumerate(train_set.class_names))
    accelerator = create_accelerator(args, "train_vit")
    task = ViTTrainingTask(config, train_set, test_set, args)
    scheduler_table = DiffusionBlocksScheduler(**config.scheduler_kwargs()).partition_table(config.resolved_layers_per_block)
    logger.info("%s (%s), %d training images\n%s", args.training_mode, config.classifier_type, task.num_examples, scheduler_table)

    outcome = train_assigned_blocks(task, args, config.num_blocks, accelerator)
    evaluation = evaluate_accuracy(args, test_set, accelerator) if outcome.assignment.is_group_leader else None
    if evaluation is not None:  # every block is there
        write_card_and_publish(args, "vit", metrics={f"test {name}": evaluation[name] for name in CARD_METRICS})
    return finish_run(accelerator, args, config.num_blocks, outcome, eval=evaluation)


if __name__ == "__main__":
    run_script(main)
