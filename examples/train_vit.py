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

from hf_diffusionblocks import DiffusionBlocksViTConfig
from hf_diffusionblocks.models.vit import LABEL_OBJECTIVES, VIT_SIZES
from hf_diffusionblocks.training import HelpFormatter, add_common_training_arguments, require_at_least, validate_common_arguments
from hf_diffusionblocks.training.image_runs import train_vit
from hf_diffusionblocks.training.runtime import run_script


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


def main(argv: list[str] | None = None) -> dict:
    return train_vit(parse_args(argv))


if __name__ == "__main__":
    run_script(main)
