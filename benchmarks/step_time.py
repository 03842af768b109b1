#!/usr/bin/env python
"""Training step time: the B blocks' steps added up vs one end-to-end step, measured in the same run.

Block-wise training runs one block per step; over B steps (one per block) it processes the same
layers an end-to-end step does once. The paper reports 0.0543 s vs 0.0507 s (ratio 1.07): the
extra cost is every block's own embedders and readout.

    python benchmarks/step_time.py --family dit --num_blocks 3
Last line: `step_time_ratio_blockwise_sum_over_e2e=<x> num_blocks=<B>`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from families import FAMILIES  # noqa: E402


def seconds_per_step(family, config, block_index: int, batch: dict, warmup: int, steps: int, device: torch.device) -> float:
    torch.manual_seed(0)
    model = family.model_class(config, block_indices=[block_index]).to(device).train()
    optimizer = torch.optim.AdamW(model.block_parameters(block_index), lr=1e-4)
    generator = torch.Generator().manual_seed(0)

    def step() -> None:
        loss = family.block_loss(model, block_index, batch, generator)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=sorted(FAMILIES), default="dit")
    parser.add_argument("--size", default=None)
    parser.add_argument("--num_blocks", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2, help="Alternate e2e/block-wise measurements this many times.")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    family = FAMILIES[args.family]
    size = args.size or family.default_size
    batch_size = args.batch_size or family.default_batch_size
    device = torch.device(args.device)

    end_to_end_config = family.build_config(1, size)
    blockwise_config = family.build_config(args.num_blocks, size)
    batch = family.make_batch(end_to_end_config, batch_size, device)
    end_to_end, per_block = [], [[] for _ in range(args.num_blocks)]
    for _ in range(args.rounds):  # interleave so drift in machine load hits both alike
        end_to_end.append(seconds_per_step(family, end_to_end_config, 0, batch, args.warmup, args.steps, device))
        for block_index in range(args.num_blocks):
            per_block[block_index].append(
                seconds_per_step(family, blockwise_config, block_index, batch, args.warmup, args.steps, device))
    e2e = min(end_to_end)
    blocks = [min(times) for times in per_block]
    ratio = sum(blocks) / e2e
    print(f"family={args.family} size={size} batch={batch_size} device={args.device} steps={args.steps} (min of {args.rounds} rounds)")
    print(f"end-to-end step:            {e2e * 1e3:9.1f} ms")
    for block_index, seconds in enumerate(blocks):
        print(f"block {block_index} step:               {seconds * 1e3:9.1f} ms")
    print(f"sum of the {args.num_blocks} block steps:     {sum(blocks) * 1e3:9.1f} ms")
    print(f"step_time_ratio_blockwise_sum_over_e2e={ratio:.3f} num_blocks={args.num_blocks}")


if __name__ == "__main__":
    main()
