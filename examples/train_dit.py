#!/usr/bin/env python
"""Train a class-conditional DiffusionBlocks DiT, block by block (or end to end, the baseline).

    accelerate launch examples/train_dit.py --dataset_name digits --output_dir outputs/dit-digits

`--block_index b` trains block b alone (only its parameters are built and optimised);
`--block_index all` trains the blocks one after another; `--training_mode end_to_end` trains
the same layers as one block over the whole noise range. The output folder is a pipeline folder
that `DiffusionBlocksImagePipeline.from_pretrained` loads; each block is in
`transformer/block_<b>.safetensors` and loads alone with
`DiffusionBlocksDiTModel.from_pretrained(output_dir, subfolder="transformer", block_index=b)`.
"""

from __future__ import annotations

import argparse
import logging
import os

import torch
from accelerate import Accelerator

from hf_diffusionblocks import (
    BlockDenoisingLoss,
    DiffusionBlocksDiTConfig,
    DiffusionBlocksDiTModel,
    DiffusionBlocksImagePipeline,
    DiffusionBlocksScheduler,
)
from hf_diffusionblocks.data import load_image_dataset
from hf_diffusionblocks.models.dit import DIT_SIZES, drop_class_labels
from hf_diffusionblocks.hub import push_shared_files_and_block
from hf_diffusionblocks.training import HelpFormatter, add_common_training_arguments, validate_common_arguments
from hf_diffusionblocks.training.progress import progress_bars_wanted
from hf_diffusionblocks.training.runtime import run_script, setup_logging
from hf_diffusionblocks.training.tracking import process_writers
from hf_diffusionblocks.training.launch import (
    create_accelerator,
    finish_run,
    finished_block_steps,
    present_blocks,
    train_assigned_blocks,
    write_card_and_publish,
)
from hf_diffusionblocks.utils.image_grid import save_image_grid

logger = logging.getLogger("train_dit")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_common_training_arguments(parser, defaults={"dataset_name": "digits"})
    dit = parser.add_argument_group("DiT")
    dit.add_argument("--model_size", choices=sorted(DIT_SIZES), default="XS",
                     help="DiT width/depth: " + ", ".join(f"{k}={v}" for k, v in DIT_SIZES.items()))
    dit.add_argument("--num_hidden_layers", type=int, default=None, help="Override the depth of --model_size.")
    dit.add_argument("--patch_size", type=int, default=2, help="Side of a patch; must divide the image side.")
    dit.add_argument("--resolution", "--image_size", dest="resolution", type=int, default=None,
                     help="Resize images to this side (None: their native size).")
    dit.add_argument("--image_column", type=str, default=None, help="Image column of a `datasets` dataset (None: the first image column).")
    dit.add_argument("--label_column", type=str, default=None, help="Label column of a `datasets` dataset (None: the first class-label column).")
    dit.add_argument("--class_dropout_prob", type=float, default=0.1, help="Null-label probability (CFG).")
    dit.add_argument("--num_inference_steps", type=int, default=48, help="Sampling steps of the final sample grid.")
    dit.add_argument("--guidance_scale", type=float, default=2.0, help="CFG weight of the final sample grid.")
    dit.add_argument("--samples_per_class", type=int, default=8, help="Rows of the final sample grid.")
    args = parser.parse_args(argv)
    validate_common_arguments(args)
    return args


def build_config(args: argparse.Namespace, num_channels: int, image_size: int, num_labels: int) -> DiffusionBlocksDiTConfig:
    size = DIT_SIZES[args.model_size]
    end_to_end = args.training_mode == "end_to_end"
    return DiffusionBlocksDiTConfig(
        image_size=image_size,
        patch_size=args.patch_size,
        num_channels=num_channels,
        hidden_size=size.hidden_size,
        num_hidden_layers=args.num_hidden_layers or size.num_hidden_layers,
        num_attention_heads=size.num_attention_heads,
        intermediate_size=size.intermediate_size,
        num_labels=num_labels,
        class_dropout_prob=args.class_dropout_prob,
        num_blocks=1 if end_to_end else args.num_blocks,
        layers_per_block=None if end_to_end else args.layers_per_block,
        partition=args.partition,
        overlap=0.0 if end_to_end else args.overlap,
    )


