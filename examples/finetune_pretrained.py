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

The output folder has the layout of `--converted_dir`: a converted pipeline folder (what `convert` writes
for a pipeline source) gives a pipeline folder that `DiffusionPipeline.from_pretrained(output_dir,
trust_remote_code=True)` samples, its transformer/ a complete converted folder whose fine-tuned blocks
replace the originals. A converted transformer folder gives one; with `--use_lora` (transformer folders
only) `lora/block_<b>.safetensors` holds each block's adapter, merged on load with
`RoutedDiTTransformer2DModel.from_pretrained(output_dir, lora_dir=output_dir + "/lora")`.
"""

from __future__ import annotations

import argparse
import os

import torch

from hf_diffusionblocks.argument_checks import check_integer, check_number
from hf_diffusionblocks.pretrained.converted_folder import read_manifest
from hf_diffusionblocks.pretrained.converted_pipeline import converted_model_dir
from hf_diffusionblocks.pretrained.finetuning import OBJECTIVES
from hf_diffusionblocks.pretrained.lora import DEFAULT_TARGET_MODULES
from hf_diffusionblocks.training import HelpFormatter, add_common_training_arguments, validate_common_arguments
from hf_diffusionblocks.training.pretrained_run import finetune_pretrained
from hf_diffusionblocks.training.runtime import run_script


def parse_block_list(value: str) -> list[int]:
    try:
        return [int(item) for item in value.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--blocks_to_train must be comma-separated block indices, got {value!r}.") from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    # the conversion fixes B and the partition: no --partition/--overlap, and --num_blocks is refused if given
    add_common_training_arguments(parser, defaults={"learning_rate": 1e-4, "lr_warmup_steps": 0, "num_blocks": None},
                                  noise_partition=False, layer_split=False)   # the conversion fixed the split
    group = parser.add_argument_group("pretrained fine-tuning")
    group.add_argument("--converted_dir", required=True, help="a folder written by `hf-diffusionblocks convert`: a converted "
                       "pipeline folder (then --output_dir is one too) or a converted transformer folder")
    group.add_argument("--latents_file", default=None, help="safetensors with `latents` and the forward's conditioning tensors (a class-conditional DiT's: "
                            "`hf-diffusionblocks encode PIPELINE_DIR FILE`); give this or --dataset_name")
    group.add_argument("--blocks_to_train", type=parse_block_list, default=None,
                       help="comma-separated blocks to train one after another (instead of --block_index)")
    group.add_argument("--objective", choices=OBJECTIVES, default="native",
                       help="'native': the model's own target; 'distill': the original model's prediction")
    group.add_argument("--teacher_device", default=None, help="device of the distillation teacher (default: the training device)")
    group.add_argument("--use_lora", action="store_true", help="train a LoRA on the block instead of all its weights")
    group.add_argument("--lora_rank", type=int, default=8, help="with --use_lora: rank r of each adapter")
    group.add_argument("--lora_alpha", type=float, default=8.0,
                       help="with --use_lora: the adapters' update is scaled by lora_alpha / lora_rank")
    group.add_argument("--lora_target_modules", nargs="+", default=list(DEFAULT_TARGET_MODULES),
                       help="with --use_lora: names of the block's linear layers that get an adapter")
    group.add_argument("--train_stems", action="store_true",
                       help="also train the shared stems (their optimizer state then costs memory, and blocks no longer share them)")
    group.add_argument("--gradient_checkpointing", action="store_true",
                       help="recompute the block's layer activations in the backward pass instead of storing them "
                            "(as in diffusers' training examples: same gradients, less memory, slower steps)")
    args = parser.parse_args(argv)
    if args.num_blocks is not None:
        raise ValueError(f"--num_blocks {args.num_blocks}: the conversion fixed the blocks; convert again to change B.")
    check_local_paths(args)
    check_lora_and_device_flags(args)
    model_dir, subfolder = converted_model_dir(args.converted_dir)
    manifest = read_manifest(model_dir)
    args.num_blocks = manifest.num_blocks
    validate_common_arguments(args)
    if args.training_mode != "blockwise":
        raise ValueError("--training_mode: a converted model is fine-tuned block-wise; convert with --num_blocks 1 for end-to-end.")
    if (args.latents_file is None) == (args.dataset_name is None):
        raise ValueError("give exactly one of --latents_file and --dataset_name.")
    if args.use_lora and subfolder:
        raise ValueError(f"--use_lora: --converted_dir {args.converted_dir!r} is a pipeline folder, whose native loading would "
                         "not apply the adapters; give its transformer folder (--converted_dir "
                         f"{model_dir}) and load with lora_dir=.")
    if args.train_stems and args.use_lora:
        raise ValueError("--train_stems trains full stems; it cannot be combined with --use_lora.")
    if args.blocks_to_train is not None:
        for block_index in args.blocks_to_train:
            manifest.time_partition.check_block_index(block_index)
    return args


def check_local_paths(args: argparse.Namespace) -> None:
    """--converted_dir is a local folder (its blocks are linked into --output_dir), not --output_dir itself;
    --latents_file exists."""
    if not os.path.isdir(args.converted_dir):
        raise ValueError(f"--converted_dir {args.converted_dir!r} is not a folder (one written by `hf-diffusionblocks convert`).")
    if os.path.realpath(args.output_dir) == os.path.realpath(args.converted_dir):
        raise ValueError(f"--output_dir {args.output_dir!r} is --converted_dir: fine-tuned blocks would replace the "
                         "converted ones; choose another folder.")
    if args.latents_file is not None and not os.path.isfile(args.latents_file):
        raise ValueError(f"--latents_file {args.latents_file!r} is not a file.")


def check_lora_and_device_flags(args: argparse.Namespace) -> None:
    """Every LoRA number finite and in range (a NaN --lora_alpha trains NaN adapters), the teacher's device a device."""
    check_integer(args.lora_rank, "--lora_rank", minimum=1)
    check_number(args.lora_alpha, "--lora_alpha", minimum=0, minimum_exclusive=True)
    if not args.lora_target_modules or not all(args.lora_target_modules):
        raise ValueError(f"--lora_target_modules must name at least one module, got {args.lora_target_modules!r}.")
    if args.teacher_device is not None:
        try:
            torch.device(args.teacher_device)
        except (RuntimeError, ValueError):
            raise ValueError(f"--teacher_device {args.teacher_device!r} is not a torch device (cpu, cuda, cuda:1, mps, ...).") from None
        if args.objective != "distill":
            raise ValueError("--teacher_device places the distillation teacher: it needs --objective distill.")


def main(argv: list[str] | None = None) -> dict:
    return finetune_pretrained(parse_args(argv))


if __name__ == "__main__":
    run_script(main)
