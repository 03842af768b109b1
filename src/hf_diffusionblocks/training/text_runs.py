"""A training run of a text family from its parsed flags: what `examples/train_mdm.py`,
`examples/train_recurrent.py` and `examples/train_ar.py` call once their arguments are checked.

    summary = train_masked_lm(args)   # text → tokenizer → config → the family's TextWindowTask
                                      # → the blocks of this process → samples / evaluation and the
                                      # model card once every block is there

Each family's task is a `TextWindowTask` that says what differs (its model, loss, validation and
outputs). The flags each function reads are the shared training and text-data flags (`arguments.py`)
and those of the script's family group. Text, tokenizer and config come first, so a bad dataset or size
fails before anything is written to `--output_dir`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os

import torch
from accelerate import Accelerator
from transformers import AutoTokenizer

from ..atomic_io import atomic_save_folder
from ..models.causal_lm import (
    CausalLMDenoisingLoss,
    DiffusionBlocksCausalLMConfig,
    DiffusionBlocksForCausalLM,
    semantic_target_embeddings,
    target_embedding_digest,
)
from ..models.masked_lm import DiffusionBlocksForMaskedLM, DiffusionBlocksMaskedLMConfig, MaskedDiffusionLoss
from ..models.recurrent import (
    DiffusionBlocksRecurrentConfig,
    DiffusionBlocksRecurrentForCausalLM,
    RecurrentDenoisingLoss,
    TruncatedBPTTLoss,
)
from ..models.recurrent.evaluation_recurrent import held_out_cross_entropy
from ..partition import format_partition_table
from ..pipelines import DiffusionBlocksTextPipeline
from ..tokenization_bpe import encode_corpus, train_bpe_tokenizer
from ..tokenization_char import CharacterTokenizer
from .arguments import TRAINING_MODES
from .launch import create_accelerator, finish_run, train_assigned_blocks, write_card_and_publish
from .output_folder import complete_pipeline, every_block_saved
from .runtime import setup_logging
from .text_task import TextWindowTask, load_texts_for_run, write_text_samples
from .tracking import log_metrics

logger = logging.getLogger(__name__)

MASKED_LM_VOCABULARIES = ("corpus", "text8", "bytes")
RECURRENT_TRAINING_MODES = (*TRAINING_MODES, "bptt")   # the recurrent family's baseline: truncated BPTT
CAUSAL_LM_TOKENIZERS = ("bpe", "char")


# ---- masked diffusion LM -------------------------------------------------------------------
def build_character_tokenizer(vocabulary: str, train_text: str) -> CharacterTokenizer:
    """'corpus': the characters of `train_text`; 'text8' or 'bytes': that fixed vocabulary."""
    if vocabulary == "corpus":
        return CharacterTokenizer.from_corpus(train_text)
    return CharacterTokenizer(vocabulary_type=vocabulary, strict=False)


def build_masked_lm_config(args: argparse.Namespace, tokenizer: CharacterTokenizer) -> DiffusionBlocksMaskedLMConfig:
    return DiffusionBlocksMaskedLMConfig(
        vocab_size=len(tokenizer), mask_token_id=tokenizer.mask_token_id, hidden_size=args.hidden_size,
        num_hidden_layers=args.num_hidden_layers, num_attention_heads=args.num_attention_heads,
        intermediate_size=args.intermediate_size or 4 * args.hidden_size, max_position_embeddings=args.sequence_length,
        masking_schedule=args.masking_schedule, num_blocks=1 if args.training_mode == "end_to_end" else args.num_blocks,
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


def write_masked_lm_samples(args: argparse.Namespace, accelerator: Accelerator) -> list[str] | None:
    """When every block is in the output folder: `--num_samples` unconditional samples into samples.txt."""
    pipeline = complete_pipeline(DiffusionBlocksTextPipeline, DiffusionBlocksForMaskedLM, args.output_dir, accelerator.device, "samples.txt")
    if pipeline is None:
        return None
    generator = torch.Generator(accelerator.device).manual_seed(args.seed)
    texts = pipeline(num_samples=args.num_samples, num_inference_steps=args.num_inference_steps, generator=generator).texts
    write_text_samples(args.output_dir, texts, accelerator)
    return texts


def train_masked_lm(args: argparse.Namespace, project_name: str = "train_mdm") -> dict:
    """Train the masked diffusion LM's blocks of this process; once every block is there, samples and the model card."""
    setup_logging()
    texts = load_texts_for_run(args)
    tokenizer = build_character_tokenizer(args.vocabulary, texts.train)
    config = build_masked_lm_config(args, tokenizer)
    task = MaskedLMTrainingTask(config, tokenizer, tokenizer.encode_corpus(texts.train), tokenizer.encode_corpus(texts.validation), args)
    accelerator = create_accelerator(args, project_name)
    logger.info("%s, %d training characters, vocabulary of %d tokens, blocks own t in %s",
                args.training_mode, len(task.train_ids), len(tokenizer),
                [f"[{low:.3f}, {high:.3f}]" for low, high in map(task.scheduler.block_interval, range(config.num_blocks))])
    outcome = train_assigned_blocks(task, args, config.num_blocks, accelerator)
    samples = None if not outcome.assignment.is_group_leader else write_masked_lm_samples(args, accelerator)
    if samples is not None:  # every block is there
        write_card_and_publish(args, "mdm")
    return finish_run(accelerator, args, config.num_blocks, outcome, samples=samples)


