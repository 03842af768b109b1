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
import logging
import os

import torch
from accelerate import Accelerator
from transformers import AutoTokenizer

from hf_diffusionblocks import (
    CausalLMDenoisingLoss,
    CharacterTokenizer,
    DiffusionBlocksCausalLMConfig,
    DiffusionBlocksForCausalLM,
    format_partition_table,
)
from hf_diffusionblocks.argument_checks import check_number
from hf_diffusionblocks.modeling.block_checkpoint import atomic_save_folder
from hf_diffusionblocks.models.causal_lm import semantic_target_embeddings, target_embedding_digest
from hf_diffusionblocks.models.causal_lm.configuration_causal_lm import SOLVERS
from hf_diffusionblocks.tokenization_bpe import encode_corpus, train_bpe_tokenizer
from hf_diffusionblocks.training import (
    HelpFormatter,
    add_common_training_arguments,
    add_text_data_arguments,
    require_at_least,
    validate_common_arguments,
    validate_text_data_arguments,
)
from hf_diffusionblocks.training.runtime import run_script, setup_logging
from hf_diffusionblocks.training.output_folder import present_blocks
from hf_diffusionblocks.training.launch import (
    create_accelerator,
    finish_run,
    train_assigned_blocks,
    write_card_and_publish,
)
from hf_diffusionblocks.training.text_task import TextWindowTask, load_texts_for_run, write_text_samples

logger = logging.getLogger("train_ar")

