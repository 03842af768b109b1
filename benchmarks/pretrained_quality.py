#!/usr/bin/env python
"""What converting and fine-tuning block by block costs in quality, on a small pretrained DiT.

1. Pretrain a pixel-space class-conditional `DiTTransformer2DModel` (8×8 digits, DDPM ε-prediction,
   uniform timesteps: diffusers' own DiT objective) end to end for `--pretrain_steps`.
2. Convert it to B blocks and compare, by Fréchet classifier distance (the library's metric: a
   classifier trained on the training digits; test digits as reference; lower is better), with
   samples drawn by diffusers' own `DiTPipeline` (DDIM, no guidance, pixel space through an
   identity decoder):
   - source: the pretrained model as is;
   - (a) converted, no fine-tuning (each block is a slice of the stack: L/B layers per step);
   - (b) converted + block-wise fine-tuned on the data (native objective), S/B steps per block
         (equal total steps) and S steps per block (equal per-block steps);
   - (c) converted + distilled from the source (`--objective distill`), same two budgets;
   - (d) the source fine-tuned end to end for S steps (the control).
   Every fine-tuning run is `examples/finetune_pretrained.py`.

    python benchmarks/pretrained_quality.py --pretrain_steps 3000 --finetune_steps 600 --num_blocks 3
Prints one JSON line per model and a table; writes sample grids to `--output_dir`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time
from types import SimpleNamespace

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DiTPipeline, DiTTransformer2DModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from hf_diffusionblocks.data import load_image_dataset
from hf_diffusionblocks.metrics import FeatureClassifierTrainingArguments, FrechetClassifierDistance, load_or_train_feature_classifier
from hf_diffusionblocks.pretrained.conversion import convert_pretrained_transformer
from hf_diffusionblocks.pretrained.initial_layers import INITS
from hf_diffusionblocks.pretrained.modeling_routed import RoutedDiTTransformer2DModel
from hf_diffusionblocks.utils.image_grid import save_image_grid

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


class IdentityDecoder(ModelMixin, ConfigMixin):
    """Stands in for `DiTPipeline`'s VAE in pixel space: `decode` returns its input."""

    @register_to_config
    def __init__(self, scaling_factor: float = 1.0):
        super().__init__()
        # pipelines find their device and dtype from a tensor of each module
        self.register_buffer("device_marker", torch.zeros(()), persistent=False)

    def decode(self, latents: torch.Tensor):
        return SimpleNamespace(sample=latents)


def converted_folder(out: str, num_blocks: int, init: str) -> str:
    """Where a benchmark keeps its source converted into `num_blocks` blocks with `init` (no suffix for contiguous)."""
    return os.path.join(out, f"converted_b{num_blocks}" + ("" if init == "contiguous" else f"_{init}"))