class DiTTrainingTask:
    """The DiT family's part of block-wise training: data, loss, pictures, outputs."""

    def __init__(self, config: DiffusionBlocksDiTConfig, train_set, validation_set, output_dir: str,
                 hub_model_id: str | None = None, hub_token: str | None = None):
        self.config = config
        self.images, self.labels = train_set.images, train_set.labels
        self.num_examples = len(self.labels)
        self.validation_images = validation_set.images[:8]
        self.output_dir = output_dir
        self.hub_model_id = hub_model_id
        self.hub_token = hub_token
        self.model_dir = os.path.join(output_dir, "transformer")
        self.scheduler = DiffusionBlocksScheduler(**config.scheduler_kwargs())
        self.loss_function = BlockDenoisingLoss(config.noise_partition, config.preconditioning)

    def build_model(self, block_indices: list[int]) -> DiffusionBlocksDiTModel:
        return DiffusionBlocksDiTModel(self.config, block_indices=block_indices)

    def get_batch(self, indices: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.images[indices].to(device), "labels": self.labels[indices].to(device)}

    def loss(self, model, block_index: int, batch: dict[str, torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        labels = drop_class_labels(batch["labels"], self.config.num_labels, self.config.class_dropout_prob, generator)
        return self.loss_function(model, block_index, batch["pixel_values"], generator, class_labels=labels)

    @torch.no_grad()
    def log_validation(self, model, block_index: int, step: int, accelerator: Accelerator) -> None:
        """One-step denoising at the block's geometric-mid σ: rows clean / noisy / denoised."""
        low, high = self.config.noise_partition.block_interval(block_index)
        sigma = (low * high) ** 0.5
        clean = self.validation_images.to(accelerator.device)
        noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(0)).to(clean.device)
        noisy = clean + sigma * noise
        denoised = model.forward_block(block_index, noisy, sigma).sample.clamp(-1, 1)
        grid = torch.cat([clean, noisy.clamp(-1, 1), denoised])
        path = os.path.join(self.output_dir, "validation", f"block_{block_index}_step_{step}.png")
        save_image_grid(grid, path, nrow=len(clean))
        log_image(accelerator, f"validation/block_{block_index}_sigma_{sigma:.3g}", path, step)

    def save_block(self, model, block_index: int, training_steps: int) -> None:
        model.block_training_steps[block_index] = training_steps
        DiffusionBlocksImagePipeline(model, self.scheduler).save_pretrained(self.output_dir)
        self.publish_block(block_index)

    def publish_block(self, block_index: int) -> None:
        """Upload the shared files, then the saved block as its own commit (nothing without --push_to_hub).

        Called again for a finished block by a resumed run, so an upload that failed is completed."""
        if self.hub_model_id:  # each block is its own commit, as soon as it is done
            # config, index and scheduler are identical from every process, so whoever finishes first
            # makes the repo loadable for the blocks present; the model card follows when all are.
            push_shared_files_and_block(self.output_dir, self.hub_model_id, block_index, token=self.hub_token)

    def finished_steps(self, block_index: int) -> int | None:
        return finished_block_steps(self.model_dir, block_index)


def log_image(accelerator: Accelerator, tag: str, path: str, step: int) -> None:
    """Send a PNG to TensorBoard when it is a tracker."""
    import numpy as np
    from PIL import Image

    for writer in process_writers(accelerator):
        writer.add_image(tag, np.asarray(Image.open(path).convert("RGB")), step, dataformats="HWC")


def write_sample_grid(args: argparse.Namespace, class_names: list[str], accelerator: Accelerator) -> str | None:
    """When every block is in the output folder: sample `samples_per_class` images of every class."""
    config = DiffusionBlocksDiTModel.load_config(os.path.join(args.output_dir, "transformer"))
    present = present_blocks(os.path.join(args.output_dir, "transformer"), config.num_blocks)
    if len(present) < config.num_blocks:
        logger.info("blocks %s of %d are done; the sample grid is written when all are.", present, config.num_blocks)
        return None
    pipeline = DiffusionBlocksImagePipeline.from_pretrained(args.output_dir).to(accelerator.device)
    # diffusers passes tqdm an explicit disable=False on the first process, which overrides TQDM_DISABLE
    pipeline.set_progress_bar_config(disable=not progress_bars_wanted())
    labels = torch.arange(config.num_labels).repeat(args.samples_per_class)
    images = pipeline(
        class_labels=labels,
        guidance_scale=args.guidance_scale,
        num_inference_steps=args.num_inference_steps,
        generator=torch.Generator().manual_seed(args.seed),
        output_type="pt",
    ).images
    path = os.path.join(args.output_dir, "samples.png")
    save_image_grid(images * 2 - 1, path, nrow=config.num_labels)
    log_image(accelerator, "samples/per_class_columns", path, 0)
    logger.info("sample grid (one column per class: %s) written to %s", ", ".join(class_names), path)
    return path


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    setup_logging()
    # data and config first: a bad dataset or size fails before anything is written to --output_dir
    train_set = load_image_dataset(args.dataset_name, "train", args.image_column, args.label_column, args.resolution)
    validation_set = load_image_dataset(args.dataset_name, "test", args.image_column, args.label_column, args.resolution)
    config = build_config(args, train_set.num_channels, train_set.image_size, train_set.num_labels)
    config.id2label = dict(enumerate(train_set.class_names))
    accelerator = create_accelerator(args, "train_dit")
    task = DiTTrainingTask(config, train_set, validation_set, args.output_dir,
                           args.hub_model_id if args.push_to_hub else None, args.hub_token)
    logger.info("%s, %d training images\n%s", args.training_mode, task.num_examples,
                task.scheduler.partition_table(config.resolved_layers_per_block))

    outcome = train_assigned_blocks(task, args, config.num_blocks, accelerator)
    samples = None
    if outcome.assignment.is_group_leader:  # the last group to finish finds every block present
        samples = write_sample_grid(args, train_set.class_names, accelerator)
        if samples:
            write_card_and_publish(args, "dit", sample_grid="samples.png")
    return finish_run(accelerator, args, config.num_blocks, outcome, sample_grid=samples)


if __name__ == "__main__":
    run_script(main)
