"""What the image families share in block-wise training: labelled images as examples.

`LabelledImageTask` implements the `TrainingTask` protocol for a model trained on (image, label) pairs
held in memory: the model, the batch; saving, uploading and finding finished blocks are
`BlockOutputFolder`'s. `DiTTrainingTask` (class-conditional generation: the denoising loss, a
pipeline folder, pictures of one-step denoising) and `ViTTrainingTask` (classification: the label
denoising loss, a model folder, the validation loss) give what differs.

`log_image` sends a PNG written to disk to TensorBoard's Images tab.
"""

from __future__ import annotations

import logging
import os

import torch
from accelerate import Accelerator

from ..losses import BlockDenoisingLoss
from ..modeling.modeling_blocks import DiffusionBlocksPreTrainedModel
from ..models.dit import DiffusionBlocksDiTConfig, DiffusionBlocksDiTModel, drop_class_labels
from ..models.vit import DiffusionBlocksForImageClassification, DiffusionBlocksViTConfig, classification_training_loss
from ..pipelines import DiffusionBlocksImagePipeline
from ..schedulers import DiffusionBlocksScheduler
from ..utils.image_grid import save_image_grid
from .output_folder import BlockOutputFolder, HubTarget
from .tracking import log_metrics, process_writers

logger = logging.getLogger(__name__)

# Images of the pictures a DiT block logs, and of the loss a ViT block logs, at each validation.
DIT_VALIDATION_IMAGES = 8
VIT_VALIDATION_IMAGES = 256


def log_image(accelerator: Accelerator, tag: str, path: str, step: int) -> None:
    """Send the PNG at `path` to TensorBoard when it is a tracker."""
    import numpy as np
    from PIL import Image

    for writer in process_writers(accelerator):
        writer.add_image(tag, np.asarray(Image.open(path).convert("RGB")), step, dataformats="HWC")


class LabelledImageTask(BlockOutputFolder):
    """Block-wise training on `images` (N, C, H, W) in [-1, 1] and their class `labels` (N,).

    Args:
        model_class: the family's `DiffusionBlocksPreTrainedModel` subclass (`model_class(config, block_indices=...)`).
        config: the model config.
        images (`torch.Tensor`), labels (`torch.LongTensor`): the training examples.
        output_dir, weights_subfolder, hub, hub_commit_message: see `BlockOutputFolder`.
    """

    def __init__(self, model_class: type[DiffusionBlocksPreTrainedModel], config, images: torch.Tensor, labels: torch.Tensor,
                 output_dir: str, **folder):
        super().__init__(output_dir, **folder)
        if len(images) != len(labels):
            raise ValueError(f"images: {len(images)} images for {len(labels)} labels; give one label per image.")
        self.model_class = model_class
        self.config = config
        self.images, self.labels = images, labels
        self.num_examples = len(labels)

    def build_model(self, block_indices: list[int]) -> DiffusionBlocksPreTrainedModel:
        return self.model_class(self.config, block_indices=block_indices)

    def get_batch(self, indices: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.images[indices].to(device), "labels": self.labels[indices].to(device)}


class DiTTrainingTask(LabelledImageTask):
    """The DiT family's part of block-wise training: the denoising loss with label dropout (classifier-free
    guidance), pictures of one-step denoising, a pipeline folder (`transformer/`, `scheduler/`).

    Args:
        config (`DiffusionBlocksDiTConfig`): the model config.
        train_set, validation_set: image datasets (`images`, `labels`), e.g. from `data.load_image_dataset`.
        output_dir (`str`): the run's output folder.
        hub (`HubTarget`, *optional*): upload each finished block there.
    """

    def __init__(self, config: DiffusionBlocksDiTConfig, train_set, validation_set, output_dir: str, hub: HubTarget | None = None):
        super().__init__(DiffusionBlocksDiTModel, config, train_set.images, train_set.labels, output_dir,
                         weights_subfolder="transformer", hub=hub)
        self.validation_images = validation_set.images[:DIT_VALIDATION_IMAGES]
        self.scheduler = DiffusionBlocksScheduler(**config.scheduler_kwargs())
        self.loss_function = BlockDenoisingLoss(config.noise_partition, config.preconditioning)

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

    def save_outputs(self, model, block_index: int) -> None:
        """The whole pipeline folder (model_index.json, scheduler/, transformer/ with this block's file)."""
        DiffusionBlocksImagePipeline(model, self.scheduler).save_pretrained(self.output_dir)


class ViTTrainingTask(LabelledImageTask):
    """The ViT family's part of block-wise training: the label-denoising loss (`objective`), the validation
    loss, a model folder.

    Args:
        config (`DiffusionBlocksViTConfig`): the model config.
        train_set, validation_set: image datasets (`images`, `labels`), e.g. from `data.load_image_dataset`.
        output_dir (`str`): the run's output folder.
        objective (`str`): the block loss, one of `models.vit.LABEL_OBJECTIVES`.
        max_train_samples (`int`, *optional*): train on the first this many images (None: all).
        hub (`HubTarget`, *optional*): upload each finished block there.
    """

    def __init__(self, config: DiffusionBlocksViTConfig, train_set, validation_set, output_dir: str, *, objective: str,
                 max_train_samples: int | None = None, hub: HubTarget | None = None):
        images, labels = first_examples(train_set, max_train_samples)
        super().__init__(DiffusionBlocksForImageClassification, config, images, labels, output_dir, hub=hub,
                         hub_commit_message="Upload config and index")
        self.validation_images = validation_set.images[:VIT_VALIDATION_IMAGES]
        self.validation_labels = validation_set.labels[:VIT_VALIDATION_IMAGES]
        self.objective = objective

    def loss(self, model, block_index: int, batch: dict[str, torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        return classification_training_loss(model, block_index, batch["pixel_values"], batch["labels"], generator, self.objective)

    @torch.no_grad()
    def log_validation(self, model, block_index: int, step: int, accelerator: Accelerator) -> None:
        """The block's loss on the held-out `validation_images` (the first VIT_VALIDATION_IMAGES of the
        validation split), with fixed σ and noise, so successive values are comparable."""
        batch = {"pixel_values": self.validation_images.to(accelerator.device),
                 "labels": self.validation_labels.to(accelerator.device)}
        value = float(self.loss(model, block_index, batch, torch.Generator().manual_seed(0)))
        log_metrics(accelerator, {f"validation/loss_block_{block_index}": value}, step=step)
        logger.info("block %d step %d: validation loss %.4f", block_index, step, value)


def first_examples(dataset, count: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `count` (images, labels) of `dataset` (all when None)."""
    if count is None:
        return dataset.images, dataset.labels
    return dataset.images[:count], dataset.labels[:count]
