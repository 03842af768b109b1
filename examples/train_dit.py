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

from hf_diffusionblocks.argument_checks import check_number
from hf_diffusionblocks.models.dit import DIT_SIZES
from hf_diffusionblocks.training import HelpFormatter, add_common_training_arguments, validate_common_arguments
from hf_diffusionblocks.training.image_runs import train_dit
from hf_diffusionblocks.training.runtime import run_script


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_common_training_arguments(parser, defaults={"dataset_name": "digits"})
    dit = parser.add_argument_group("DiT")
    dit.add_argument("--model_size", choices=sorted(DIT_SIZES), default="XS",
                     help="DiT width/depth: " + ", ".join(f"{k}={v}" for k, v in DIT_SIZES.items()))
    dit.add_argument("--num_hidden_layers", type=int, default=None, help="Override the depth of --model_size.")
    dit.add_argument("--hidden_size", type=int, default=None, help="Override the width of --model_size (the MLP is 4x wide).")
    dit.add_argument("--num_attention_heads", type=int, default=None, help="Override the heads of --model_size.")
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
    # the grid is sampled after training: a bad scale is named now, not once every block has trained
    check_number(args.guidance_scale, "--guidance_scale", minimum=1)
    return args


def main(argv: list[str] | None = None) -> dict:
    return train_dit(parse_args(argv))


if __name__ == "__main__":
    run_script(main)
