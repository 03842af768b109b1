"""The `TrainingTask` of a converted pretrained diffusers transformer, fine-tuned block by block.

`PretrainedFinetuningTask` gives `BlockTrainer` block b of the converted folder
(`pretrained.finetuning.BlockFinetuningModel`: full or LoRA), the batches (clean samples and the
forward's conditioning tensors), and the model's own loss or a distillation loss. The finished block (or
its adapter, in `lora/`) replaces the original in the output folder, which `prepare_output_folder`
made a complete converted folder; saving, uploading and finding it are `BlockOutputFolder`'s.

`load_finetuning_data` reads the samples: a safetensors file of VAE latents and conditioning tensors,
or an image dataset of pixels and `class_labels`. For Flux the latents are packed `(N, tokens, channels)`
and the file also holds `img_ids` / `txt_ids`, one set shared by every sample.
"""

from __future__ import annotations

import os

import torch
from accelerate import Accelerator

from ..data import load_image_dataset
from ..pretrained.converted_folder import ConversionManifest, load_tensors
from ..pretrained.finetuning import LORA_FOLDER, OBJECTIVES, BlockFinetuningModel, NativeObjective, SourceTeacher, finetuning_loss
from ..pretrained.lora import LoraSettings
from ..pretrained.modeling_routed import routed_class_for
from .output_folder import BlockOutputFolder, HubTarget


def load_finetuning_data(manifest: ConversionManifest, *, latents_file: str | None = None,
                         dataset_name: str | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(clean samples, conditioning tensors by forward argument name), N rows each, from `latents_file` (a
    safetensors file with `latents` and the conditioning tensors) or else the "train" split of `dataset_name`."""
    if latents_file is not None:
        tensors = load_tensors(latents_file)
        if "latents" not in tensors:
            raise ValueError(f"--latents_file {latents_file} has no `latents` tensor (it has {sorted(tensors)}).")
        clean = tensors.pop("latents").float()
    else:
        dataset = load_image_dataset(dataset_name, "train")
        clean, tensors = dataset.images, {"class_labels": dataset.labels}
    source = f"--latents_file {latents_file}" if latents_file is not None else f"--dataset_name {dataset_name}"
    in_channels = manifest.source_config["in_channels"]
    routed = routed_class_for(manifest)
    layout = routed.sample_layout  # (N, in_channels, H, W); Flux: (N, tokens, in_channels)
    if clean.ndim != len(layout) or clean.shape[layout.index("in_channels")] != in_channels:
        shown = ", ".join(f"in_channels={in_channels}" if axis == "in_channels" else axis for axis in layout)
        raise ValueError(f"{source}: training samples have shape {tuple(clean.shape)}; the model takes ({shown}).")
    if not torch.isfinite(clean).all():
        raise ValueError(f"{source}: the training samples hold NaN or infinite values.")
    # the arguments shared by every sample (Flux's img_ids, txt_ids) have no rows
    wrong = [name for name, tensor in tensors.items()
             if name not in routed.shared_arguments and (tensor.ndim == 0 or tensor.shape[0] != clean.shape[0])]
    if wrong:
        raise ValueError(f"{source}: conditioning tensors {wrong} do not have {clean.shape[0]} rows like `latents`.")
    return clean, tensors


class PretrainedFinetuningTask(BlockOutputFolder):
    """Block b of a converted model, its batches, the native or distillation loss, and its output folder.

    Args:
        manifest (`ConversionManifest`): the conversion (`read_manifest(converted_dir)`).
        converted_dir (`str`): the converted folder, read by the distillation teacher.
        output_dir (`str`): the output folder: a complete converted folder (`prepare_output_folder`), or a converted
            pipeline folder holding one in `subfolder`.
        clean (`torch.Tensor` of shape `(N, C, H, W)`, Flux `(N, tokens, C)`), conditioning (`dict[str, torch.Tensor]`,
            N rows each but the routed class's `shared_arguments`): the data.
        objective (`str`): "native" (the model's own target) or "distill" (the original model's prediction).
        lora (`LoraSettings`, *optional*): train a LoRA on the block (saved in `lora/`) instead of all its weights.
        train_stems (`bool`): also train the shared stems.
        gradient_checkpointing (`bool`): recompute the block's layer activations in the backward pass.
        teacher_device (`str`, *optional*): device of the distillation teacher (None: the training device).
        hub (`HubTarget`, *optional*): upload each finished block (or adapter) there.
        subfolder (`str`): where `output_dir` keeps the converted folder ("" when it is one; "transformer" for a
            converted pipeline folder).
    """

    # the folder is checked against the conversion manifest (prepare_output_folder), not a block config
    config = None

    def __init__(self, manifest: ConversionManifest, converted_dir: str, output_dir: str, clean: torch.Tensor,
                 conditioning: dict[str, torch.Tensor], *, objective: str = "native", lora: LoraSettings | None = None,
                 train_stems: bool = False, teacher_device: str | None = None, hub: HubTarget | None = None,
                 gradient_checkpointing: bool = False, subfolder: str = ""):
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}.")
        super().__init__(output_dir, weights_subfolder=os.path.join(subfolder, LORA_FOLDER) if lora else subfolder, hub=hub)
        self.converted_output_dir = os.path.join(output_dir, subfolder) if subfolder else output_dir
        self.manifest, self.converted_dir = manifest, converted_dir
        self.clean, self.conditioning = clean, conditioning
        self.num_examples = clean.shape[0]
        self.objective = NativeObjective(manifest)
        self.distill, self.teacher_device, self.teacher = objective == "distill", teacher_device, None
        self.lora, self.train_stems, self.gradient_checkpointing = lora, train_stems, gradient_checkpointing

    def build_model(self, block_indices: list[int]) -> BlockFinetuningModel:
        if len(block_indices) != 1:
            raise ValueError(f"block_indices: a converted model is fine-tuned one block at a time, got {block_indices}.")
        return BlockFinetuningModel(self.converted_output_dir, block_indices[0], self.lora, self.train_stems,
                                    self.gradient_checkpointing)

    def get_batch(self, indices: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]:
        shared = routed_class_for(self.manifest).shared_arguments  # whole, not indexed by sample (Flux's position ids)
        conditioning = {k: (v if k in shared else v[indices]).to(device) for k, v in self.conditioning.items()}
        return {"clean": self.clean[indices].to(device), **conditioning}

    def loss(self, model, block_index: int, batch: dict[str, torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        if self.distill and self.teacher is None:  # built at the first step: it holds all L layers
            self.teacher = SourceTeacher(self.converted_dir, device=self.teacher_device or batch["clean"].device)
        conditioning = {k: v for k, v in batch.items() if k != "clean"}
        return finetuning_loss(model, block_index, batch["clean"], conditioning, self.objective, generator, self.teacher)

    def log_validation(self, model, block_index: int, step: int, accelerator: Accelerator) -> None:
        """No pictures: sampling needs every block; the loss curve is the per-block signal."""

    def save_outputs(self, model: BlockFinetuningModel, block_index: int) -> None:
        """The block's file (or adapter) over its original: the rest of the converted folder stays as it is."""
        model.save_block(self.model_dir, block_index, model.block_training_steps[block_index])
