#!/usr/bin/env python
"""Fine-tune a converted pretrained diffusers transformer block by block (full or LoRA).

    hf-diffusionblocks convert path/to/dit-pipeline converted --num_blocks 3
    accelerate launch examples/finetune_pretrained.py --converted_dir converted \\
        --latents_file latents.safetensors --output_dir outputs/dit-ft --block_index 1

Only block b's layers and the stems are loaded (the other blocks' tensors are never read), the
stems are frozen, and only block b's parameters (or its LoRA) have optimizer state. Block b trains
on timesteps drawn from its interval of the model's own time axis with the model's own objective
(ε, v or flow velocity, from the conversion's scheduler config); `--objective distill` regresses
the original model's prediction at the same (x_t, t) and needs no labels.

Data: `--latents_file` is a safetensors file with `latents` (N, C, H, W) (VAE latents, encoded
once beforehand) and one tensor per conditioning argument of the transformer's forward, N rows each
(`class_labels` for DiT; `encoder_hidden_states` and `encoder_attention_mask` for PixArt;
`encoder_hidden_states` and `pooled_projections` for SD3). `--dataset_name digits` (or any dataset
`load_image_dataset` reads) feeds pixels and `class_labels` to a pixel-space class-conditional model.

The output folder is a complete converted folder: the fine-tuned blocks replace the originals
(full), or `lora/block_<b>.safetensors` holds each block's adapter, merged on load with
`RoutedDiTTransformer2DModel.from_pretrained(output_dir, lora_dir=output_dir + "/lora")`.
"""

from __future__ import annotations

import argparse
import logging
import os

import torch
from accelerate import Accelerator

from hf_diffusionblocks.hub import push_root_files_to_hub, push_shared_files_and_block
from hf_diffusionblocks.pretrained.converted_folder import load_tensors, read_manifest
from hf_diffusionblocks.pretrained.finetuning import (
    LORA_FOLDER,
    OBJECTIVES,
    BlockFinetuningModel,
    NativeObjective,
    SourceTeacher,
    finetuning_loss,
    prepare_output_folder,
)
from hf_diffusionblocks.pretrained.lora import DEFAULT_TARGET_MODULES, LoraSettings
from hf_diffusionblocks.model_card import write_converted_model_card as write_model_card
from hf_diffusionblocks.training import add_common_training_arguments, validate_common_arguments
from hf_diffusionblocks.training.launch import create_accelerator, finish_run, finished_block_steps, train_assigned_blocks

logger = logging.getLogger("finetune_pretrained")
# what a repo needs besides the block files to load as a converted folder


