#!/usr/bin/env python
"""Block-wise fine-tuning of a converted pretrained DiT against the baselines practitioners use, in one run.

Memory (a random `DiTTransformer2DModel` of the asked size, as `pretrained_memory.py` builds it; every
row in a fresh subprocess, `--steps` training steps at batch `--batch_size`):
  end to end, diffusers' own `DiTTransformer2DModel`, every parameter trainable (stems too):
    - full: AdamW;
    - full + gradient checkpointing (`enable_gradient_checkpointing()`);
    - LoRA (peft through `add_adapter`, rank `--lora_rank`, the library's target modules), with and
      without gradient checkpointing;
    - full with an 8-bit AdamW: bitsandbytes' `AdamW8bit` and torchao's `AdamW8bit`, each if it imports
      and steps on this machine (otherwise the row says why);
    - group offloading (`enable_group_offload`, block level, one layer per group), with onload and
      offload device both the CPU: it cannot save anything here, so its measured figures are a
      same-device control; its `offload_onloaded_weight_bytes` is what a forward would keep on the
      accelerator at once (the largest group + the never-offloaded top-level modules).
  block-wise, block 0 of a B-block conversion (`BlockFinetuningModel`: stems frozen, block 0 only),
    for every B of `--num_blocks`: full and LoRA, each with and without gradient checkpointing.
  Figures per row: accounted = resident parameters + gradients + optimizer state (exact tensor bytes; an
  8-bit optimizer's state counted by its real storage: bitsandbytes' uint8 moments and float32 block
  scales, torchao's quantised codes and scales); measured = peak RSS growth over the RSS just before
  the model is loaded (VmHWM reset through /proc/self/clear_refs); seconds per step (the mean of the
  steps after the first, which also allocates the optimizer state); and the ratio to end-to-end full.

Quality (`--quality_steps` S; skipped with `--skip_quality`): the small digits DiT of `pretrained_quality.py`
(pretrained there, or reused from `--quality_dir`) fine-tuned by each method for S steps (block-wise: S
steps per block, every block, the paper's equal-per-block protocol; and S/B per block, equal total
steps), one seed; Fréchet classifier distance of `DiTPipeline` samples as in `pretrained_quality.py`.
One learning rate per method family: `--full_lr` for full fine-tuning (AdamW and 8-bit AdamW),
`--lora_lr` for LoRA.

    python benchmarks/pretrained_baselines.py --hidden_size 768 --num_heads 12 --num_layers 12 --sample_size 16 \\
        --batch_size 2 --num_blocks 2 3 4 --quality_steps 300
Prints one JSON line per measurement, then the tables; writes them as JSON to `--quality_dir`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from types import SimpleNamespace

import torch

BENCHMARKS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCHMARKS)
from memory import current_rss_bytes, peak_rss_bytes, reset_peak_rss  # noqa: E402

END_TO_END_ROWS = ("e2e:full", "e2e:full:gc", "e2e:lora", "e2e:lora:gc", "e2e:full:bnb8", "e2e:full:torchao8", "e2e:full:offload")
OPTIMIZERS_8BIT = {"bnb8": "bitsandbytes AdamW8bit", "torchao8": "torchao AdamW8bit"}


def block_rows(num_blocks: list[int]) -> list[str]:
    return [f"b{b}:{mode}{gc}" for b in num_blocks for mode in ("full", "lora") for gc in ("", ":gc")]


def describe(row: str) -> str:
    kind, mode, *options = row.split(":")
    name = ("end to end" if kind == "e2e" else f"block 0 of B={kind[1:]}") + (", full" if mode == "full" else ", LoRA")
    for option in options:
        named = {"gc": " + grad. checkpointing", "offload": " + group offload (CPU→CPU)"}
        name += named.get(option, f" + {OPTIMIZERS_8BIT.get(option, option)}")
    return name


def state_bytes(value) -> int:
    """Bytes a tensor really stores: a tensor subclass (torchao's quantised optimizer state) by its inner tensors."""
    if hasattr(value, "__tensor_flatten__") and type(value) is not torch.Tensor and not isinstance(value, torch.nn.Parameter):
        names, _ = value.__tensor_flatten__()
        return sum(state_bytes(getattr(value, name)) for name in names)
    return value.numel() * value.element_size()


def make_optimizer(options: list[str], parameters: list[torch.nn.Parameter], lr: float):
    """AdamW, or an 8-bit AdamW from an optional package (imported here only: not a dependency of the library)."""
    if "bnb8" in options:
        import bitsandbytes

        return bitsandbytes.optim.AdamW8bit(parameters, lr=lr, weight_decay=0.0)
    if "torchao8" in options:
        from torchao.optim import AdamW8bit

        return AdamW8bit(parameters, lr=lr, weight_decay=0.0)
    return torch.optim.AdamW(parameters, lr=lr, weight_decay=0.0)


def end_to_end_model(source: str, mode: str, options: list[str], lora_rank: int):
    """diffusers' `DiTTransformer2DModel` as a practitioner fine-tunes it; returns (model, trainable parameters)."""
    from diffusers import DiTTransformer2DModel

    from hf_diffusionblocks.pretrained.lora import LoraSettings

    model = DiTTransformer2DModel.from_pretrained(os.path.join(source, "transformer"))
    if mode == "lora":  # DiTTransformer2DModel has no diffusers `add_adapter`: peft's own injection
        from peft import inject_adapter_in_model

        model.requires_grad_(False)
        inject_adapter_in_model(LoraSettings(rank=lora_rank, alpha=float(lora_rank)).peft_config(), model)
        for name, parameter in model.named_parameters():
            parameter.requires_grad_("lora_" in name)
    if "gc" in options:
        model.enable_gradient_checkpointing()
    if "offload" in options:  # raises if the class does not support it (DiTTransformer2DModel does not, in diffusers 0.42)
        model.enable_group_offload(onload_device=torch.device("cpu"), offload_device=torch.device("cpu"),
                                   offload_type="block_level", num_blocks_per_group=1)
    return model, [p for p in model.parameters() if p.requires_grad]


def end_to_end_loss(model, scheduler, clean: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """diffusers' DiT objective (DDPM ε, uniform timesteps), as `pretrained_quality.pretrain` trains it."""
    from hf_diffusionblocks.pretrained.finetuning import prediction_channels

    t = torch.randint(0, scheduler.config.num_train_timesteps, (clean.shape[0],), generator=generator)
    noise = torch.randn(clean.shape, generator=generator)
    output = model(scheduler.add_noise(clean, noise, t), timestep=t, class_labels=labels).sample
    return torch.nn.functional.mse_loss(prediction_channels(model, output), noise)


def onloaded_weight_bytes(model) -> int:
    """What block-level group offloading (one layer per group) keeps on the onload device during a forward:
    the largest layer group plus the parameters outside `transformer_blocks` (diffusers onloads those for the
    whole forward). Without `use_stream`; prefetching with streams keeps one more group."""
    layers = model.transformer_blocks
    largest = max(sum(p.numel() * p.element_size() for p in layer.parameters()) for layer in layers)
    in_layers = {id(p) for p in layers.parameters()}
    return largest + sum(p.numel() * p.element_size() for p in model.parameters() if id(p) not in in_layers)


def measure(row: str, workspace: str, args: argparse.Namespace) -> dict:
    """One memory row, inside a fresh subprocess."""
    import peft  # noqa: F401  (every import before the baseline: code is not training memory)
    from diffusers import DDPMScheduler, DiTTransformer2DModel  # noqa: F401

    from hf_diffusionblocks.pretrained.finetuning import BlockFinetuningModel, NativeObjective, finetuning_loss
    from hf_diffusionblocks.pretrained.lora import LoraSettings

    torch.set_num_threads(1)
    kind, mode, *options = row.split(":")
    if "bnb8" in options:
        import bitsandbytes  # noqa: F401
    if "torchao8" in options:
        import torchao.optim  # noqa: F401
    source = os.path.join(workspace, "source")
    baseline = current_rss_bytes()
    reset_peak_rss()
    generator = torch.Generator().manual_seed(0)
    clean = torch.randn(args.batch_size, 4, args.sample_size, args.sample_size, generator=generator)
    labels = torch.randint(0, 1000, (args.batch_size,), generator=generator)
    if kind == "e2e":
        try:
            model, trainable = end_to_end_model(source, mode, options, args.lora_rank)
        except ValueError as error:  # group offloading refused: say so, with what it would keep onloaded, counted from the model
            if "offload" not in options:
                raise
            return {"row": row, "method": describe(row), "error": f"enable_group_offload refused: {error}".split(". Please")[0],
                    "offload_onloaded_weight_bytes": onloaded_weight_bytes(end_to_end_model(source, mode, [], 0)[0])}
        scheduler = DDPMScheduler.from_pretrained(os.path.join(source, "scheduler"))

        def loss_of_step():
            return end_to_end_loss(model, scheduler, clean, labels, generator)
    else:
        lora = LoraSettings(rank=args.lora_rank, alpha=float(args.lora_rank)) if mode == "lora" else None
        model = BlockFinetuningModel(os.path.join(workspace, kind), 0, lora=lora, gradient_checkpointing="gc" in options)
        trainable = list(model.block_parameters(0))
        objective = NativeObjective(model.manifest)

        def loss_of_step():
            return finetuning_loss(model, 0, clean, {"class_labels": labels}, objective, generator)
    model.train()
    optimizer = make_optimizer(options, trainable, 1e-5)
    times = []
    for _ in range(args.steps):
        started = time.perf_counter()
        loss_of_step().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)  # keep the gradients resident: the peak of a real step
        times.append(time.perf_counter() - started)
    peak = peak_rss_bytes() - baseline
    parameters = {id(p): p for p in model.parameters()}.values()
    gradients = [p.grad for p in trainable if p.grad is not None]
    state = [value for per_parameter in optimizer.state.values() for value in per_parameter.values() if torch.is_tensor(value)]
    result = {
        "row": row,
        "method": describe(row),
        "parameters": sum(p.numel() for p in parameters),
        "trainable_parameters": sum(p.numel() for p in trainable),
        "trainable_with_gradient": len(gradients) == len(trainable),
        "layers_loaded": len(model.transformer_blocks) if kind == "e2e" else sum(len(b) for b in model.routed.blocks.values()),
        "resident_parameter_bytes": sum(state_bytes(p) for p in parameters),
        "gradient_bytes": sum(state_bytes(g) for g in gradients),
        "optimizer_state_bytes": sum(state_bytes(value) for value in state),
        "peak_rss_growth_bytes": peak,
        "seconds_per_step": sum(times[1:]) / len(times[1:]) if len(times) > 1 else times[0],
        "final_loss": float(loss_of_step().detach()),
    }
    result["accounted_bytes"] = result["resident_parameter_bytes"] + result["gradient_bytes"] + result["optimizer_state_bytes"]
    if "offload" in options:
        result["offload_onloaded_weight_bytes"] = onloaded_weight_bytes(model)
    return result


def run_memory(args: argparse.Namespace) -> dict[str, dict]:
    """Every memory row, each in its own subprocess; an optional package that is missing or fails gives an error row."""
    pretrained_memory = importlib.import_module("pretrained_memory")
    from hf_diffusionblocks.pretrained.conversion import convert_pretrained_transformer

    results = {}
    with tempfile.TemporaryDirectory() as workspace:
        pretrained_memory.build_source(os.path.join(workspace, "source"), args)
        for num_blocks in args.num_blocks:
            convert_pretrained_transformer(os.path.join(workspace, "source"), os.path.join(workspace, f"b{num_blocks}"), num_blocks)
        for row in [row for row in [*END_TO_END_ROWS, *block_rows(args.num_blocks)] if args.rows is None or row in args.rows]:
            command = [sys.executable, os.path.abspath(__file__), "--_measure", row, workspace, "--batch_size", str(args.batch_size),
                       "--sample_size", str(args.sample_size), "--steps", str(args.steps), "--lora_rank", str(args.lora_rank)]
            # only the 8-bit rows see the optional packages (peft imports them when it finds them)
            extra = args.extra_packages if row.split(":")[-1] in OPTIMIZERS_8BIT else None
            pythonpath = os.pathsep.join(filter(None, [extra, os.environ.get("PYTHONPATH")]))
            env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": pythonpath}
            done = subprocess.run(command, capture_output=True, text=True, env=env)
            lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
            if done.returncode == 0 and lines:
                results[row] = json.loads(lines[-1][len("RESULT "):])
            else:  # an optional 8-bit optimizer that does not import or step here: say why, do not stop the run
                error = [line for line in done.stderr.strip().splitlines() if line.strip()]
                results[row] = {"row": row, "method": describe(row), "error": error[-1] if error else f"exit status {done.returncode}"}
                if row.split(":")[-1] not in OPTIMIZERS_8BIT:
                    raise RuntimeError(f"memory row {row} failed:\n{done.stderr[-3000:]}")
            print(json.dumps(results[row]), flush=True)
    return results


def memory_table(results: dict[str, dict], args: argparse.Namespace) -> list[str]:
    reference = results["e2e:full"]
    lines = [f"DiT hidden={args.hidden_size} layers={args.num_layers} tokens={(args.sample_size // 2) ** 2} batch={args.batch_size} "
             f"steps={args.steps}; ratios: end-to-end full / row (memory), row / end-to-end full (time)",
             "| method | trainable params | accounted MiB | ratio | optimizer state MiB | peak RSS MiB | ratio | s/step | time ratio |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for result in results.values():
        if "error" in result:
            lines.append(f"| {result['method']} | not measured: {result['error'][:200]} | | | | | | | |")
        else:
            accounted, rss = result["accounted_bytes"], result["peak_rss_growth_bytes"]
            lines.append(f"| {result['method']} | {result['trainable_parameters'] / 1e6:.2f} M | {accounted / 2**20:.1f} | "
                         f"{reference['accounted_bytes'] / accounted:.2f} | {result['optimizer_state_bytes'] / 2**20:.1f} | "
                         f"{rss / 2**20:.1f} | {reference['peak_rss_growth_bytes'] / rss:.2f} | {result['seconds_per_step']:.3f} | "
                         f"{result['seconds_per_step'] / reference['seconds_per_step']:.2f} |")
        if "offload_onloaded_weight_bytes" in result:
            onloaded = result["offload_onloaded_weight_bytes"]
            lines.append(f"| ↳ block-level group offload, counted: weights onloaded at once in a forward (largest layer + "
                         f"top-level modules; no gradients, no optimizer state) | | {onloaded / 2**20:.1f} | "
                         f"{reference['accounted_bytes'] / onloaded:.2f} | | | | | |")
    return lines


# ---- quality ------------------------------------------------------------------------------------------------------


def finetune_end_to_end(source: str, method: str, steps: int, lr: float, quality_args, lora_rank: int):
    """End-to-end fine-tuning of the source digits DiT (diffusers' class) for `steps` steps; returns the model."""
    from diffusers import DDPMScheduler

    from hf_diffusionblocks.data import load_image_dataset

    mode, *options = method.split(":")
    data = load_image_dataset("digits", "train")
    torch.manual_seed(quality_args.seed)  # peft draws the adapters' A from the global generator
    model, trainable = end_to_end_model(source, mode, options, lora_rank)
    scheduler = DDPMScheduler.from_pretrained(os.path.join(source, "scheduler"))
    optimizer = make_optimizer(options, trainable, lr)
    generator = torch.Generator().manual_seed(quality_args.seed)
    model.train()
    for _ in range(steps):  # as examples/finetune_pretrained.py: batch drawn at random, clip 1.0, constant LR
        indices = torch.randint(0, len(data.labels), (quality_args.batch_size,), generator=generator)
        loss = end_to_end_loss(model, scheduler, data.images[indices], data.labels[indices], generator)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()


def run_quality(args: argparse.Namespace) -> dict[str, dict]:
    from diffusers import DiTTransformer2DModel

    from hf_diffusionblocks.pretrained.conversion import convert_pretrained_transformer
    from hf_diffusionblocks.pretrained.modeling_routed import RoutedDiTTransformer2DModel

    quality = importlib.import_module("pretrained_quality")
    torch.set_num_threads(1)
    out = os.path.abspath(args.quality_dir)
    os.makedirs(out, exist_ok=True)
    qargs = SimpleNamespace(hidden_size=96, num_heads=4, num_layers=6, pretrain_steps=args.pretrain_steps, pretrain_lr=1e-3,
                            batch_size=64, sampling_steps=args.sampling_steps, seed=0, finetune_lr=args.full_lr)
    source = os.path.join(out, "source")
    if not os.path.isfile(os.path.join(source, "transformer", "config.json")):
        quality.pretrain(source, qargs)
    B, S = args.quality_num_blocks, args.quality_steps
    converted = quality.converted_folder(out, B, args.init)
    if not os.path.isfile(os.path.join(converted, "diffusion_blocks.json")):
        convert_pretrained_transformer(source, converted, B, overlap=0.05, init=args.init)

    methods = {"e2e:full": args.full_lr, "e2e:full:gc": args.full_lr, "e2e:lora": args.lora_lr, "e2e:lora:gc": args.lora_lr,
               "e2e:full:bnb8": args.full_lr}
    for mode in ("full", "lora"):
        for steps, gc in ((S, ""), (S, ":gc"), (S // B, "")):
            methods[f"b{B}:{mode}{gc}:{steps}"] = args.full_lr if mode == "full" else args.lora_lr
    pretrained = DiTTransformer2DModel.from_pretrained(os.path.join(source, "transformer")).eval()
    models = {"source (pretrained), no fine-tuning": (pretrained, {}),
              f"converted to B={B}, no fine-tuning": (RoutedDiTTransformer2DModel.from_pretrained(converted), {})}
    for method, lr in methods.items():
        started = time.perf_counter()
        kind, mode, *options = method.split(":")
        if kind == "e2e":
            try:
                model = finetune_end_to_end(source, ":".join([mode, *options]), S, lr, qargs, args.lora_rank)
            except ImportError as error:  # the optional 8-bit package is missing: say so
                print(json.dumps({"quality": method, "error": repr(error)}), flush=True)
                continue
            name, steps_note = describe(method), f"{S} steps"
        else:
            steps = int(options[-1])
            gc = options[:-1]
            run_dir = os.path.join(out, f"run_{mode}{'_gc' if gc else ''}_b{B}_{steps}steps_lr{lr:g}")
            lora_flags = ["--use_lora", "--lora_rank", str(args.lora_rank), "--lora_alpha", str(float(args.lora_rank))]
            extra = lora_flags if mode == "lora" else []
            extra += ["--gradient_checkpointing"] if gc else []
            if not os.path.isfile(os.path.join(run_dir, "README.md")):  # the model card is written last
                quality.finetune(converted, run_dir, steps, SimpleNamespace(**{**vars(qargs), "finetune_lr": lr}), *extra)
            lora_dir = os.path.join(run_dir, "lora") if mode == "lora" else None
            model = RoutedDiTTransformer2DModel.from_pretrained(run_dir, lora_dir=lora_dir)
            name = f"block-wise B={B}, {'full' if mode == 'full' else 'LoRA'}{' + grad. checkpointing' if gc else ''}"
            steps_note = f"{steps}/block ({'equal per block' if steps == S else 'equal total'})"
        models[name + f", {steps_note}"] = (model, {"lr": lr, "finetune_seconds": time.perf_counter() - started})

    metric, train_set, test_set = quality.digits_distance()
    labels = torch.arange(10).repeat(50)  # 500 samples, 50 per class
    reference = metric.compute(test_set.images, train_set.images[:500])
    results = {"reference: real train digits vs test": {"frechet_classifier_distance": reference}}
    for name, (model, info) in models.items():
        results[name] = {**info, "frechet_classifier_distance": metric.compute(test_set.images, quality.sample(model, labels, qargs))}
        print(json.dumps({"quality": name, **results[name]}), flush=True)
    return results


def quality_table(results: dict[str, dict], args: argparse.Namespace) -> list[str]:
    lines = [f"Fréchet classifier distance to the test digits (lower is better), S = {args.quality_steps}, "
             f"B = {args.quality_num_blocks}, seed 0", "| method | LR | FCD | fine-tuning wall s |", "|---|---:|---:|---:|"]
    for name, result in results.items():
        lr = f"{result['lr']:g}" if "lr" in result else ""
        seconds = f"{result['finetune_seconds']:.0f}" if "finetune_seconds" in result else ""
        lines.append(f"| {name} | {lr} | {result['frechet_classifier_distance']:.3f} | {seconds} |")
    return lines


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    importlib.import_module("pretrained_memory").add_source_arguments(parser)
    parser.add_argument("--steps", type=int, default=3, help="training steps per memory row (the first is not timed)")
    parser.add_argument("--lora_rank", type=int, default=16, help="LoRA rank (alpha = rank)")
    parser.add_argument("--extra_packages", default=None,
                        help="a folder put on the rows' PYTHONPATH (where bitsandbytes / torchao were installed with pip --target)")
    parser.add_argument("--rows", nargs="+", default=None,
                        help="only these memory rows (e2e:full, e2e:full:gc, e2e:lora[:gc], e2e:full:bnb8, e2e:full:torchao8, "
                             "e2e:full:offload, b<B>:full[:gc], b<B>:lora[:gc]); e2e:full is the reference and always included")
    parser.add_argument("--skip_memory", action="store_true")
    parser.add_argument("--skip_quality", action="store_true")
    parser.add_argument("--quality_dir", default="outputs/pretrained_baselines")
    parser.add_argument("--pretrain_steps", type=int, default=3000)
    parser.add_argument("--quality_steps", type=int, default=300, help="S: fine-tuning steps of every method (block-wise: per block)")
    parser.add_argument("--quality_num_blocks", type=int, default=3)
    parser.add_argument("--init", choices=("contiguous", "strided"), default="contiguous",
                        help="`convert --init` of the block-wise quality rows (docs/results/pretrained.md's table: contiguous)")
    parser.add_argument("--full_lr", type=float, default=1e-3, help="learning rate of full fine-tuning (AdamW and 8-bit AdamW)")
    parser.add_argument("--lora_lr", type=float, default=3e-3, help="learning rate of LoRA fine-tuning")
    parser.add_argument("--sampling_steps", type=int, default=48)
    parser.add_argument("--_measure", nargs=2, metavar=("ROW", "WORKSPACE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._measure:
        result = measure(args._measure[0], args._measure[1], args)
        print("RESULT " + json.dumps(result))
        return result
    if args.rows is not None:
        args.rows = sorted(set(args.rows) | {"e2e:full"})
    if args.extra_packages:
        sys.path.insert(0, os.path.abspath(args.extra_packages))
        args.extra_packages = os.path.abspath(args.extra_packages)

    summary = {"arguments": {k: v for k, v in vars(args).items() if not k.startswith("_")}}
    if not args.skip_memory:
        summary["memory"] = run_memory(args)
    if not args.skip_quality:
        summary["quality"] = run_quality(args)
    if "memory" in summary:
        print("\n" + "\n".join(memory_table(summary["memory"], args)))
    if "quality" in summary:
        print("\n" + "\n".join(quality_table(summary["quality"], args)))
    os.makedirs(args.quality_dir, exist_ok=True)
    with open(os.path.join(args.quality_dir, "results.json"), "w") as file:
        json.dump(summary, file, indent=2)
    return summary


if __name__ == "__main__":
    main()
