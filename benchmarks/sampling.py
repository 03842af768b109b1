#!/usr/bin/env python
"""Sampling cost: seconds per sample and per step at equal steps, end to end vs block-wise, same run,
the two paths alternating round by round (best round of `--rounds` kept).

At every step block-wise sampling runs only the block that owns the step's noise level (L/B
layers), end to end runs all L layers, so the expected speed-up is ≈B. Both models are randomly
initialised (cost does not depend on the weights). Families: `dit` (images through
`DiffusionBlocksImagePipeline`) and `mdm` (text through `DiffusionBlocksTextPipeline`, text8's
28-token vocabulary, windows of `max_position_embeddings`).

    python benchmarks/sampling.py --family dit --num_blocks 3 --num_inference_steps 48
    python benchmarks/sampling.py --family mdm --size XS --num_blocks 3 --num_inference_steps 48
Last line: `sampling_speedup_blockwise_over_e2e=<x> num_blocks=<B>`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Callable

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from families import FAMILIES  # noqa: E402

from hf_diffusionblocks import (  # noqa: E402
    CharacterTokenizer,
    DiffusionBlocksImagePipeline,
    DiffusionBlocksScheduler,
    DiffusionBlocksTextPipeline,
)


def image_sampler(config, model_class, batch_size: int, guidance_scale: float) -> tuple[object, Callable[[int], object]]:
    """(pipeline, `run(steps)`): `batch_size` class-conditional images (labels 0, 1, ... cycling) in `steps` steps."""
    pipeline = DiffusionBlocksImagePipeline(model_class(config).eval(), DiffusionBlocksScheduler(**config.scheduler_kwargs()))
    labels = torch.arange(batch_size) % config.num_labels
    return pipeline, lambda steps: pipeline(labels, num_inference_steps=steps, guidance_scale=guidance_scale, output_type="pt")


def text_sampler(config, model_class, batch_size: int, guidance_scale: float) -> tuple[object, Callable[[int], object]]:
    """(pipeline, `run(steps)`): `batch_size` unconditional texts of `max_position_embeddings` characters in `steps` unmasking steps."""
    model = model_class(config).eval()
    pipeline = DiffusionBlocksTextPipeline(model, model.build_scheduler(), CharacterTokenizer(vocabulary_type="text8"))
    return pipeline, lambda steps: pipeline(num_samples=batch_size, num_inference_steps=steps)


SAMPLERS = {"dit": image_sampler, "mdm": text_sampler}


def timed(run: Callable[[int], object], steps: int, batch_size: int, device: torch.device) -> float:
    """Seconds per sample of one `run(steps)`."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    run(steps)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / batch_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=sorted(SAMPLERS), default="dit")
    parser.add_argument("--size", default="S")
    parser.add_argument("--num_blocks", type=int, default=3)
    parser.add_argument("--num_inference_steps", type=int, default=48)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--guidance_scale", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.family != "dit" and args.guidance_scale != 1.0:
        parser.error(f"--guidance_scale applies to the dit family only (got {args.guidance_scale} for {args.family}).")
    family = FAMILIES[args.family]
    device = torch.device(args.device)
    runs = {}
    for label, num_blocks in (("end to end", 1), ("block-wise", args.num_blocks)):
        torch.manual_seed(0)
        config = family.build_config(num_blocks, args.size)
        pipeline, run = SAMPLERS[args.family](config, family.model_class, args.batch_size, args.guidance_scale)
        pipeline.to(device)
        pipeline.set_progress_bar_config(disable=True)
        run(config.num_blocks)  # warm-up
        runs[label] = run
    # the two paths alternate round by round (best round kept), so a change of machine load hits both alike
    rounds = {label: [] for label in runs}
    for _ in range(args.rounds):
        for label, run in runs.items():
            rounds[label].append(timed(run, args.num_inference_steps, args.batch_size, device))
    timings = {label: min(values) for label, values in rounds.items()}
    speedup = timings["end to end"] / timings["block-wise"]
    print(f"family={args.family} size={args.size} batch={args.batch_size} steps={args.num_inference_steps} "
          f"guidance={args.guidance_scale} device={args.device}")
    for label, seconds in timings.items():
        print(f"{label:<12} {seconds * 1e3:9.2f} ms per sample  {seconds * 1e3 / args.num_inference_steps:8.3f} ms per sample-step")
    print(f"sampling_speedup_blockwise_over_e2e={speedup:.2f} num_blocks={args.num_blocks}")


if __name__ == "__main__":
    main()