TOKENIZERS = ("bpe", "char")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_common_training_arguments(parser, defaults={"overlap": 0.1, "num_blocks": 4, "train_batch_size": 32})
    add_text_data_arguments(parser)
    ar = parser.add_argument_group("autoregressive LM")
    ar.add_argument("--tokenizer", choices=TOKENIZERS, default="bpe",
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
                         "paper's recipe; 1 measured best, README).")
    ar.add_argument("--solver", choices=SOLVERS, default="ancestral",
                    help="The saved model's default generation step (config.solver): 'ancestral' (draw a token from "
                         "each readout, re-noise it; measured best, README) or 'euler' on the posterior mean softmax·E "
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


def load_or_train_tokenizer(args: argparse.Namespace, train_text: str):
    """The tokenizer already in `output_dir` (written by an earlier run), else that of `--target_embeddings_from`
    (the table's rows are its token ids), else a new one (`save_tokenizer` writes it once the config is known
    to be valid)."""
    source = None
    if args.target_embeddings_from:
        source = AutoTokenizer.from_pretrained(args.target_embeddings_from)
    if os.path.isfile(os.path.join(args.output_dir, "tokenizer_config.json")):
        tokenizer = AutoTokenizer.from_pretrained(args.output_dir)
        logger.info("reusing the tokenizer of %s (%d tokens)", args.output_dir, len(tokenizer))
        if source is not None and tokenizer.get_vocab() != source.get_vocab():
            raise ValueError(
                f"--target_embeddings_from {args.target_embeddings_from} has another tokenizer than --output_dir "
                f"{args.output_dir}: the table's rows would name other tokens."
            )
        return tokenizer
    if source is not None:
        logger.info("using the tokenizer of --target_embeddings_from %s (%d tokens)", args.target_embeddings_from, len(source))
        return source
    if args.tokenizer == "bpe":
        tokenizer = train_bpe_tokenizer(train_text, vocab_size=args.vocab_size)
    else:
        tokenizer = CharacterTokenizer.from_corpus(train_text, strict=False, pad_token="[PAD]", padding_side="left")
    return tokenizer


def save_tokenizer(args: argparse.Namespace, tokenizer) -> None:
    """Write a new tokenizer into `output_dir` (one read from there stays as it is)."""
    if os.path.isfile(os.path.join(args.output_dir, "tokenizer_config.json")):
        return
    # staged and renamed into place, tokenizer_config.json last: the other processes of a block-parallel
    # launch test for it above and must never read a half-written tokenizer
    atomic_save_folder(args.output_dir, tokenizer.save_pretrained, last=("tokenizer_config.json",))


def load_semantic_table(args: argparse.Namespace, tokenizer) -> torch.Tensor | None:
    """With `--target_embeddings_from`: the PCA of that end-to-end model's readout, at `--target_embedding_dim`."""
    if not args.target_embeddings_from:
        return None
    if args.training_mode != "blockwise":
        raise ValueError("--target_embeddings_from sets the block-wise model's target table; end_to_end has none.")
    source = DiffusionBlocksForCausalLM.from_pretrained(args.target_embeddings_from)
    if source.config.objective != "next_token" or source.config.vocab_size != len(tokenizer):
        raise ValueError(
            f"--target_embeddings_from must be an end-to-end model (objective 'next_token') with the run's "
            f"{len(tokenizer)} tokens, got objective {source.config.objective!r} with {source.config.vocab_size} tokens."
        )
    readout = source.get_block(0).final_layer.linear.weight
    table = semantic_target_embeddings(readout, args.target_embedding_dim, source.config.sigma_data)
    logger.info("target table: PCA of the readout of %s (%d × %d)", args.target_embeddings_from, *table.shape)
    return table


def build_config(args: argparse.Namespace, tokenizer, target_table: torch.Tensor | None = None) -> DiffusionBlocksCausalLMConfig:
    end_to_end = args.training_mode == "end_to_end"
    return DiffusionBlocksCausalLMConfig(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden_size,
        num_hidden_layers=args.num_hidden_layers,
        num_attention_heads=args.num_attention_heads,
        intermediate_size=args.intermediate_size or 8 * ((8 * args.hidden_size // 3 + 7) // 8),
        max_position_embeddings=args.sequence_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        objective="next_token" if end_to_end else "diffusion",
        target_embedding_dim=args.target_embedding_dim,
        target_embedding_sha256=None if target_table is None else target_embedding_digest(target_table),
        solver=args.solver,
        clean_loss_weight=0.0 if end_to_end else args.clean_loss_weight,
        num_blocks=1 if end_to_end else args.num_blocks,
        layers_per_block=None if end_to_end else args.layers_per_block,
        partition=args.partition,
        overlap=args.overlap,
    )


class CausalLMTrainingTask(TextWindowTask):
    """The causal LM family's part of block-wise training: windows of tokens, the block loss, outputs."""

    def __init__(self, config, train_ids: torch.Tensor, validation_ids: torch.Tensor, args: argparse.Namespace,
                 target_table: torch.Tensor | None = None):
        super().__init__(config, DiffusionBlocksForCausalLM, CausalLMDenoisingLoss(config), train_ids, validation_ids, args,
                         window_length=args.sequence_length, hub_commit_message="Upload config, index and tokenizer")
        self.target_table = target_table

    def build_model(self, block_indices: list[int]) -> DiffusionBlocksForCausalLM:
        model = super().build_model(block_indices)
        if self.target_table is not None:   # a given table: every block starts with it and saves it in its file
            model.set_target_embeddings(self.target_table, source="--target_embeddings_from")
        return model


def write_samples(args: argparse.Namespace, tokenizer, validation_ids: torch.Tensor, accelerator: Accelerator) -> list[str] | None:
    """When every block is in the output folder: continue `num_samples` validation prompts into samples.txt."""
    config = DiffusionBlocksForCausalLM.load_config(args.output_dir)
    present = present_blocks(args.output_dir, config.num_blocks)
    if len(present) < config.num_blocks:
        logger.info("blocks %s of %d are done; samples are written when all are.", present, config.num_blocks)
        return None
    model = DiffusionBlocksForCausalLM.from_pretrained(args.output_dir).to(accelerator.device)
    stride = max(1, len(validation_ids) // args.num_samples)
    starts = torch.arange(args.num_samples) * stride
    prompts = validation_ids[starts[:, None] + torch.arange(args.sample_prompt_length)].to(accelerator.device)
    output = model.generate(prompts, max_new_tokens=args.sample_new_tokens, do_sample=False,
                            generator=torch.Generator().manual_seed(args.seed))
    texts = [f"{tokenizer.decode(row[:args.sample_prompt_length])} ▶ {tokenizer.decode(row[args.sample_prompt_length:])}"
             for row in output.cpu()]
    write_text_samples(args.output_dir, texts, accelerator)
    return texts


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    setup_logging()
    texts = load_texts_for_run(args)   # a bad dataset fails before anything is written to --output_dir
    tokenizer = load_or_train_tokenizer(args, texts.train)
    target_table = load_semantic_table(args, tokenizer)
    config = build_config(args, tokenizer, target_table)
    validation_ids = encode_corpus(tokenizer, texts.validation)
    task = CausalLMTrainingTask(config, encode_corpus(tokenizer, texts.train), validation_ids, args, target_table)
    save_tokenizer(args, tokenizer)
    accelerator = create_accelerator(args, "train_ar")
    logger.info("%s, %d training tokens, vocabulary of %d tokens, %d blocks", args.training_mode,
                len(task.train_ids), len(tokenizer), config.num_blocks)
    if config.objective == "diffusion":
        logger.info("\n%s", format_partition_table(config.noise_partition, config.resolved_layers_per_block))

    outcome = train_assigned_blocks(task, args, config.num_blocks, accelerator)
    samples = None if not outcome.assignment.is_group_leader else write_samples(args, tokenizer, validation_ids, accelerator)
    if samples is not None:  # every block is there
        write_card_and_publish(args, "ar")
    return finish_run(accelerator, args, config.num_blocks, outcome, samples=samples)


if __name__ == "__main__":
    run_script(main)