def pretrain(folder: str, args: argparse.Namespace) -> None:
    """End-to-end DDPM training of a small DiT on the digits; saved as a pipeline folder."""
    data = load_image_dataset("digits", "train")
    torch.manual_seed(args.seed)
    model = DiTTransformer2DModel(
        num_attention_heads=args.num_heads, attention_head_dim=args.hidden_size // args.num_heads, in_channels=1, out_channels=1,
        num_layers=args.num_layers, sample_size=8, patch_size=2, num_embeds_ada_norm=10,
    )
    scheduler = DDPMScheduler()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.pretrain_lr)
    generator = torch.Generator().manual_seed(args.seed)
    model.train()
    started = time.perf_counter()
    for step in range(args.pretrain_steps):
        indices = torch.randint(0, len(data.labels), (args.batch_size,), generator=generator)
        clean, labels = data.images[indices], data.labels[indices]
        t = torch.randint(0, scheduler.config.num_train_timesteps, (args.batch_size,), generator=generator)
        noise = torch.randn(clean.shape, generator=generator)
        loss = torch.nn.functional.mse_loss(model(scheduler.add_noise(clean, noise, t), timestep=t, class_labels=labels).sample, noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        if (step + 1) % 500 == 0:
            print(json.dumps({"pretrain_step": step + 1, "loss": loss.item(), "seconds": time.perf_counter() - started}), flush=True)
    model.eval().save_pretrained(os.path.join(folder, "transformer"))
    scheduler.save_pretrained(os.path.join(folder, "scheduler"))
    with open(os.path.join(folder, "model_index.json"), "w") as file:
        json.dump({"_class_name": "DiTPipeline"}, file)


def finetune(converted_dir: str, output_dir: str, block_steps: int, args: argparse.Namespace, *extra: str) -> None:
    spec = importlib.util.spec_from_file_location("finetune_pretrained", os.path.join(EXAMPLES, "finetune_pretrained.py"))
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main([
        "--converted_dir", converted_dir, "--output_dir", output_dir, "--dataset", "digits", "--block_index", "all",
        "--max_train_steps", str(block_steps), "--train_batch_size", str(args.batch_size), "--learning_rate", str(args.finetune_lr),
        "--lr_warmup_steps", "0", "--checkpointing_steps", str(10**9), "--logging_steps", str(max(block_steps // 4, 1)),
        "--report_to", "none", "--seed", str(args.seed), *extra,
    ])


@torch.no_grad()
def sample(transformer, labels: torch.Tensor, args: argparse.Namespace) -> torch.Tensor:
    """Images in [-1, 1] from diffusers' DiTPipeline (DDIM, no guidance)."""
    pipeline = DiTPipeline(transformer=transformer, vae=IdentityDecoder(), scheduler=DDIMScheduler.from_config(DDPMScheduler().config))
    pipeline.set_progress_bar_config(disable=True)
    images = pipeline(class_labels=labels.tolist(), guidance_scale=1.0, num_inference_steps=args.sampling_steps,
                      generator=torch.Generator().manual_seed(args.seed), output_type="pt").images
    return images * 2 - 1


def digits_distance():
    """The metric of this benchmark and of those that import it: (the Fréchet classifier distance on the
    library's digits classifier, the training digits, the test digits)."""
    train_set, test_set = load_image_dataset("digits", "train"), load_image_dataset("digits", "test")
    classifier = load_or_train_feature_classifier(train_set.images, train_set.labels, 10, FeatureClassifierTrainingArguments(num_threads=1))
    return FrechetClassifierDistance(classifier), train_set, test_set


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="outputs/pretrained_quality")
    parser.add_argument("--hidden_size", type=int, default=96)
    parser.add_argument("--num_heads", type=int, default=4)
    parser.add_argument("--num_layers", type=int, default=6)
    parser.add_argument("--num_blocks", type=int, default=3)
    parser.add_argument("--pretrain_steps", type=int, default=3000)
    parser.add_argument("--pretrain_lr", type=float, default=1e-3)
    parser.add_argument("--finetune_steps", type=int, default=600, help="S: the end-to-end control's steps")
    parser.add_argument("--finetune_lr", type=float, default=2e-4)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--sampling_steps", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init", choices=INITS, default="contiguous",
                        help="`convert --init` of the block-wise rows (docs/results/pretrained.md's table was measured with contiguous)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = os.path.abspath(args.output_dir)
    os.makedirs(out, exist_ok=True)

    source = os.path.join(out, "source")
    if not os.path.isfile(os.path.join(source, "transformer", "config.json")):
        pretrain(source, args)
    converted = {b: converted_folder(out, b, args.init) for b in (1, args.num_blocks)}
    for num_blocks, folder in converted.items():
        if not os.path.isfile(os.path.join(folder, "diffusion_blocks.json")):
            convert_pretrained_transformer(source, folder, num_blocks, overlap=0.05, init=args.init)

    B, S = args.num_blocks, args.finetune_steps
    runs = {  # name → (converted folder, steps per block, extra flags)
        f"(b) blockwise data, {S // B}/block (equal total)": (converted[B], S // B, ()),
        f"(b) blockwise data, {S}/block (equal per block)": (converted[B], S, ()),
        f"(c) blockwise distill, {S // B}/block (equal total)": (converted[B], S // B, ("--objective", "distill")),
        f"(c) blockwise distill, {S}/block (equal per block)": (converted[B], S, ("--objective", "distill")),
        f"(d) end to end data, {S} steps": (converted[1], S, ()),
    }
    models = {"source (pretrained)": DiTTransformer2DModel.from_pretrained(os.path.join(source, "transformer")).eval(),
              "(a) converted, no fine-tuning": RoutedDiTTransformer2DModel.from_pretrained(converted[B])}
    for name, (folder, steps, extra) in runs.items():
        # a finished run (its model card is written last) is reused by a later call with the same settings
        kind = "e2e" if folder == converted[1] else ("distill" if extra else "data")
        run_dir = os.path.join(out, f"run_{kind}_b{B if kind != 'e2e' else 1}_{steps}steps_lr{args.finetune_lr:g}")
        if not os.path.isfile(os.path.join(run_dir, "README.md")):
            started = time.perf_counter()
            finetune(folder, run_dir, steps, args, *extra)
            print(json.dumps({"finetuned": name, "seconds": time.perf_counter() - started}), flush=True)
        models[name] = RoutedDiTTransformer2DModel.from_pretrained(run_dir)

    metric, train_set, test_set = digits_distance()
    labels = torch.arange(10).repeat(50)  # 500 samples, 50 per class
    results = {"reference_real_train_vs_test": metric.compute(test_set.images, train_set.images[:500])}
    for index, (name, model) in enumerate(models.items()):
        images = sample(model, labels, args)
        results[name] = metric.compute(test_set.images, images)
        grid = f"samples_S{S}_lr{args.finetune_lr:g}_{index}.png"
        save_image_grid(images[:100], os.path.join(out, grid), nrow=10)  # one column per class
        print(json.dumps({"model": name, "frechet_classifier_distance": results[name], "grid": grid}), flush=True)
    results["classifier_accuracy"] = metric.classifier.held_out_accuracy
    with open(os.path.join(out, f"results_S{S}_lr{args.finetune_lr:g}.json"), "w") as file:
        json.dump(results, file, indent=2)
    print(f"\nFréchet classifier distance to the test digits (lower is better), B={B}, S={S}:")
    for name, value in results.items():
        print(f"  {value:8.3f}  {name}")
    return results


if __name__ == "__main__":
    main()