def parse_block_list(value: str) -> list[int]:
    try:
        return [int(item) for item in value.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--blocks_to_train must be comma-separated block indices, got {value!r}.") from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # the conversion fixes B and the partition: no --partition/--overlap, and --num_blocks is refused if given
    add_common_training_arguments(parser, defaults={"learning_rate": 1e-4, "lr_warmup_steps": 0, "num_blocks": None},
                                  noise_partition=False, layer_split=False)   # the conversion fixed the split
    group = parser.add_argument_group("pretrained fine-tuning")
    group.add_argument("--converted_dir", required=True, help="a folder written by `hf-diffusionblocks convert`")
    group.add_argument("--latents_file", default=None, help="safetensors with `latents` and the forward's conditioning tensors")
    group.add_argument("--blocks_to_train", type=parse_block_list, default=None,
                       help="comma-separated blocks to train one after another (instead of --block_index)")
    group.add_argument("--objective", choices=OBJECTIVES, default="native",
                       help="'native': the model's own target; 'distill': the original model's prediction")
    group.add_argument("--teacher_device", default=None, help="device of the distillation teacher (default: the training device)")
    group.add_argument("--use_lora", action="store_true", help="train a LoRA on the block instead of all its weights")
    group.add_argument("--lora_rank", type=int, default=8)
    group.add_argument("--lora_alpha", type=float, default=8.0)
    group.add_argument("--lora_target_modules", nargs="+", default=list(DEFAULT_TARGET_MODULES))
    group.add_argument("--train_stems", action="store_true",
                       help="also train the shared stems (their optimizer state then costs memory, and blocks no longer share them)")
    args = parser.parse_args(argv)
    if args.num_blocks is not None:
        raise ValueError(f"--num_blocks {args.num_blocks}: the conversion fixed the blocks; convert again to change B.")
    manifest = read_manifest(args.converted_dir)
    args.num_blocks = manifest.num_blocks
    validate_common_arguments(args)
    if args.training_mode != "blockwise":
        raise ValueError("--training_mode: a converted model is fine-tuned block-wise; convert with --num_blocks 1 for end-to-end.")
    if (args.latents_file is None) == (args.dataset_name is None):
        raise ValueError("give exactly one of --latents_file and --dataset_name.")
    if args.train_stems and args.use_lora:
        raise ValueError("--train_stems trains full stems; it cannot be combined with --use_lora.")
    if args.blocks_to_train is not None:
        for block_index in args.blocks_to_train:
            manifest.time_partition.check_block_index(block_index)
    return args


def load_training_data(args: argparse.Namespace, manifest) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(clean samples, conditioning tensors by forward argument name), N rows each."""
    if args.latents_file is not None:
        tensors = load_tensors(args.latents_file)
        if "latents" not in tensors:
            raise ValueError(f"--latents_file {args.latents_file} has no `latents` tensor (it has {sorted(tensors)}).")
        clean = tensors.pop("latents").float()
    else:
        from hf_diffusionblocks.data import load_image_dataset

        dataset = load_image_dataset(args.dataset_name, "train")
        clean, tensors = dataset.images, {"class_labels": dataset.labels}
    in_channels = manifest.source_config["in_channels"]
    if clean.ndim != 4 or clean.shape[1] != in_channels:
        raise ValueError(f"training samples have shape {tuple(clean.shape)}; the model takes (N, in_channels={in_channels}, H, W).")
    wrong = [name for name, tensor in tensors.items() if tensor.shape[0] != clean.shape[0]]
    if wrong:
        raise ValueError(f"conditioning tensors {wrong} do not have {clean.shape[0]} rows like `latents`.")
    return clean, tensors


class PretrainedFinetuningTask:
    """`TrainingTask` of a converted pretrained model: block b's model, batches, native/distill loss, outputs."""

    def __init__(self, args: argparse.Namespace, clean: torch.Tensor, conditioning: dict[str, torch.Tensor]):
        self.args = args
        self.manifest = read_manifest(args.converted_dir)
        self.clean, self.conditioning = clean, conditioning
        self.num_examples = clean.shape[0]
        self.objective = NativeObjective(self.manifest)
        self.lora = LoraSettings(args.lora_rank, args.lora_alpha, 0.0, tuple(args.lora_target_modules)) if args.use_lora else None
        self.teacher = None
        self.blocks_dir = os.path.join(args.output_dir, LORA_FOLDER) if self.lora else args.output_dir
        # the folder is checked against the conversion manifest (prepare_output_folder), not a block config
        self.model_dir, self.config = self.blocks_dir, None

    def build_model(self, block_indices: list[int]) -> BlockFinetuningModel:
        (block_index,) = block_indices
        return BlockFinetuningModel(self.args.output_dir, block_index, self.lora, self.args.train_stems)

    def get_batch(self, indices: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]:
        return {"clean": self.clean[indices].to(device), **{k: v[indices].to(device) for k, v in self.conditioning.items()}}

    def loss(self, model, block_index: int, batch: dict[str, torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        if self.args.objective == "distill" and self.teacher is None:
            device = self.args.teacher_device or batch["clean"].device
            self.teacher = SourceTeacher(self.args.converted_dir, device=device)
        conditioning = {k: v for k, v in batch.items() if k != "clean"}
        return finetuning_loss(model, block_index, batch["clean"], conditioning, self.objective, generator, self.teacher)

    def log_validation(self, model, block_index: int, step: int, accelerator: Accelerator) -> None:
        """No pictures: sampling needs every block; the loss curve is the per-block signal."""

    def save_block(self, model: BlockFinetuningModel, block_index: int, training_steps: int) -> None:
        model.save_block(self.blocks_dir, block_index, training_steps)
        self.publish_block(block_index)

    def publish_block(self, block_index: int) -> None:
        """With --push_to_hub: the shared files in one commit (identical from every process), then this block (or
        its adapter, in lora/) as a one-file commit of its own."""
        if self.args.push_to_hub:
            push_shared_files_and_block(
                self.args.output_dir, self.args.hub_model_id, block_index, subfolder=LORA_FOLDER if self.lora else "",
                token=self.args.hub_token,
            )

    def finished_steps(self, block_index: int) -> int | None:
        return finished_block_steps(self.blocks_dir, block_index)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    accelerator = create_accelerator(args, "finetune_pretrained")
    manifest = read_manifest(args.converted_dir)
    if accelerator.is_main_process:
        prepare_output_folder(args.converted_dir, args.output_dir)
    accelerator.wait_for_everyone()
    clean, conditioning = load_training_data(args, manifest)
    task = PretrainedFinetuningTask(args, clean, conditioning)
    logger.info("%s, objective %s (%s), %s, %d samples\n%s", manifest.source_class, args.objective, task.objective.prediction_type,
                "LoRA" if args.use_lora else "full", task.num_examples, manifest.time_partition.table(manifest.layers_per_block))
    if args.blocks_to_train is not None:
        results = []
        for block_index in args.blocks_to_train:
            args.block_index = block_index
            outcome = train_assigned_blocks(task, args, manifest.num_blocks, accelerator)
            results += outcome.results
        outcome.results = results
    else:
        outcome = train_assigned_blocks(task, args, manifest.num_blocks, accelerator)
    if outcome.assignment.is_group_leader:
        write_model_card(args.output_dir)  # says which blocks are fine-tuned, with what, after this run
        if args.push_to_hub:
            push_root_files_to_hub(args.output_dir, args.hub_model_id, token=args.hub_token, commit_message="Update model card")
    return finish_run(accelerator, args, manifest.num_blocks, outcome, objective=args.objective, lora=args.use_lora)


if __name__ == "__main__":
    main()
