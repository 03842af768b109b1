#!/usr/bin/env python
"""How a conversion's init (`convert --init`) sets quality at step 0 and how fast fine-tuning recovers it.

On the small pretrained digits DiT of `pretrained_quality.py` (pretrained here, or reused from
`--output_dir`), for each init in `--inits`: convert to B blocks, then report the Fréchet classifier
distance (the library's metric, as in `pretrained_quality.py`: lower is better, samples from diffusers'
`DiTPipeline`, DDIM, no guidance) of
  - the converted model at step 0 (no fine-tuning);
  - the converted model fine-tuned block by block (`examples/finetune_pretrained.py --block_index all`,
    `--objective` as given) for S/8, S/4 and S steps per block (S = `--finetune_steps`; each budget is
    its own run from the converted folder, with the same seed);
beside the source's own distance.

    python benchmarks/pretrained_init.py --pretrain_steps 3000 --finetune_steps 240 --num_blocks 3
Prints one JSON line per model and a table; writes the results as JSON to `--output_dir`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
from diffusers import DiTTransformer2DModel

from hf_diffusionblocks.pretrained.conversion import convert_pretrained_transformer
from hf_diffusionblocks.pretrained.initial_layers import INITS
from hf_diffusionblocks.pretrained.modeling_routed import RoutedDiTTransformer2DModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pretrained_quality as quality  # noqa: E402  (this folder's benchmark: its pretraining, fine-tuning and sampling are reused)


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="outputs/pretrained_quality")
    parser.add_argument("--hidden_size", type=int, default=96)
    parser.add_argument("--num_heads", type=int, default=4)
    parser.add_argument("--num_layers", type=int, default=6)
    parser.add_argument("--num_blocks", type=int, default=3)
    parser.add_argument("--inits", nargs="+", choices=INITS, default=list(INITS))
    parser.add_argument("--objective", choices=("native", "distill"), default="native")
    parser.add_argument("--pretrain_steps", type=int, default=3000)
    parser.add_argument("--pretrain_lr", type=float, default=1e-3)
    parser.add_argument("--finetune_steps", type=int, default=240, help="S: the largest fine-tuning budget, steps per block")
    parser.add_argument("--finetune_lr", type=float, default=2e-4)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--sampling_steps", type=int, default=48)
    parser.add_argument("--num_samples", type=int, default=500, help="samples per model (a multiple of 10: equal per class)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.finetune_steps < 8:
        raise ValueError(f"--finetune_steps must be >= 8 (its budgets are S/8, S/4, S), got {args.finetune_steps}.")
    if args.num_samples < 10 or args.num_samples % 10:
        raise ValueError(f"--num_samples must be a positive multiple of 10 (equal samples per class), got {args.num_samples}.")
    return args


def trained_models(source: str, out: str, args: argparse.Namespace) -> dict[str, torch.nn.Module]:
    """Step-0 and fine-tuned models of every init, by row name (runs that finished earlier are reused)."""
    models = {}
    budgets = [args.finetune_steps // 8, args.finetune_steps // 4, args.finetune_steps]
    extra = ("--objective", args.objective) if args.objective != "native" else ()
    for init in args.inits:
        converted = quality.converted_folder(out, args.num_blocks, init)
        if not os.path.isfile(os.path.join(converted, "diffusion_blocks.json")):
            convert_pretrained_transformer(source, converted, args.num_blocks, overlap=0.05, init=init)
        models[f"{init}, step 0"] = RoutedDiTTransformer2DModel.from_pretrained(converted)
        for steps in budgets:
            run_dir = os.path.join(out, f"run_{init}_{args.objective}_b{args.num_blocks}_{steps}steps_lr{args.finetune_lr:g}")
            if not os.path.isfile(os.path.join(run_dir, "README.md")):  # the model card is written last
                started = time.perf_counter()
                quality.finetune(converted, run_dir, steps, args, *extra)
                print(json.dumps({"finetuned": init, "steps_per_block": steps, "seconds": time.perf_counter() - started}), flush=True)
            models[f"{init}, {args.objective} {steps}/block"] = RoutedDiTTransformer2DModel.from_pretrained(run_dir)
    return models


def main(argv: list[str] | None = None) -> dict:
    args = parse_arguments(argv)
    torch.set_num_threads(1)
    out = os.path.abspath(args.output_dir)
    os.makedirs(out, exist_ok=True)
    source = os.path.join(out, "source")
    if not os.path.isfile(os.path.join(source, "transformer", "config.json")):
        quality.pretrain(source, args)
    models = {"source (pretrained)": DiTTransformer2DModel.from_pretrained(os.path.join(source, "transformer")).eval()}
    models.update(trained_models(source, out, args))

    metric, _, test_set = quality.digits_distance()
    labels = torch.arange(10).repeat(args.num_samples // 10)
    results = {}
    for name, model in models.items():
        results[name] = metric.compute(test_set.images, quality.sample(model, labels, args))
        print(json.dumps({"model": name, "frechet_classifier_distance": results[name]}), flush=True)
    inits = "-".join(args.inits)
    name = f"results_init_{inits}_{args.objective}_B{args.num_blocks}_S{args.finetune_steps}_lr{args.finetune_lr:g}.json"
    with open(os.path.join(out, name), "w") as file:
        json.dump({"arguments": vars(args), "frechet_classifier_distance": results}, file, indent=2)
    print(f"\nFréchet classifier distance to the test digits (lower is better), B={args.num_blocks}, S={args.finetune_steps}:")
    for row, value in results.items():
        print(f"  {value:8.3f}  {row}")
    return results


if __name__ == "__main__":
    main()
