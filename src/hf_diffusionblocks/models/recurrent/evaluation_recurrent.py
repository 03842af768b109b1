"""Held-out cross-entropy of a recurrent-depth LM after K core iterations."""

from __future__ import annotations

import torch

from .losses_recurrent import next_token_cross_entropy
from .modeling_recurrent import DiffusionBlocksRecurrentForCausalLM


@torch.no_grad()
def held_out_cross_entropy(
    model: DiffusionBlocksRecurrentForCausalLM,
    token_ids: torch.Tensor,
    sequence_length: int,
    num_windows: int,
    num_iterations: int,
    batch_size: int = 32,
    seed: int = 0,
) -> float:
    """Mean next-token cross-entropy (nats per token) over the first `num_windows` disjoint windows.

    Args:
        token_ids (`torch.LongTensor` of shape `(N,)`): the held-out text; window w is
            `token_ids[w·(L+1) : (w+1)·(L+1)]` with L = `sequence_length` (context + targets).
        num_iterations (`int`): K, the core iterations of each prediction.
        seed (`int`, defaults to 0): seed of the CPU generator of the initial states.
    """
    window = sequence_length + 1
    count = min(num_windows, len(token_ids) // window)
    if count < 1:
        raise ValueError(f"the held-out text ({len(token_ids)} tokens) is shorter than one window of {window}.")
    device = next(model.parameters()).device
    windows = token_ids[: count * window].view(count, window)
    generator = torch.Generator().manual_seed(seed)
    model.eval()
    total = 0.0
    for start in range(0, count, batch_size):
        batch = windows[start : start + batch_size].to(device)
        logits = model.iterate(batch[:, :-1], num_iterations, generator)
        total += float(next_token_cross_entropy(logits, batch[:, 1:])) * len(batch)
    return total / count
