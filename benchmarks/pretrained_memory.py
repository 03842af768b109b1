#!/usr/bin/env python
"""A converted pretrained DiT: peak fine-tuning memory of one block vs all layers, and routed sampling speed.

Builds a random `DiTTransformer2DModel` at the given width and depth (layer-dominated: the stems
are <1% of the weights), saves it as a diffusers pipeline folder, converts it with B = 1 (the full
model as one block: full fine-tuning) and each B asked, then:

memory — for full fine-tuning and block 0 of every B, full and LoRA, each in a fresh subprocess:
  build `BlockFinetuningModel` (stems + block 0 only, read from the block files), AdamW on its
  trainable parameters, `--steps` training steps. Two figures:
  - accounted: bytes of the resident parameters + gradients + optimizer state (exact tensor sizes);
  - measured: peak RSS growth over the RSS just before the model is loaded (VmHWM reset through
    /proc/self/clear_refs), so it includes activations and allocator slack.
speed — `DiTPipeline` with the source transformer and with the routed one (all blocks loaded), same
  seed, CFG on: seconds spent inside the transformer per sampling step (forward hooks), the median
  and the minimum over all steps of `--repeats` rounds that go round-robin over the models (on a
  shared machine the minimum is the least disturbed); routed B=1 (all layers
  through the routing code) against the source is the routing overhead.

    python benchmarks/pretrained_memory.py --hidden_size 768 --num_heads 12 --num_layers 12 --num_blocks 2 3 4
Prints one JSON line per measurement, then the ratio table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from memory import current_rss_bytes, peak_rss_bytes, reset_peak_rss  # noqa: E402


def build_source(folder: str, args: argparse.Namespace) -> None:
    """A random DiT pipeline folder (transformer + DDIM scheduler) with the asked size."""
    from diffusers import DDIMScheduler, DiTTransformer2DModel

    torch.manual_seed(0)
    transformer = DiTTransformer2DModel(
        num_attention_heads=args.num_heads, attention_head_dim=args.hidden_size // args.num_heads, in_channels=4,
        out_channels=8, num_layers=args.num_layers, sample_size=args.sample_size, patch_size=2, num_embeds_ada_norm=1000,
    )
    with torch.no_grad():  # diffusers zero-initialises the AdaLN-Zero gates; give every layer an effect
        for parameter in transformer.parameters():
            parameter.normal_(0, 0.02)
    transformer.save_pretrained(os.path.join(folder, "transformer"))
    DDIMScheduler().save_pretrained(os.path.join(folder, "scheduler"))
    with open(os.path.join(folder, "model_index.json"), "w") as file:
        json.dump({"_class_name": "DiTPipeline"}, file)


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def measure(converted_dir: str, lora: bool, batch_size: int, sample_size: int, steps: int) -> dict:
    """One measurement, inside a fresh subprocess."""
    from hf_diffusionblocks.pretrained.finetuning import BlockFinetuningModel, NativeObjective, finetuning_loss
    from hf_diffusionblocks.pretrained.lora import LoraSettings

    torch.set_num_threads(1)
    baseline = current_rss_bytes()
    reset_peak_rss()
    model = BlockFinetuningModel(converted_dir, 0, lora=LoraSettings(rank=16, alpha=16.0) if lora else None)
    model.train()
    trainable = list(model.block_parameters(0))
    optimizer = torch.optim.AdamW(trainable, lr=1e-5)
    objective = NativeObjective(model.manifest)
    generator = torch.Generator().manual_seed(0)
    clean = torch.randn(batch_size, 4, sample_size, sample_size, generator=generator)
    labels = torch.randint(0, 1000, (batch_size,), generator=generator)
    started = time.perf_counter()
    for _ in range(steps):
        loss = finetuning_loss(model, 0, clean, {"class_labels": labels}, objective, generator)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)  # keep the gradients resident: the peak of a real step
    seconds = (time.perf_counter() - started) / steps
    peak = peak_rss_bytes() - baseline
    state = [value for per_parameter in optimizer.state.values() for value in per_parameter.values() if torch.is_tensor(value)]
    return {
        "num_blocks": model.manifest.num_blocks,
        "lora": lora,
        "layers_loaded": sum(len(block) for block in model.routed.blocks.values()),
        "resident_parameter_bytes": tensor_bytes(model.parameters()),
        "trainable_parameters": sum(p.numel() for p in trainable),
        "gradient_bytes": tensor_bytes(p.grad for p in trainable if p.grad is not None),
        "optimizer_state_bytes": tensor_bytes(state),
        "accounted_bytes": tensor_bytes(model.parameters()) + tensor_bytes(p.grad for p in trainable if p.grad is not None) + tensor_bytes(state),
        "peak_rss_growth_bytes": peak,
        "seconds_per_step": seconds,
    }


def time_sampling(pipeline_dir: str, converted: dict[int, str], steps: int, repeats: int) -> dict[int, float]:
    """Seconds inside the transformer per DiTPipeline step: key 0 = the source model, B = routed with B blocks."""
    from diffusers import AutoencoderKL, DDIMScheduler, DiTPipeline, DiTTransformer2DModel

    from hf_diffusionblocks.pretrained.modeling_routed import RoutedDiTTransformer2DModel

    torch.set_num_threads(1)
    vae = AutoencoderKL(block_out_channels=(8,), down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",),
                        latent_channels=4, norm_num_groups=8)
    scheduler = DDIMScheduler.from_pretrained(os.path.join(pipeline_dir, "scheduler"))
    transformers = {0: DiTTransformer2DModel.from_pretrained(os.path.join(pipeline_dir, "transformer")).eval()}
    transformers.update({b: RoutedDiTTransformer2DModel.from_pretrained(path) for b, path in converted.items()})
    pipelines, calls = {}, {key: [] for key in transformers}
    clock = {"start": 0.0}
    for key, transformer in transformers.items():
        pipelines[key] = DiTPipeline(transformer=transformer, vae=vae, scheduler=scheduler)
        pipelines[key].set_progress_bar_config(disable=True)
        transformer.register_forward_pre_hook(lambda *_: clock.__setitem__("start", time.perf_counter()))
        transformer.register_forward_hook(lambda *_, key=key: calls[key].append(time.perf_counter() - clock["start"]))
    # Round-robin over the models, so a slow patch of a shared machine hits all of them alike; the
    # median over every call (one per step) of every round ignores the calls a burst of load slowed.
    for repeat in range(repeats + 1):
        for key, pipeline in pipelines.items():
            if repeat == 1:
                calls[key].clear()  # the first round warms up
            pipeline(class_labels=[1], guidance_scale=4.0, num_inference_steps=steps, generator=torch.Generator().manual_seed(0), output_type="np")
    results = {key: (statistics.median(values), min(values)) for key, values in calls.items()}
    for key, value in results.items():
        print(json.dumps({"sampling": "source" if key == 0 else f"routed B={key}", "median_seconds_per_step": value[0],
                          "min_seconds_per_step": value[1]}), flush=True)
    return results


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """The random DiT's size (`build_source`), the conversions' B and the batch: shared with pretrained_baselines.py."""
    parser.add_argument("--hidden_size", type=int, default=768)
    parser.add_argument("--num_heads", type=int, default=12)
    parser.add_argument("--num_layers", type=int, default=12)
    parser.add_argument("--sample_size", type=int, default=16, help="latent side (tokens = (side / 2)^2)")
    parser.add_argument("--num_blocks", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--batch_size", type=int, default=2)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_source_arguments(parser)
    parser.add_argument("--steps", type=int, default=2, help="training steps per memory measurement")
    parser.add_argument("--sampling_steps", type=int, default=12, help="DiTPipeline steps per timing run (a multiple of every B)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip_speed", action="store_true")
    parser.add_argument("--skip_memory", action="store_true")
    parser.add_argument("--_measure", nargs=2, metavar=("CONVERTED_DIR", "LORA"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._measure:
        result = measure(args._measure[0], args._measure[1] == "lora", args.batch_size, args.sample_size, args.steps)
        print("RESULT " + json.dumps(result))
        return result

    from hf_diffusionblocks.pretrained.conversion import convert_pretrained_transformer

    with tempfile.TemporaryDirectory() as workspace:
        source = os.path.join(workspace, "source")
        build_source(source, args)
        converted = {}
        for num_blocks in [1, *args.num_blocks]:
            converted[num_blocks] = os.path.join(workspace, f"b{num_blocks}")
            convert_pretrained_transformer(source, converted[num_blocks], num_blocks)
        memory = {}
        for lora in () if args.skip_memory else (False, True):
            for num_blocks in [1, *args.num_blocks]:
                command = [sys.executable, os.path.abspath(__file__), "--_measure", converted[num_blocks], "lora" if lora else "full",
                           "--batch_size", str(args.batch_size), "--sample_size", str(args.sample_size), "--steps", str(args.steps)]
                output = subprocess.run(command, capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout
                result = json.loads(next(line for line in output.splitlines() if line.startswith("RESULT "))[len("RESULT "):])
                memory[(num_blocks, lora)] = result
                print(json.dumps(result), flush=True)
        # routed B=1 runs all layers through the routing code: its ratio to the source is the routing overhead
        speed = {} if args.skip_speed else time_sampling(source, {b: converted[b] for b in [1, *args.num_blocks]}, args.sampling_steps, args.repeats)

    print(f"\nDiT hidden={args.hidden_size} layers={args.num_layers} tokens={(args.sample_size // 2) ** 2} batch={args.batch_size}")
    print(f"{'mode':>5} {'B':>3} {'accounted MiB':>14} {'ratio':>6} {'peak RSS MiB':>13} {'ratio':>6}")
    summary = {"memory": {}, "speed": {}}
    for lora in () if args.skip_memory else (False, True):
        full = memory[(1, lora)]
        for num_blocks in [1, *args.num_blocks]:
            row = memory[(num_blocks, lora)]
            accounted_ratio = full["accounted_bytes"] / row["accounted_bytes"]
            rss_ratio = full["peak_rss_growth_bytes"] / row["peak_rss_growth_bytes"]
            mode = "lora" if lora else "full"
            summary["memory"][f"{mode}_B{num_blocks}"] = {"accounted_ratio": accounted_ratio, "rss_ratio": rss_ratio}
            print(f"{mode:>5} {num_blocks:>3} {row['accounted_bytes'] / 2**20:>14.1f} {accounted_ratio:>6.2f} "
                  f"{row['peak_rss_growth_bytes'] / 2**20:>13.1f} {rss_ratio:>6.2f}")
    for num_blocks in [1, *args.num_blocks] if speed else []:
        (median, fastest), (source_median, source_fastest) = speed[num_blocks], speed[0]
        summary["speed"][f"B{num_blocks}"] = {"median_ratio": source_median / median, "min_ratio": source_fastest / fastest}
        print(f"sampling: routed B={num_blocks} {median * 1e3:.1f} ms/step (min {fastest * 1e3:.1f}) vs source "
              f"{source_median * 1e3:.1f} (min {source_fastest * 1e3:.1f}): {source_median / median:.2f}x median, "
              f"{source_fastest / fastest:.2f}x min")
    return summary


if __name__ == "__main__":
    main()
