#!/usr/bin/env python
"""Train a DiffusionBlocks autoregressive language model block by block (or end to end, the baseline).

    accelerate launch examples/train_ar.py --dataset_name shakespeare --output_dir outputs/ar-shakespeare

Block b learns to predict each token from the clean tokens before it and the token's embedding noised
to a level σ in its interval (block 0 the highest noise); `--block_index b` trains block b alone (only
its parameters are built and optimised), `--block_index all` the blocks one after another.
`--training_mode end_to_end` trains the same decoder as an ordinary causal LM with next-token
cross-entropy (num_blocks = 1, objective "next_token"): the baseline.

The output folder is a transformers model folder:

    config.json, model.safetensors.index.json   the model (AutoModelForCausalLM.from_pretrained(output_dir))
    block_<b>.safetensors                       block b alone (from_pretrained(output_dir, block_index=b))
    tokenizer.json / tokenizer_config.json      the tokenizer (AutoTokenizer.from_pretrained(output_dir))
    samples.txt                                 continuations of validation prompts, once every block is done
    README.md                                   the model card, written with samples.txt
    hf_diffusionblocks_classes.py               for AutoModelForCausalLM.from_pretrained(..., trust_remote_code=True)
    checkpoints/, logs/                         resumable training state, TensorBoard

The tokenizer (`--tokenizer bpe`: a byte-level BPE trained on the training split; `char`: one token per
character of it) is written first and reused by later runs into the same folder, so blocks trained by
separate runs share it. Training examples are windows of `--sequence_length` tokens starting at every
token of the training split; `BatchOrder` draws the window starts, so a resumed run sees exactly the
batches the uninterrupted run would have.
"""

from __future__ import annotations

import argparse

from hf_diffusionblocks.argument_checks import check_number
from hf_diffusionblocks.models.causal_lm.configuration_causal_lm import SOLVERS
from hf_diffusionblocks.training import (
    HelpFormatter,
    add_common_training_arguments,
    add_text_data_arguments,
    require_at_least,
    validate_common_arguments,
    validate_text_data_arguments,
)
from hf_diffusionblocks.training.runtime import run_script
from hf_diffusionblocks.training.text_runs import CAUSAL_LM_TOKENIZERS, train_causal_lm


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_common_training_arguments(parser, defaults={"overlap": 0.1, "num_blocks": 4, "train_batch_size": 32})
    add_text_data_arguments(parser)
    ar = parser.add_argument_group("autoregressive LM")
    ar.add_argument("--tokenizer", choices=CAUSAL_LM_TOKENIZERS, default="bpe",
                    help="'bpe': byte-level BPE trained on the training split; 'char': its characters.")
    ar.add_argument("--vocab_size", type=int, default=1024, help="BPE vocabulary size (bytes and specials included).")
    ar.add_argument("--hidden_size", type=int, default=128, help="Width of every layer.")
    ar.add_argument("--num_hidden_layers", type=int, default=8, help="Total layers L (split into --num_blocks).")
    ar.add_argument("--num_attention_heads", type=int, default=4, help="Attention heads per layer.")
    ar.add_argument("--intermediate_size", type=int, default=None, help="SwiGLU width (None: 8/3 × hidden_size, rounded).")
    ar.add_argument("--sequence_length", type=int, default=64, help="Tokens per training window (the context).")
    ar.add_argument("--target_embedding_dim", type=int, default=16, help="Width of the fixed target-embedding table.")
    ar.add_argument("--target_embeddings_from", type=str, default=None, metavar="FOLDER",
                    help="An end-to-end model folder of train_ar.py: the target table becomes the PCA of its vocabulary "
                         "readout (semantic, stored in every block file) instead of a random one, and its tokenizer is used.")
    ar.add_argument("--clean_loss_weight", type=float, default=1.0,
                    help="Weight of an auxiliary next-token cross-entropy on every block's clean stream (0: off, the "
                         "paper's recipe; 1 measured best, docs/results/causal_lm.md).")
    ar.add_argument("--solver", choices=SOLVERS, default="ancestral",
                    help="The saved model's default generation step (config.solver): 'ancestral' (draw a token from "
                         "each readout, re-noise it; measured best, docs/results/causal_lm.md) or 'euler' on the posterior mean softmax·E "
                         "(the paper).")
    ar.add_argument("--validation_windows", type=int, default=64, help="Validation windows of the logged block loss.")
    ar.add_argument("--num_samples", type=int, default=4, help="Continuations written to samples.txt when all blocks are done.")
    ar.add_argument("--sample_prompt_length", type=int, default=None,
                    help="Prompt tokens of each sample (None: a quarter of --sequence_length).")
    ar.add_argument("--sample_new_tokens", type=int, default=None,
                    help="Generated tokens of each sample (None: half of --sequence_length).")
    args = parser.parse_args(argv)
    validate_common_arguments(args)
    validate_text_data_arguments(args)
    validate_ar_arguments(args)
    return args


def validate_ar_arguments(args: argparse.Namespace) -> None:
    """Sizes the decoder and the samples need, with errors that name the flag; sample lengths left unset
    follow --sequence_length (a quarter prompt, half new tokens), so they fit any context."""
    if args.sequence_length is not None:
        if args.sample_prompt_length is None:
            args.sample_prompt_length = max(1, args.sequence_length // 4)
        if args.sample_new_tokens is None:
            args.sample_new_tokens = max(1, min(args.sequence_length // 2, args.sequence_length - args.sample_prompt_length))
    require_at_least(args, ("hidden_size", "num_hidden_layers", "num_attention_heads", "sequence_length", "target_embedding_dim",
                 "validation_windows", "num_samples", "sample_prompt_length", "sample_new_tokens"))
    check_number(args.clean_loss_weight, "--clean_loss_weight", minimum=0)
    if args.sample_prompt_length + args.sample_new_tokens > args.sequence_length:
        raise ValueError(
            f"--sample_prompt_length + --sample_new_tokens ({args.sample_prompt_length} + {args.sample_new_tokens}) "
            f"must fit --sequence_length={args.sequence_length}."
        )


def main(argv: list[str] | None = None) -> dict:
    return train_causal_lm(parse_args(argv))


if __name__ == "__main__":
    run_script(main)