# ---- recurrent depth -----------------------------------------------------------------------
def build_recurrent_config(args: argparse.Namespace, tokenizer: CharacterTokenizer) -> DiffusionBlocksRecurrentConfig:
    one_core = args.training_mode in ("end_to_end", "bptt")
    return DiffusionBlocksRecurrentConfig(
        vocab_size=len(tokenizer), hidden_size=args.hidden_size, num_hidden_layers=args.num_hidden_layers,
        num_prelude_layers=args.num_prelude_layers, num_coda_layers=args.num_coda_layers,
        num_attention_heads=args.num_attention_heads, intermediate_size=args.intermediate_size or 4 * args.hidden_size,
        max_position_embeddings=args.sequence_length, num_iterations=args.num_iterations,
        num_blocks=1 if one_core else args.num_blocks, partition=args.partition, overlap=0.0 if one_core else args.overlap,
        p_mean=args.p_mean, p_std=args.p_std,
    )


class RecurrentTrainingTask(TextWindowTask):
    """The recurrent family's part of block-wise training: text windows (context + the next character), the
    step's loss, held-out validation of the complete model, outputs."""

    def __init__(self, config, tokenizer, train_ids: torch.Tensor, validation_ids: torch.Tensor, args: argparse.Namespace):
        if args.training_mode == "bptt":
            loss_function = TruncatedBPTTLoss(args.mean_recurrence, args.bptt_steps)
        else:
            loss_function = RecurrentDenoisingLoss(config.noise_partition)
        super().__init__(config, DiffusionBlocksRecurrentForCausalLM, loss_function, train_ids, validation_ids, args,
                         window_length=args.sequence_length + 1)
        self.tokenizer = tokenizer
        self.num_validation_windows = args.validation_windows
        self.num_iterations = args.num_iterations

    def log_validation(self, model, block_index: int, step: int, accelerator: Accelerator) -> None:
        """Held-out nats per character at K = 1 and K = --num_iterations (complete models only)."""
        if not model.is_complete:
            return
        values = {}
        for num_iterations in sorted({1, self.num_iterations}):
            values[f"validation/loss_K{num_iterations}"] = held_out_cross_entropy(
                model, self.validation_stream, len(self.window) - 1, self.num_validation_windows, num_iterations)
        log_metrics(accelerator, values, step=step)
        logger.info("step %d: %s", step, ", ".join(f"{k} {v:.4f}" for k, v in values.items()))

    def save_outputs(self, model, block_index: int) -> None:
        model.save_pretrained(self.output_dir, block_indices=[block_index])
        atomic_save_folder(self.output_dir, self.tokenizer.save_pretrained, last=("tokenizer_config.json",))


