#!/usr/bin/env python
"""Generation speed of the causal LM: block-wise (B blocks, Euler steps per token) vs end to end, same run.

Per generated token the end-to-end model runs its L layers once on the new token (KV cache). The
block-wise model runs every block's clean stream on the new token (L layers, to extend the cache) and
then `num_inference_steps` Euler steps of the next token's embedding, each through one block of L/B
layers: with one step per block that is 2L layer evaluations, so about half the end-to-end speed.

Both models have the same width and depth (random weights: speed does not depend on training), or are
loaded from `--blockwise_dir` / `--end_to_end_dir`. Greedy decoding, no early stop (`eos_token_id=None`),
timings alternate between the two models over `--rounds` rounds after a warm-up, best round kept.

    python benchmarks/generation.py --size XS --batch_size 8 --max_new_tokens 64
Last line: `generation_tokens_per_second_ratio_blockwise_over_e2e=<x> num_blocks=<B>`.
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
def seconds_to_generate(model, prompt: torch.Tensor, args: argparse.Namespace) -> float:
    if prompt.device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    output = model.generate(
        prompt, max_new_tokens=args.max_new_tokens, do_sample=False, eos_token_id=None, pad_token_id=0,
        num_inference_steps=args.num_inference_steps, generator=torch.Generator().manual_seed(0),
    )
    if prompt.device.type == "cuda":
        torch.cuda.synchronize()
    assert output.shape[1] == prompt.shape[1] + args.max_new_tokens
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(AR_SIZES), default="XS", help=f"Decoder size: {AR_SIZES}.")
    parser.add_argument("--num_blocks", type=int, default=4)
    parser.add_argument("--num_inference_steps", type=int, default=None, help="Euler steps per token (default: one per block).")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--prompt_length", type=int, default=16)
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--blockwise_dir", type=str, default=None, help="A block-wise folder written by train_ar.py.")
    parser.add_argument("--end_to_end_dir", type=str, default=None, help="An end-to-end folder written by train_ar.py.")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    models = build_models(args, device)
    context = min(model.config.max_position_embeddings for model in models.values())
    if args.prompt_length + args.max_new_tokens > context:
        raise ValueError(f"--prompt_length + --max_new_tokens must fit the context of {context} tokens.")
    vocab_size = min(model.config.vocab_size for model in models.values())
    prompt = torch.randint(1, vocab_size, (args.batch_size, args.prompt_length), generator=torch.Generator().manual_seed(0)).to(device)

    best = {name: float("inf") for name in models}
    for name, model in models.items():
        seconds_to_generate(model, prompt, args)                                          # warm-up
    for _ in range(args.rounds):
        for name, model in models.items():
            best[name] = min(best[name], seconds_to_generate(model, prompt, args))
    new_tokens = args.batch_size * args.max_new_tokens
    blockwise = models["block-wise"]
    steps = args.num_inference_steps or blockwise.config.default_num_inference_steps
    print(f"device={args.device} threads={torch.get_num_threads()} batch={args.batch_size} prompt={args.prompt_length} "
          f"new_tokens={args.max_new_tokens} layers={blockwise.config.num_hidden_layers} hidden={blockwise.config.hidden_size} "
          f"num_blocks={blockwise.config.num_blocks} euler_steps_per_token={steps}")
    print(f"{'model':<14}{'seconds':>10}{'tokens/s':>12}")
    for name, seconds in best.items():
        print(f"{name:<14}{seconds:>10.3f}{new_tokens / seconds:>12.1f}")
    ratio = best["end to end"] / best["block-wise"]
    print(f"generation_tokens_per_second_ratio_blockwise_over_e2e={ratio:.3f} num_blocks={blockwise.config.num_blocks}")


if __name__ == "__main__":
    main()
