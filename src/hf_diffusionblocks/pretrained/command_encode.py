"""`hf-diffusionblocks encode PIPELINE_DIR OUTPUT_FILE`: the command-line face of `latent_encoding.py`.

    hf-diffusionblocks encode dit-pipeline latents.safetensors [--dataset_name digits] [--split train]

Writes the `--latents_file` that `examples/finetune_pretrained.py` trains on: the dataset encoded once by
the pipeline's VAE, with its class labels.
"""

from __future__ import annotations

import argparse

from .latent_encoding import encode_image_dataset


def command_encode(args: argparse.Namespace) -> int:
    shapes = encode_image_dataset(args.pipeline_dir, args.output_file, args.dataset_name, args.split,
                                  args.batch_size, args.max_samples)
    print(f"written: {args.output_file} (" + ", ".join(f"{name} {list(shape)}" for name, shape in shapes.items()) + ")")
    return 0


def add_encode_command(commands: argparse._SubParsersAction) -> None:
    """Register `encode` on the `hf-diffusionblocks` sub-command parser."""
    encode = commands.add_parser(
        "encode", help="encode a labelled image dataset with a diffusers DiT pipeline's VAE (the fine-tuning latents file)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    encode.add_argument("pipeline_dir", help="a diffusers pipeline folder with vae/ and a class-conditional transformer/")
    encode.add_argument("output_file", help="the safetensors file to write (latents, class_labels); must not exist")
    encode.add_argument("--dataset_name", default="digits",
                        help="'digits', 'fashion_mnist', an image folder (one sub-folder per class) or a `datasets` name")
    encode.add_argument("--split", default="train", help="the dataset split to encode")
    encode.add_argument("--batch_size", type=int, default=256, help="images per VAE forward pass")
    encode.add_argument("--max_samples", type=int, default=None, help="encode only the first N images (default: all)")
    encode.set_defaults(run=command_encode)
