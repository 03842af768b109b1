#!/usr/bin/env python
"""Generation speed of the causal LM: block-wise (B blocks, Euler steps per token) vs end to end, same run.

Per generated token the end-to-end model runs its L layers once on the new token (KV cache on). The
block-wise model runs, in each block, the newly decoded token (to extend the block's KV cache) and the
next token's noisy embedding together in the call of the block's first Euler step: with one step per
block that is also L layer evaluations per token (over 2 positions instead of 1), plus per step what
the end-to-end model does once per token (a readout) and what it never does (noisy-input projection,
softmax·E, the Euler update). A block's further steps (more steps than blocks) run L/B layers each
over the noisy query alone.

Both models have the same width and depth (random weights: speed does not depend on training), or are
loaded from `--blockwise_dir` / `--end_to_end_dir`. No early stop (`eos_token_id=None`), KV cache on
both sides. For every batch size and decoding (greedy; sampled: `do_sample=True, top_k=0` from a fixed
seed), timings alternate between the two models over `--rounds` rounds after a warm-up and the best
round of each is kept, so load from other processes hits both alike. On a shared CPU, `--clock process`
times the CPU the process itself used (with OMP_NUM_THREADS=1), which other processes barely disturb.

    OMP_NUM_THREADS=1 python benchmarks/generation.py --size XS --batch_sizes 1 16 --max_new_tokens 64
Last line: `generation_tokens_per_second_ratio_blockwise_over_e2e=<x> num_blocks=<B>`, x the lowest ratio
over the cases measured (each case's ratio is in the table).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from families import AR_SIZES, FAMILIES  # noqa: E402

from hf_diffusionblocks import DiffusionBlocksForCausalLM  # noqa: E402

DECODINGS = {"greedy": dict(do_sample=False), "sampled": dict(do_sample=True, top_k=0)}


def build_models(args: argparse.Namespace, device: torch.device) -> dict[str, DiffusionBlocksForCausalLM]:
    if args.blockwise_dir or args.end_to_end_dir:
        if not (args.blockwise_dir and args.end_to_end_dir):
            raise ValueError("pass both --blockwise_dir and --end_to_end_dir, or neither.")
        paths = {"block-wise": args.blockwise_dir, "end to end": args.end_to_end_dir}
        return {name: DiffusionBlocksForCausalLM.from_pretrained(path).to(device).eval() for name, path in paths.items()}
    family = FAMILIES["ar"]
    torch.manual_seed(0)
    return {
        "block-wise": DiffusionBlocksForCausalLM(family.build_config(args.num_blocks, args.size)).to(device).eval(),
        "end to end": DiffusionBlocksForCausalLM(family.build_config(1, args.size)).to(device).eval(),
    }


@torch.no_grad()
def seconds_to_generate(model, prompt: torch.Tensor, decoding: str, args: argparse.Namespace) -> float:
    torch.manual_seed(0)                                                              # the sampled tokens' draws
    clock = time.process_time if args.clock == "process" else time.perf_counter
    if prompt.device.type == "cuda":
        torch.cuda.synchronize()
    started = clock()
    output = model.generate(
        prompt, max_new_tokens=args.max_new_tokens, eos_token_id=None, pad_token_id=0, use_cache=True,
        num_inference_steps=args.num_inference_steps, generator=torch.Generator().manual_seed(0), **DECODINGS[decoding],
        **({"solver": args.solver} if model.config.objective == "diffusion" else {}),
    )
    if prompt.device.type == "cuda":
        torch.cuda.synchronize()
    assert output.shape[1] == prompt.shape[1] + args.max_new_tokens
    return clock() - started


def best_seconds(models: dict, prompt: torch.Tensor, decoding: str, args: argparse.Namespace) -> dict[str, float]:
    """Warm-up, then `args.rounds` rounds alternating between the models; the best round of each."""
    best = {name: float("inf") for name in models}
    for model in models.values():
        seconds_to_generate(model, prompt, decoding, args)
    for _ in range(args.rounds):
        for name, model in models.items():
            best[name] = min(best[name], seconds_to_generate(model, prompt, decoding, args))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(AR_SIZES), default="XS", help=f"Decoder size: {AR_SIZES}.")
    parser.add_argument("--num_blocks", type=int, default=4)
    parser.add_argument("--num_inference_steps", type=int, default=None, help="Euler steps per token (default: one per block).")
    parser.add_argument("--solver", choices=["euler", "ancestral"], default="euler",
                        help="The block-wise model's step (ancestral: a token drawn from each readout, re-noised).")
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--decodings", choices=sorted(DECODINGS), nargs="+", default=["greedy", "sampled"])
    parser.add_argument("--prompt_length", type=int, default=16)
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--blockwise_dir", type=str, default=None, help="A block-wise folder written by train_ar.py.")
    parser.add_argument("--end_to_end_dir", type=str, default=None, help="An end-to-end folder written by train_ar.py.")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--clock", choices=["wall", "process"], default="wall",
                        help="wall: elapsed time; process: CPU time of this process (CPU runs on a shared machine).")
    args = parser.parse_args()
    if args.clock == "process" and args.device != "cpu":
        raise ValueError("--clock process measures CPU time: use it with --device cpu.")
    if min(args.batch_sizes) < 1 or args.rounds < 1 or args.max_new_tokens < 1:
        raise ValueError("--batch_sizes, --rounds and --max_new_tokens must be >= 1.")
    device = torch.device(args.device)
    models = build_models(args, device)
    context = min(model.config.max_position_embeddings for model in models.values())
    if args.prompt_length + args.max_new_tokens > context:
        raise ValueError(f"--prompt_length + --max_new_tokens must fit the context of {context} tokens.")
    vocab_size = min(model.config.vocab_size for model in models.values())

    blockwise = models["block-wise"]
    steps = args.num_inference_steps or blockwise.config.default_num_inference_steps
    print(f"device={args.device} threads={torch.get_num_threads()} prompt={args.prompt_length} "
          f"new_tokens={args.max_new_tokens} layers={blockwise.config.num_hidden_layers} hidden={blockwise.config.hidden_size} "
          f"num_blocks={blockwise.config.num_blocks} euler_steps_per_token={steps} use_cache=True rounds={args.rounds} clock={args.clock}")
    print(f"{'batch':>6} {'decoding':<9}{'block-wise tok/s':>18}{'end to end tok/s':>18}{'ratio':>8}")
    ratios = []
    for batch_size in args.batch_sizes:
        prompt = torch.randint(1, vocab_size, (batch_size, args.prompt_length), generator=torch.Generator().manual_seed(0))
        for decoding in args.decodings:
            best = best_seconds(models, prompt.to(device), decoding, args)
            new_tokens = batch_size * args.max_new_tokens
            ratios.append(best["end to end"] / best["block-wise"])
            print(f"{batch_size:>6} {decoding:<9}{new_tokens / best['block-wise']:>18.1f}"
                  f"{new_tokens / best['end to end']:>18.1f}{ratios[-1]:>8.3f}", flush=True)
    print(f"generation_tokens_per_second_ratio_blockwise_over_e2e={min(ratios):.3f} num_blocks={blockwise.config.num_blocks}")


if __name__ == "__main__":
    main()
