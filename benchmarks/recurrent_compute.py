#!/usr/bin/env python
"""Training compute per token of the recurrent-depth LM: DiffusionBlocks (one forward pass at a sampled σ)
vs truncated BPTT over a random number of iterations (Huginn's recipe), same model, same run.

Both train `DiffusionBlocksRecurrentForCausalLM` with AdamW on the same batches; BPTT draws its depths
r from Huginn's distribution (`sample_num_iterations`, mean `--mean_recurrence` + 1) with a fixed seed,
so every round times the same depths. Reported: seconds per training token (min over rounds of the mean
over `--steps` steps) and the ratio BPTT / DiffusionBlocks. The paper's schedule (DiffusionBlocks
trains 3× the epochs) turns the per-token ratio r into a per-run ratio r / 3.

    python benchmarks/recurrent_compute.py --mean_recurrence 32 --bptt_steps 8
Last line: `compute_ratio_bptt_over_diffusionblocks=<x> mean_recurrence=<r> bptt_steps=<k>`.
"""

from __future__ import annotations

import argparse
import time

import torch

from hf_diffusionblocks import DiffusionBlocksRecurrentConfig, DiffusionBlocksRecurrentForCausalLM
from hf_diffusionblocks.models.recurrent import RecurrentDenoisingLoss, TruncatedBPTTLoss


def build_model(args: argparse.Namespace, device: torch.device) -> DiffusionBlocksRecurrentForCausalLM:
    config = DiffusionBlocksRecurrentConfig(
        vocab_size=args.vocab_size, hidden_size=args.hidden_size, num_hidden_layers=args.num_hidden_layers,
        num_prelude_layers=args.num_prelude_layers, num_coda_layers=args.num_coda_layers,
        num_attention_heads=args.num_attention_heads, intermediate_size=4 * args.hidden_size,
        max_position_embeddings=args.sequence_length,
    )
    torch.manual_seed(0)
    return DiffusionBlocksRecurrentForCausalLM(config).to(device).train()


def seconds_per_step(model, loss_function, batch: torch.Tensor, warmup: int, steps: int, seed: int) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(seed)

    def step() -> None:
        loss_function(model, 0, batch, generator).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    generator.manual_seed(seed)  # the timed steps draw the same σ / depths in every round
    if batch.device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if batch.device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab_size", type=int, default=86, help="86: the Shakespeare characters + [UNK] + [MASK].")
    parser.add_argument("--hidden_size", type=int, default=128)
    parser.add_argument("--num_hidden_layers", type=int, default=2, help="Core layers.")
    parser.add_argument("--num_prelude_layers", type=int, default=1)
    parser.add_argument("--num_coda_layers", type=int, default=1)
    parser.add_argument("--num_attention_heads", type=int, default=4)
    parser.add_argument("--sequence_length", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--mean_recurrence", type=float, default=8.0, help="BPTT mean depth r̄ (Huginn: 32).")
    parser.add_argument("--bptt_steps", type=int, default=4, help="BPTT differentiated iterations k (Huginn: 8).")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2, help="Alternate the two measurements this many times.")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    model = build_model(args, device)
    batch = torch.randint(0, args.vocab_size, (args.batch_size, args.sequence_length + 1),
                          generator=torch.Generator().manual_seed(0)).to(device)
    diffusion = RecurrentDenoisingLoss(model.config.noise_partition)
    bptt = TruncatedBPTTLoss(args.mean_recurrence, args.bptt_steps)
    tokens = args.batch_size * args.sequence_length
    diffusion_times, bptt_times = [], []
    for _ in range(args.rounds):  # interleave so drift in machine load hits both alike
        diffusion_times.append(seconds_per_step(model, diffusion, batch, args.warmup, args.steps, seed=1))
        bptt_times.append(seconds_per_step(model, bptt, batch, args.warmup, args.steps, seed=1))
    diffusion_seconds, bptt_seconds = min(diffusion_times) / tokens, min(bptt_times) / tokens
    ratio = bptt_seconds / diffusion_seconds
    print(f"device={args.device} hidden={args.hidden_size} core_layers={args.num_hidden_layers} "
          f"batch={args.batch_size}x{args.sequence_length} steps={args.steps} (min of {args.rounds} rounds)")
    print(f"DiffusionBlocks (1 pass at a sampled sigma):        {diffusion_seconds * 1e6:10.2f} us/token")
    print(f"truncated BPTT (r ~ {args.mean_recurrence:g}+1, last {args.bptt_steps} differentiated): {bptt_seconds * 1e6:10.2f} us/token")
    print(f"compute_ratio_bptt_over_diffusionblocks={ratio:.2f} mean_recurrence={args.mean_recurrence:g} bptt_steps={args.bptt_steps}")


if __name__ == "__main__":
    main()
