#!/usr/bin/env python
"""Train a DiffusionBlocks recurrent-depth language model (Huginn-style prelude / core / coda), or its
truncated-BPTT baseline.

    accelerate launch examples/train_recurrent.py --dataset_name shakespeare --output_dir outputs/recurrent-shakespeare

`--training_mode blockwise` (DiffusionBlocks): every step is ONE forward pass of prelude, core and
coda at a σ drawn from p_noise: the state z = E[x_{t+1}] + σε is denoised into next-token logits
(cross-entropy). With the default `--num_blocks 1` the one core owns every noise level (the paper's
setting); `--num_blocks B` gives B cores, each owning an interval, trained one after another.
`--training_mode end_to_end` is the same objective with `num_blocks=1`.
`--training_mode bptt` is the baseline: the same model unrolled for r ~ Huginn's random depth
(`--mean_recurrence`) iterations from z = σ_max·ε, backpropagating through the last `--bptt_steps`
of them, cross-entropy at the last readout.

At inference the core runs K = `--num_iterations` times, Euler steps on the σ grid. The output folder
is a model folder with the tokenizer; `DiffusionBlocksRecurrentForCausalLM.from_pretrained(output_dir)`
and `CharacterTokenizer.from_pretrained(output_dir)` load it. When the model is complete the held-out
cross-entropy (nats and bits per character) at K = 1 and K = `--num_iterations` goes to `eval_results.json`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os

import torch
from accelerate import Accelerator

from hf_diffusionblocks import CharacterTokenizer, DiffusionBlocksRecurrentConfig, DiffusionBlocksRecurrentForCausalLM
from hf_diffusionblocks.atomic_io import atomic_save_folder
from hf_diffusionblocks.modeling.block_checkpoint import block_weights_name
from hf_diffusionblocks.models.recurrent import RecurrentDenoisingLoss, TruncatedBPTTLoss
from hf_diffusionblocks.models.recurrent.evaluation_recurrent import held_out_cross_entropy
from hf_diffusionblocks.training import (
    TRAINING_MODES,
    HelpFormatter,
    add_common_training_arguments,
    add_text_data_arguments,
    require_at_least,
    validate_common_arguments,
    validate_text_data_arguments,
)
from hf_diffusionblocks.training.runtime import run_script, setup_logging
from hf_diffusionblocks.training.launch import create_accelerator, finish_run, train_assigned_blocks, write_card_and_publish
from hf_diffusionblocks.training.text_task import TextWindowTask, load_texts_for_run
from hf_diffusionblocks.training.tracking import log_metrics

logger = logging.getLogger("train_recurrent")

RECURRENT_TRAINING_MODES = (*TRAINING_MODES, "bptt")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_common_training_arguments(
        parser, defaults={"num_blocks": 1, "train_batch_size": 32, "lr_warmup_steps": 50},
        training_modes=RECURRENT_TRAINING_MODES,   # this family's third mode: the truncated-BPTT baseline
        layer_split=False,                          # its blocks are iterations of one core, not layers
    )
    add_text_data_arguments(parser)
    recurrent = parser.add_argument_group("recurrent depth")
    recurrent.add_argument("--hidden_size", type=int, default=128, help="Width of every layer.")
    recurrent.add_argument("--num_hidden_layers", type=int, default=2, help="Layers of the recurrent core (all blocks).")
    recurrent.add_argument("--num_prelude_layers", type=int, default=1, help="Layers of the prelude (run once).")
    recurrent.add_argument("--num_coda_layers", type=int, default=1, help="Layers of the coda (the readout).")
    recurrent.add_argument("--num_attention_heads", type=int, default=4, help="Attention heads per layer.")
    recurrent.add_argument("--intermediate_size", type=int, default=None, help="MLP width (None: 4 × hidden_size).")
    recurrent.add_argument("--sequence_length", type=int, default=128, help="Characters of context per training window.")
    recurrent.add_argument("--num_iterations", type=int, default=8, help="K: core iterations at evaluation and generation.")
    recurrent.add_argument("--mean_recurrence", type=float, default=8.0, help="bptt: mean of the random depth r (Huginn: 32).")
    recurrent.add_argument("--bptt_steps", type=int, default=4, help="bptt: iterations backpropagated through (Huginn: 8).")
    recurrent.add_argument("--p_mean", type=float, default=DiffusionBlocksRecurrentConfig.p_mean,
                           help="Mean of ln(sigma) of the noise distribution (EDM's images: -1.2; see DiffusionBlocksRecurrentConfig).")
    recurrent.add_argument("--p_std", type=float, default=DiffusionBlocksRecurrentConfig.p_std,
                           help="Std of ln(sigma) of the noise distribution.")
    recurrent.add_argument("--validation_windows", type=int, default=32, help="Windows of the logged validation loss.")
    recurrent.add_argument("--eval_windows", type=int, default=256, help="Windows of the final held-out loss.")
    recurrent.add_argument("--sample_length", type=int, default=200, help="Characters generated into samples.txt.")
    args = parser.parse_args(argv)
    validate_common_arguments(args)
    validate_text_data_arguments(args)
    validate_recurrent_arguments(args)
    return args


def validate_recurrent_arguments(args: argparse.Namespace) -> None:
    require_at_least(args, ("hidden_size", "num_hidden_layers", "num_attention_heads", "sequence_length", "num_iterations",
                            "bptt_steps", "validation_windows", "eval_windows"))
    require_at_least(args, ("num_prelude_layers", "num_coda_layers", "sample_length"), minimum=0)
    if not args.mean_recurrence > 0:
        raise ValueError(f"--mean_recurrence must be > 0, got {args.mean_recurrence}.")
    if args.training_mode == "bptt" and args.block_index not in ("all", 0):
        raise ValueError(f"--training_mode bptt trains one recurrent core: --block_index must be 0 or 'all', got {args.block_index}.")


def build_config(args: argparse.Namespace, tokenizer: CharacterTokenizer) -> DiffusionBlocksRecurrentConfig:
    one_core = args.training_mode in ("end_to_end", "bptt")
    return DiffusionBlocksRecurrentConfig(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden_size,
        num_hidden_layers=args.num_hidden_layers,
        num_prelude_layers=args.num_prelude_layers,
        num_coda_layers=args.num_coda_layers,
        num_attention_heads=args.num_attention_heads,
        intermediate_size=args.intermediate_size or 4 * args.hidden_size,
        max_position_embeddings=args.sequence_length,
        num_iterations=args.num_iterations,
        num_blocks=1 if one_core else args.num_blocks,
        partition=args.partition,
        overlap=0.0 if one_core else args.overlap,
        p_mean=args.p_mean,
        p_std=args.p_std,
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


def evaluate_model(args: argparse.Namespace, validation_ids: torch.Tensor, accelerator: Accelerator) -> dict | None:
    """When every block is saved: held-out loss / BPC at K = 1 and K = --num_iterations, and a sample."""
    config = DiffusionBlocksRecurrentForCausalLM.load_config(args.output_dir)
    present = [b for b in range(config.num_blocks) if os.path.isfile(os.path.join(args.output_dir, block_weights_name(b)))]
    if len(present) < config.num_blocks:
        logger.info("blocks %s of %d are done; evaluation runs when all are.", present, config.num_blocks)
        return None
    model = DiffusionBlocksRecurrentForCausalLM.from_pretrained(args.output_dir).to(accelerator.device)
    tokenizer = CharacterTokenizer.from_pretrained(args.output_dir)
    result: dict = {"training_mode": args.training_mode, "num_blocks": config.num_blocks, "eval_windows": args.eval_windows,
                    "sequence_length": args.sequence_length}
    for num_iterations in sorted({1, args.num_iterations}):
        loss = held_out_cross_entropy(model, validation_ids, args.sequence_length, args.eval_windows, num_iterations)
        result[f"loss_K{num_iterations}"] = loss
        result[f"bpc_K{num_iterations}"] = loss / math.log(2)
    prompt_length = max(1, args.sequence_length // 4)
    new_tokens = min(args.sample_length, args.sequence_length - prompt_length)
    if new_tokens > 0:
        prompt = validation_ids[:prompt_length][None].to(accelerator.device)
        generated = model.generate(prompt, max_new_tokens=new_tokens, do_sample=False, num_iterations=args.num_iterations)
        with open(os.path.join(args.output_dir, "samples.txt"), "w", encoding="utf-8") as file:
            file.write(tokenizer.decode(generated[0].tolist()) + "\n")
    with open(os.path.join(args.output_dir, "eval_results.json"), "w", encoding="utf-8") as file:
        json.dump(result, file, indent=2)
    log_metrics(accelerator, {f"test/{k}": v for k, v in result.items() if isinstance(v, float)}, step=0)
    logger.info("held-out: %s", result)
    return result


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    setup_logging()
    # data and config first: a bad dataset or size fails before anything is written to --output_dir
    texts = load_texts_for_run(args)
    tokenizer = CharacterTokenizer.from_corpus(texts.train, strict=False)
    config = build_config(args, tokenizer)
    train_ids, validation_ids = tokenizer.encode_corpus(texts.train), tokenizer.encode_corpus(texts.validation)
    task = RecurrentTrainingTask(config, tokenizer, train_ids, validation_ids, args)
    accelerator = create_accelerator(args, "train_recurrent")
    logger.info("%s, %d training characters, vocabulary of %d tokens, %d block(s)",
                args.training_mode, len(train_ids), len(tokenizer), config.num_blocks)

    outcome = train_assigned_blocks(task, args, config.num_blocks, accelerator)
    evaluation = evaluate_model(args, validation_ids, accelerator) if outcome.assignment.is_group_leader else None
    if evaluation is not None:  # every block is there
        metrics = {f"held-out {name}": value for name, value in evaluation.items() if name.startswith(("loss_K", "bpc_K"))}
        write_card_and_publish(args, "recurrent", metrics={**metrics, "held-out windows": evaluation["eval_windows"]})
    return finish_run(accelerator, args, config.num_blocks, outcome, eval=evaluation)


if __name__ == "__main__":
    run_script(main)