def write_recurrent_sample(args: argparse.Namespace, model, tokenizer, validation_ids: torch.Tensor, device) -> None:
    """A greedy continuation of the first validation characters into samples.txt (`--sample_length` at most)."""
    prompt_length = max(1, args.sequence_length // 4)
    new_tokens = min(args.sample_length, args.sequence_length - prompt_length)
    if new_tokens > 0:
        prompt = validation_ids[:prompt_length][None].to(device)
        generated = model.generate(prompt, max_new_tokens=new_tokens, do_sample=False, num_iterations=args.num_iterations)
        with open(os.path.join(args.output_dir, "samples.txt"), "w", encoding="utf-8") as file:
            file.write(tokenizer.decode(generated[0].tolist()) + "\n")


def evaluate_recurrent(args: argparse.Namespace, validation_ids: torch.Tensor, accelerator: Accelerator) -> dict | None:
    """When every block is saved: held-out loss / BPC at K = 1 and K = --num_iterations (eval_results.json), and a sample."""
    if not every_block_saved(DiffusionBlocksRecurrentForCausalLM, args.output_dir, "evaluation"):
        return None
    model = DiffusionBlocksRecurrentForCausalLM.from_pretrained(args.output_dir).to(accelerator.device)
    config = model.config
    tokenizer = CharacterTokenizer.from_pretrained(args.output_dir)
    result: dict = {"training_mode": args.training_mode, "num_blocks": config.num_blocks, "eval_windows": args.eval_windows,
                    "sequence_length": args.sequence_length}
    for num_iterations in sorted({1, args.num_iterations}):
        loss = held_out_cross_entropy(model, validation_ids, args.sequence_length, args.eval_windows, num_iterations)
        result[f"loss_K{num_iterations}"] = loss
        result[f"bpc_K{num_iterations}"] = loss / math.log(2)
    write_recurrent_sample(args, model, tokenizer, validation_ids, accelerator.device)
    with open(os.path.join(args.output_dir, "eval_results.json"), "w", encoding="utf-8") as file:
        json.dump(result, file, indent=2)
    log_metrics(accelerator, {f"test/{k}": v for k, v in result.items() if isinstance(v, float)}, step=0)
    logger.info("held-out: %s", result)
    return result


def train_recurrent(args: argparse.Namespace, project_name: str = "train_recurrent") -> dict:
    """Train the recurrent model's blocks of this process; once every block is there, the held-out loss and the card."""
    setup_logging()
    texts = load_texts_for_run(args)
    tokenizer = CharacterTokenizer.from_corpus(texts.train, strict=False)
    config = build_recurrent_config(args, tokenizer)
    train_ids, validation_ids = tokenizer.encode_corpus(texts.train), tokenizer.encode_corpus(texts.validation)
    task = RecurrentTrainingTask(config, tokenizer, train_ids, validation_ids, args)
    accelerator = create_accelerator(args, project_name)
    logger.info("%s, %d training characters, vocabulary of %d tokens, %d block(s)",
                args.training_mode, len(train_ids), len(tokenizer), config.num_blocks)
    outcome = train_assigned_blocks(task, args, config.num_blocks, accelerator)
    evaluation = evaluate_recurrent(args, validation_ids, accelerator) if outcome.assignment.is_group_leader else None
    if evaluation is not None:  # every block is there
        metrics = {f"held-out {name}": value for name, value in evaluation.items() if name.startswith(("loss_K", "bpc_K"))}
        write_card_and_publish(args, "recurrent", metrics={**metrics, "held-out windows": evaluation["eval_windows"]})
    return finish_run(accelerator, args, config.num_blocks, outcome, eval=evaluation)


# ---- autoregressive (causal) LM ------------------------------------------------------------
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
        return train_bpe_tokenizer(train_text, vocab_size=args.vocab_size)
    return CharacterTokenizer.from_corpus(train_text, strict=False, pad_token="[PAD]", padding_side="left")


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


def build_causal_lm_config(args: argparse.Namespace, tokenizer, target_table: torch.Tensor | None = None) -> DiffusionBlocksCausalLMConfig:
    end_to_end = args.training_mode == "end_to_end"
    return DiffusionBlocksCausalLMConfig(
        vocab_size=len(tokenizer), hidden_size=args.hidden_size, num_hidden_layers=args.num_hidden_layers,
        num_attention_heads=args.num_attention_heads,
        intermediate_size=args.intermediate_size or 8 * ((8 * args.hidden_size // 3 + 7) // 8),
        max_position_embeddings=args.sequence_length, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        objective="next_token" if end_to_end else "diffusion", target_embedding_dim=args.target_embedding_dim,
        target_embedding_sha256=None if target_table is None else target_embedding_digest(target_table),
        solver=args.solver, clean_loss_weight=0.0 if end_to_end else args.clean_loss_weight,
        num_blocks=1 if end_to_end else args.num_blocks, layers_per_block=None if end_to_end else args.layers_per_block,
        partition=args.partition, overlap=args.overlap,
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


def write_causal_lm_samples(args: argparse.Namespace, tokenizer, validation_ids: torch.Tensor,
                            accelerator: Accelerator) -> list[str] | None:
    """When every block is in the output folder: continue `--num_samples` validation prompts into samples.txt."""
    if not every_block_saved(DiffusionBlocksForCausalLM, args.output_dir, "writing samples.txt"):
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


def train_causal_lm(args: argparse.Namespace, project_name: str = "train_ar") -> dict:
    """Train the causal LM's blocks of this process; once every block is there, samples and the model card."""
    setup_logging()
    texts = load_texts_for_run(args)
    tokenizer = load_or_train_tokenizer(args, texts.train)
    target_table = load_semantic_table(args, tokenizer)
    config = build_causal_lm_config(args, tokenizer, target_table)
    validation_ids = encode_corpus(tokenizer, texts.validation)
    task = CausalLMTrainingTask(config, encode_corpus(tokenizer, texts.train), validation_ids, args, target_table)
    save_tokenizer(args, tokenizer)
    accelerator = create_accelerator(args, project_name)
    logger.info("%s, %d training tokens, vocabulary of %d tokens, %d blocks", args.training_mode,
                len(task.train_ids), len(tokenizer), config.num_blocks)
    if config.objective == "diffusion":
        logger.info("\n%s", format_partition_table(config.noise_partition, config.resolved_layers_per_block))
    outcome = train_assigned_blocks(task, args, config.num_blocks, accelerator)
    samples = None if not outcome.assignment.is_group_leader else write_causal_lm_samples(args, tokenizer, validation_ids, accelerator)
    if samples is not None:  # every block is there
        write_card_and_publish(args, "ar")
    return finish_run(accelerator, args, config.num_blocks, outcome, samples=samples)
