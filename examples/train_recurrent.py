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

from hf_diffusionblocks import DiffusionBlocksRecurrentConfig
from hf_diffusionblocks.argument_checks import check_number
from hf_diffusionblocks.training import (
    HelpFormatter,
    add_common_training_arguments,
    add_text_data_arguments,
    require_at_least,
    validate_common_arguments,
    validate_text_data_arguments,
)
from hf_diffusionblocks.training.runtime import run_script
from hf_diffusionblocks.training.text_runs import RECURRENT_TRAINING_MODES, train_recurrent


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
    check_number(args.mean_recurrence, "--mean_recurrence", minimum=0, minimum_exclusive=True)
    if args.training_mode == "bptt" and args.block_index not in ("all", 0):
        raise ValueError(f"--training_mode bptt trains one recurrent core: --block_index must be 0 or 'all', got {args.block_index}.")


def main(argv: list[str] | None = None) -> dict:
    return train_recurrent(parse_args(argv))


if __name__ == "__main__":
    run_script(main)
