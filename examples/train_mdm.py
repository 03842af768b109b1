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
the training text is held out (and the log says so). The defaults are those of the README's results
(`benchmarks/text_results.sh mdm`).
"""

from __future__ import annotations

import argparse
import logging
import os

import torch
from accelerate import Accelerator

from hf_diffusionblocks import (
    CharacterTokenizer,
    DiffusionBlocksForMaskedLM,
    DiffusionBlocksMaskedLMConfig,
    DiffusionBlocksTextPipeline,
    MaskedDiffusionLoss,
)
from hf_diffusionblocks.training import (
    HelpFormatter,
    add_common_training_arguments,
    add_text_data_arguments,
    require_at_least,
    validate_common_arguments,
    validate_text_data_arguments,
)
from hf_diffusionblocks.training.progress import progress_bars_wanted
from hf_diffusionblocks.training.runtime import run_script, setup_logging
from hf_diffusionblocks.training.output_folder import present_blocks
from hf_diffusionblocks.training.launch import (
    create_accelerator,
    finish_run,
    train_assigned_blocks,
    write_card_and_publish,
)
from hf_diffusionblocks.training.text_task import TextWindowTask, load_texts_for_run, write_text_samples

logger = logging.getLogger("train_mdm")

VOCABULARIES = ("corpus", "text8", "bytes")


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
    mdm.add_argument("--vocabulary", choices=VOCABULARIES, default="corpus",
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


def build_tokenizer(vocabulary: str, train_text: str) -> CharacterTokenizer:
    if vocabulary == "corpus":
        return CharacterTokenizer.from_corpus(train_text)
    return CharacterTokenizer(vocabulary_type=vocabulary, strict=False)


def build_config(args: argparse.Namespace, tokenizer: CharacterTokenizer) -> DiffusionBlocksMaskedLMConfig:
    return DiffusionBlocksMaskedLMConfig(
        vocab_size=len(tokenizer),
        mask_token_id=tokenizer.mask_token_id,
        hidden_size=args.hidden_size,
        num_hidden_layers=args.num_hidden_layers,
        num_attention_heads=args.num_attention_heads,
        intermediate_size=args.intermediate_size or 4 * args.hidden_size,
        max_position_embeddings=args.sequence_length,
        masking_schedule=args.masking_schedule,
        num_blocks=1 if args.training_mode == "end_to_end" else args.num_blocks,
        layers_per_block=args.layers_per_block,
    )


class MaskedLMTrainingTask(TextWindowTask):
    """The masked diffusion family's part of block-wise training: windows of text, the NELBO share, a pipeline folder."""

    def __init__(self, config, tokenizer, train_ids: torch.Tensor, validation_ids: torch.Tensor, args: argparse.Namespace):
        self.scheduler = config.build_scheduler()
        super().__init__(config, DiffusionBlocksForMaskedLM, MaskedDiffusionLoss(self.scheduler, config.mask_token_id),
                         train_ids, validation_ids, args, window_length=args.sequence_length, weights_subfolder="transformer",
                         hub_commit_message="Upload pipeline configs, scheduler and tokenizer")
        self.tokenizer = tokenizer

    def save_outputs(self, model, block_index: int) -> None:
        """The whole pipeline folder (model_index.json, scheduler/, tokenizer/, transformer/ with this block's file)."""
        DiffusionBlocksTextPipeline(model, self.scheduler, self.tokenizer).save_pretrained(self.output_dir)


def write_samples(args: argparse.Namespace, accelerator: Accelerator) -> list[str] | None:
    """When every block is in the output folder: `num_samples` unconditional samples into samples.txt."""
    config = DiffusionBlocksForMaskedLM.load_config(os.path.join(args.output_dir, "transformer"))
    present = present_blocks(os.path.join(args.output_dir, "transformer"), config.num_blocks)
    if len(present) < config.num_blocks:
        logger.info("blocks %s of %d are done; samples are written when all are.", present, config.num_blocks)
        return None
    pipeline = DiffusionBlocksTextPipeline.from_pretrained(args.output_dir).to(accelerator.device)
    # diffusers passes tqdm an explicit disable=False on the first process, which overrides TQDM_DISABLE
    pipeline.set_progress_bar_config(disable=not progress_bars_wanted())
    generator = torch.Generator(accelerator.device).manual_seed(args.seed)
    texts = pipeline(num_samples=args.num_samples, num_inference_steps=args.num_inference_steps, generator=generator).texts
    write_text_samples(args.output_dir, texts, accelerator)
    return texts


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    setup_logging()
    # data and config first: a bad dataset or size fails before anything is written to --output_dir
    texts = load_texts_for_run(args)
    tokenizer = build_tokenizer(args.vocabulary, texts.train)
    config = build_config(args, tokenizer)
    task = MaskedLMTrainingTask(config, tokenizer, tokenizer.encode_corpus(texts.train), tokenizer.encode_corpus(texts.validation), args)
    accelerator = create_accelerator(args, "train_mdm")
    logger.info("%s, %d training characters, vocabulary of %d tokens, blocks own t in %s",
                args.training_mode, len(task.train_ids), len(tokenizer),
                [f"[{low:.3f}, {high:.3f}]" for low, high in map(task.scheduler.block_interval, range(config.num_blocks))])

    outcome = train_assigned_blocks(task, args, config.num_blocks, accelerator)
    samples = None if not outcome.assignment.is_group_leader else write_samples(args, accelerator)
    if samples is not None:  # every block is there
        write_card_and_publish(args, "mdm")
    return finish_run(accelerator, args, config.num_blocks, outcome, samples=samples)


if __name__ == "__main__":
    run_script(main)
