#!/usr/bin/env python
"""Where a block-wise autoregressive LM loses next-token quality: teacher-forced accuracy and cross-entropy
of every block's readout and of the Euler chain generation runs, on held-out windows.

Every row scores the same targets: the tokens x_1 … x_{n−1} of `--num_windows` non-overlapping windows of
the split (n = the model's context), each predicted from the true tokens before it (teacher forcing).

- `end to end` (with `--end_to_end_dir`): the baseline's next-token readout.
- `block b, σ ~ training`: block b's readout from z_i = E[x_i] + σ_i·ε_i, σ_i drawn from block b's
  training distribution (p_noise on its overlap-extended interval): how well the block does its job.
- `step s fresh (block b, σ)`: the same at the σ of Euler step s of generation, z = E[x] + σ·ε.
- `step s chain (block b, σ)`: the readout at step s of the Euler chain generation runs, started at
  z = σ_max·ε: what generation actually gets. The last chain row is the readout whose argmax is the
  greedy token (its accuracy is the greedy next-token accuracy); its cross-entropy is that of the
  distribution `do_sample=True` draws from. Fresh vs chain at the same step shows what the chain's z
  (a posterior mean after the first step, not E[x] + σ·ε) costs.
- `final z, nearest E row`: the Euler chain's end point z(σ = 0) decoded to the nearest target embedding.

`--solver ancestral` runs the chain rows with ancestral steps (a token drawn from each readout, its
embedding re-noised to the next σ) instead of Euler steps on the posterior mean.

Accuracy is that of the argmax; CE in nats per token; p(target) the mean probability of the target, the
expected accuracy of a token drawn from the readout. Randomness (σ, ε) from `--seed`.

    python benchmarks/ar_diagnosis.py --blockwise_dir outputs/ar-blockwise --end_to_end_dir outputs/ar-e2e
"""

from __future__ import annotations

import argparse
import json
import math

import torch
import torch.nn.functional as F
from transformers import AutoTokenizer

from hf_diffusionblocks import DiffusionBlocksForCausalLM
from hf_diffusionblocks.data import load_text_corpus
from hf_diffusionblocks.models.causal_lm.sampling_causal_lm import sample_from_logits
from hf_diffusionblocks.schedulers.scheduling_diffusion_blocks import DiffusionBlocksScheduler
from hf_diffusionblocks.tokenization_bpe import encode_corpus


