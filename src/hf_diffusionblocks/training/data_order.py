"""A deterministic, resumable order of training batches.

The permutation of epoch e of block b depends only on (seed, block_index, e), so a run resumed at
step s draws exactly the batches the uninterrupted run would have drawn from step s on.
"""

from __future__ import annotations

import torch


class BatchOrder:
    """Index batches for step `s`: epoch `s // batches_per_epoch`, position `s % batches_per_epoch`.

    Args:
        num_examples: size of the training set.
        batch_size: examples per step (the last incomplete batch of an epoch is dropped).
        seed: run seed.
        stream: distinguishes independent streams (e.g. the block index).
    """

    def __init__(self, num_examples: int, batch_size: int, seed: int, stream: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        if num_examples < batch_size:
            raise ValueError(f"the dataset has {num_examples} examples, fewer than batch_size={batch_size}.")
        self.num_examples = num_examples
        self.batch_size = batch_size
        self.seed = seed
        self.stream = stream
        self.batches_per_epoch = num_examples // batch_size
        self._epoch: int | None = None
        self._permutation: torch.Tensor | None = None

    def _epoch_permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed((self.seed * 1_000_003 + self.stream * 10_007 + epoch) % (2**63))
            self._permutation = torch.randperm(self.num_examples, generator=generator)
            self._epoch = epoch
        return self._permutation

    def indices_for_step(self, step: int) -> torch.Tensor:
        """`(batch_size,)` example indices of training step `step` (0-based)."""
        epoch, position = divmod(step, self.batches_per_epoch)
        start = position * self.batch_size
        return self._epoch_permutation(epoch)[start : start + self.batch_size]
