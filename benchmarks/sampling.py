#!/usr/bin/env python
"""Sampling cost: seconds per image at equal steps, end to end vs block-wise, same run.

At every step block-wise sampling runs only the block that owns σ (L/B layers), end to end runs
all L layers, so the expected speed-up is ≈B. Both models are randomly initialised (cost does
not depend on the weights).

    python benchmarks/sampling.py --num_blocks 3 --num_inference_steps 48
Last line: `sampling_speedup_blockwise_over_e2e=<x> num_blocks=<B>`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from families import FAMILIES  # noqa: E402

from hf_diffusionblocks import DiffusionBlocksImagePipeline, DiffusionBlocksScheduler  # noqa: E402


def seconds_per_image(config, model_class, batch_size: int, steps: int, guidance_scale: float, device, rounds: int) -> float:
    torch.manual_seed(0)
    pipeline = DiffusionBlocksImagePipeline(model_class(config).eval(), DiffusionBlocksScheduler(**config.scheduler_kwargs()))
    pipeline.to(device)
    pipeline.set_progress_bar_config(disable=True)
    labels = torch.arange(batch_size) % config.num_labels
    pipeline(labels, num_inference_steps=config.num_blocks, guidance_scale=guidance_scale, output_type="pt")  # warm-up
    timings = []
    for _ in range(rounds):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        pipeline(labels, num_inference_steps=steps, guidance_scale=guidance_scale, output_type="pt")
        if device.type == "cuda":
            torch.cuda.synchronize()
        timings.append((time.perf_counter() - started) / batch_size)
    return min(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=["dit"], default="dit")
    parser.add_argument("--size", default="S")
    parser.add_argument("--num_blocks", type=int, default=3)
    parser.add_argument("--num_inference_steps", type=int, default=48)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--guidance_scale", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    family = FAMILIES[args.family]
    device = torch.device(args.device)
    timings = {}
    for label, num_blocks in (("end to end", 1), ("block-wise", args.num_blocks)):
        config = family.build_config(num_blocks, args.size)
        timings[label] = seconds_per_image(config, family.model_class, args.batch_size, args.num_inference_steps,
                                           args.guidance_scale, device, args.rounds)
    speedup = timings["end to end"] / timings["block-wise"]
    print(f"family={args.family} size={args.size} batch={args.batch_size} steps={args.num_inference_steps} "
          f"guidance={args.guidance_scale} device={args.device}")
    for label, seconds in timings.items():
        print(f"{label:<12} {seconds * 1e3:9.2f} ms per image")
    print(f"sampling_speedup_blockwise_over_e2e={speedup:.2f} num_blocks={args.num_blocks}")


if __name__ == "__main__":
    main()