class Score:
    """Running next-token accuracy (argmax), cross-entropy and mean probability of the target over batches.

    The mean probability of the target is the expected accuracy of a token *drawn* from the readout
    (`do_sample=True`), the number to set against a chain whose randomness is its initial noise.
    """

    def __init__(self):
        self.correct, self.nats, self.probability, self.count = 0, 0.0, 0.0, 0

    def add(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """`(batch, m, vocab)` logits, `(batch, m)` targets."""
        nats = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none")
        self.correct += int((logits.argmax(-1) == targets).sum())
        self.nats += float(nats.sum())
        self.probability += float((-nats).exp().sum())
        self.count += targets.numel()

    def add_predictions(self, predictions: torch.Tensor, targets: torch.Tensor) -> None:
        self.correct += int((predictions == targets).sum())
        self.count += targets.numel()
        self.nats = self.probability = math.nan

    def as_dict(self) -> dict:
        return {"accuracy": self.correct / self.count, "cross_entropy": self.nats / self.count,
                "target_probability": self.probability / self.count, "tokens": self.count}


def held_out_windows(model_dir: str, dataset: str, split: str, length: int, num_windows: int) -> torch.Tensor:
    """The first `num_windows` non-overlapping windows `(num_windows, length)` of the split, in the folder's tokenizer."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ids = encode_corpus(tokenizer, load_text_corpus(dataset, split))
    available = len(ids) // length
    if available < num_windows:
        raise ValueError(f"--num_windows={num_windows}: the {split} split has only {available} windows of {length} tokens.")
    return ids[: num_windows * length].view(num_windows, length)


def noise_like(reference: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """ε drawn on the CPU from `generator` (the same draws on every device), on `reference`'s device."""
    return torch.randn(reference.shape, generator=generator).to(reference.device, reference.dtype)


@torch.no_grad()
def diagnose_blockwise(model, windows: torch.Tensor, args: argparse.Namespace) -> dict[str, dict]:
    config = model.config
    generator = torch.Generator().manual_seed(args.seed)
    scheduler = DiffusionBlocksScheduler(**{**config.scheduler_kwargs(), "solver": args.solver})
    scheduler.set_timesteps(args.num_inference_steps or config.default_num_inference_steps, device=windows.device)
    step_blocks = scheduler.block_indices.tolist()
    # with many steps, report the last step of each block's run (every step with one per block)
    reported = [s for s in range(len(step_blocks)) if s + 1 == len(step_blocks) or step_blocks[s + 1] != step_blocks[s]]
    names = [f"block {b}, σ ~ training" for b in range(config.num_blocks)]
    for s in reported:
        sigma = float(scheduler.timesteps[s])
        names += [f"step {s} fresh (block {step_blocks[s]}, σ={sigma:.3g})", f"step {s} chain (block {step_blocks[s]}, σ={sigma:.3g})"]
    names.append("final z, nearest E row")
    scores = {name: Score() for name in names}
    table = model.target_embeddings
    for start in range(0, len(windows), args.batch_size):
        input_ids = windows[start : start + args.batch_size]
        targets = input_ids[:, 1:]
        clean = table[input_ids]                                                        # (batch, n, d)

        def readout(block_index: int, noisy: torch.Tensor, sigma) -> torch.Tensor:
            return model.forward_block(block_index, input_ids, noisy, sigma).logits

        for block_index in range(config.num_blocks):
            sigma = config.noise_partition.sample_training_sigmas(block_index, input_ids.numel(), generator).view(input_ids.shape)
            sigma = sigma.to(clean.device)
            noisy = clean + sigma[..., None].float() * noise_like(clean, generator)
            scores[names[block_index]].add(readout(block_index, noisy, sigma)[:, 1:], targets)
        scheduler.set_timesteps(len(step_blocks), device=windows.device)
        sample = noise_like(clean, generator) * scheduler.init_noise_sigma
        for step, (sigma, block_index) in enumerate(zip(scheduler.timesteps, step_blocks)):
            logits = readout(block_index, sample, sigma)
            if step in reported:
                label = f"(block {block_index}, σ={float(sigma):.3g})"
                fresh = clean + sigma * noise_like(clean, generator)
                scores[f"step {step} fresh {label}"].add(readout(block_index, fresh, sigma)[:, 1:], targets)
                scores[f"step {step} chain {label}"].add(logits[:, 1:], targets)
            if args.solver == "ancestral":
                clean_estimate = table[sample_from_logits(logits, generator)]
            else:
                clean_estimate = model.denoised_embeddings(logits)
            sample = scheduler.step(clean_estimate, sigma, sample, generator=generator).prev_sample
        nearest = torch.cdist(sample[:, 1:], table.expand(len(sample), -1, -1)).argmin(-1)
        scores[names[-1]].add_predictions(nearest, targets)
    return {name: score.as_dict() for name, score in scores.items()}


@torch.no_grad()
def diagnose_end_to_end(model, windows: torch.Tensor, batch_size: int) -> dict[str, dict]:
    score = Score()
    for start in range(0, len(windows), batch_size):
        input_ids = windows[start : start + batch_size]
        score.add(model.forward_block(0, input_ids).logits[:, :-1], input_ids[:, 1:])
    return {"end to end": score.as_dict()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blockwise_dir", required=True, help="A block-wise folder written by train_ar.py.")
    parser.add_argument("--end_to_end_dir", default=None, help="An end-to-end folder written by train_ar.py (a reference row).")
    parser.add_argument("--dataset", default="shakespeare", help="Corpus name or text file (see data/text.py).")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--num_windows", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--num_inference_steps", type=int, default=None, help="Euler steps per token (default: one per block).")
    parser.add_argument("--solver", choices=("euler", "ancestral"), default="euler", help="The chain's step.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_json", default=None, help="Also write the rows to this JSON file.")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if args.num_windows < 1 or args.batch_size < 1 or (args.num_inference_steps is not None and args.num_inference_steps < 1):
        raise ValueError("--num_windows, --batch_size and --num_inference_steps must be >= 1.")
    blockwise = DiffusionBlocksForCausalLM.from_pretrained(args.blockwise_dir).to(args.device).eval()
    if blockwise.config.objective != "diffusion":
        raise ValueError(f"--blockwise_dir {args.blockwise_dir} holds an end-to-end model (objective='next_token').")
    length = blockwise.config.max_position_embeddings
    rows = {}
    if args.end_to_end_dir:
        end_to_end = DiffusionBlocksForCausalLM.from_pretrained(args.end_to_end_dir).to(args.device).eval()
        windows = held_out_windows(args.end_to_end_dir, args.dataset, args.split, length, args.num_windows)
        rows.update(diagnose_end_to_end(end_to_end, windows.to(args.device), args.batch_size))
    windows = held_out_windows(args.blockwise_dir, args.dataset, args.split, length, args.num_windows)
    rows.update(diagnose_blockwise(blockwise, windows.to(args.device), args))

    tokens = next(iter(rows.values()))["tokens"]
    print(f"{args.dataset} {args.split}: {args.num_windows} windows × {length - 1} targets = {tokens} tokens, "
          f"seed {args.seed}, num_blocks={blockwise.config.num_blocks}, solver {args.solver}")
    print(f"{'row':<40}{'accuracy':>10}{'CE (nats)':>11}{'p(target)':>11}")
    for name, row in rows.items():
        cross_entropy, probability = row["cross_entropy"], row["target_probability"]
        print(f"{name:<40}{100 * row['accuracy']:>9.1f}%"
              + (f"{'–':>11}{'–':>11}" if math.isnan(cross_entropy) else f"{cross_entropy:>11.3f}{100 * probability:>10.1f}%"))
    if args.output_json:
        with open(args.output_json, "w") as file:
            json.dump({"arguments": vars(args), "rows": rows}, file, indent=2)
    return rows


if __name__ == "__main__":
    main()
