#!/usr/bin/env python
"""Train a DiffusionBlocks masked diffusion language model (MDM), block by block (or end to end, the baseline).

    accelerate launch examples/train_mdm.py --dataset_name shakespeare --output_dir outputs/mdm-shakespeare

`--block_index b` trains block b alone (only its parameters are built and optimised);
`--block_index all` trains the blocks one after another; `--training_mode end_to_end` trains the
same layers as one block over all masking times t ∈ [0, 1]. Block b owns the times where
α(t) ∈ [b/B, (b+1)/B] (block 0 the most masked) and minimises its share of the NELBO.

The output folder is a pipeline folder (`DiffusionBlocksTextPipeline.from_pretrained`) with
`transformer/block_<b>.safetensors`, `scheduler/` and `tokenizer/`; a block loads alone with
`DiffusionBlocksForMaskedLM.from_pretrained(output_dir, subfolder="transformer", block_index=b)`.
Training examples are windows of `--sequence_length` characters starting at every position of the
training text; `BatchOrder` draws the window starts, so a resumed run sees exactly the same batches.
Text: `--dataset_name` (a builtin, a local text file, or a `datasets` dataset) or `--train_file`
[`--validation_file`]; without a validation text, the last `--validation_split_percentage` percent of
the training text is held out (and the log says so). The defaults are those of docs/results/masked_lm.md
(`benchmarks/text_results.sh mdm`).
"""

from __future__ import annotations

import argparse

from hf_diffusionblocks.training import (
    HelpFormatter,
    add_common_training_arguments,
    add_text_data_arguments,
    require_at_least,
    validate_common_arguments,
    validate_text_data_arguments,
)
from hf_diffusionblocks.training.runtime import run_script
from hf_diffusionblocks.training.text_runs import MASKED_LM_VOCABULARIES, train_masked_lm


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    # blocks split the masking time t by equal decrements of alpha: no --partition / --overlap here
    add_common_training_arguments(
        parser, defaults={"train_batch_size": 16, "learning_rate": 1e-3, "lr_scheduler": "cosine"}, noise_partition=False
    )
    add_text_data_arguments(parser)
    mdm = parser.add_argument_group("masked diffusion LM")
    mdm.add_argument("--hidden_size", type=int, default=128, help="Width of every layer.")
    mdm.add_argument("--num_hidden_layers", type=int, default=6, help="Total layers L (split into --num_blocks).")
    mdm.add_argument("--num_attention_heads", type=int, default=4, help="Attention heads per layer.")
    mdm.add_argument("--intermediate_size", type=int, default=None, help="MLP width (None: 4 × hidden_size).")
    mdm.add_argument("--sequence_length", type=int, default=128, help="Characters per training window.")
    mdm.add_argument("--masking_schedule", choices=("linear", "cosine"), default="linear",
                     help="alpha(t) = 1 - t, or 1 - cos(pi/2 (1 - t)); blocks take equal decrements of alpha.")
    mdm.add_argument("--vocabulary", choices=MASKED_LM_VOCABULARIES, default="corpus",
                     help="'corpus': the characters of the training split; 'text8': a-z and space (lower-cased); "
                          "'bytes': the 256 UTF-8 byte values.")
    mdm.add_argument("--validation_windows", type=int, default=64, help="Validation windows of the logged block loss.")
    mdm.add_argument("--num_inference_steps", type=int, default=128, help="Unmasking steps of the final samples.")
    mdm.add_argument("--num_samples", type=int, default=3, help="Samples written to samples.txt when all blocks are done.")
    args = parser.parse_args(argv)
    validate_common_arguments(args)
    validate_text_data_arguments(args)
    validate_masked_lm_arguments(args)
    return args


def validate_masked_lm_arguments(args: argparse.Namespace) -> None:
    """Sizes, and the layer split."""
    require_at_least(args, ("hidden_size", "num_hidden_layers", "num_attention_heads", "sequence_length", "validation_windows",
                            "num_samples"))


def main(argv: list[str] | None = None) -> dict:
    return train_masked_lm(parse_args(argv))


if __name__ == "__main__":
    run_script(main)
