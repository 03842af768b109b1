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
