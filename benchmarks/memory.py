#!/usr/bin/env python
"""Peak training memory of one block (block-wise) vs the whole model (end to end), same run.

For every B it measures, each in a fresh subprocess so peaks do not mix:
  - block-wise: a model with only block 0 of B built, AdamW on its parameters, `--steps` steps;
  - end to end: the same layers as one block (num_blocks=1), same batch;
  - end to end with activation checkpointing (`activation_checkpointing_enable()`).
CPU: peak RSS growth over the process's RSS just before the model is built (VmHWM reset through
/proc/self/clear_refs). GPU: `torch.cuda.max_memory_allocated` growth.

    python benchmarks/memory.py --family dit --num_blocks 2 3 4
The last line is `memory_ratio_e2e_over_blockwise=<x> num_blocks=<B>` for the largest B.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from families import FAMILIES  # noqa: E402


def current_rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def peak_rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def measure(family_name: str, size: str, num_blocks: int, mode: str, batch_size: int, steps: int, device: str) -> dict:
    """One measurement, run inside the subprocess."""
    family = FAMILIES[family_name]
    device = torch.device(device)
    torch.manual_seed(0)
    config = family.build_config(1 if mode.startswith("end_to_end") else num_blocks, size)
    batch = family.make_batch(config, batch_size, device)
    generator = torch.Generator().manual_seed(0)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
    else:
        reset_peak_rss()
        baseline = current_rss_bytes()
    model = family.model_class(config, block_indices=[0]).to(device).train()
    if mode == "end_to_end_checkpointing":
        model.activation_checkpointing_enable()
    optimizer = torch.optim.AdamW(model.block_parameters(0), lr=1e-4)
    for _ in range(steps):
        loss = family.block_loss(model, 0, batch, generator)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - baseline
    else:
        peak = peak_rss_bytes() - baseline
    parameters = sum(p.numel() for p in model.parameters())
    return {"mode": mode, "num_blocks": num_blocks, "peak_bytes": peak, "parameters": parameters}


def run_in_subprocess(args: argparse.Namespace, num_blocks: int, mode: str) -> dict:
    command = [
        sys.executable, os.path.abspath(__file__), "--measure", mode, "--family", args.family, "--size", args.size,
        "--num_blocks", str(num_blocks), "--batch_size", str(args.batch_size), "--steps", str(args.steps),
        "--device", args.device,
    ]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=sorted(FAMILIES), default="dit")
    parser.add_argument("--size", default=None, help="Model size of the family (dit: XS, S, B, L).")
    parser.add_argument("--num_blocks", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--batch_size", type=int, default=None)
    parser.add_argument("--steps", type=int, default=2, help="Training steps (the 2nd has optimizer state).")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--measure", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    family = FAMILIES[args.family]
    args.size = args.size or family.default_size
    args.batch_size = args.batch_size or family.default_batch_size

    if args.measure:
        print(json.dumps(measure(args.family, args.size, args.num_blocks[0], args.measure, args.batch_size, args.steps, args.device)))
        return

    end_to_end = run_in_subprocess(args, 1, "end_to_end")
    checkpointed = run_in_subprocess(args, 1, "end_to_end_checkpointing")
    unit = 2**20
    print(f"family={args.family} size={args.size} batch={args.batch_size} device={args.device} steps={args.steps}")
    print(f"{'setting':<36}{'params':>12}{'peak MiB':>12}{'e2e / this':>12}")
    print(f"{'end to end':<36}{end_to_end['parameters']:>12,}{end_to_end['peak_bytes'] / unit:>12.1f}{1.0:>12.2f}")
    print(f"{'end to end + activation ckpt':<36}{checkpointed['parameters']:>12,}"
          f"{checkpointed['peak_bytes'] / unit:>12.1f}{end_to_end['peak_bytes'] / checkpointed['peak_bytes']:>12.2f}")
    ratio = None
    for num_blocks in args.num_blocks:
        blockwise = run_in_subprocess(args, num_blocks, "blockwise")
        ratio = end_to_end["peak_bytes"] / blockwise["peak_bytes"]
        print(f"{f'block-wise, one block of B={num_blocks}':<36}{blockwise['parameters']:>12,}"
              f"{blockwise['peak_bytes'] / unit:>12.1f}{ratio:>12.2f}")
    print(f"memory_ratio_e2e_over_blockwise={ratio:.2f} num_blocks={args.num_blocks[-1]}")


if __name__ == "__main__":
    main()
