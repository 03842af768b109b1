"""Block-parallel training: map the processes of one launch onto blocks.

With N processes (`accelerate launch --num_processes N` or `torchrun --nproc_per_node N`) and
`--block_index all`:
- N = B·k: block b gets the k processes `[b·k, …, b·k + k − 1]`, which train it data-parallel
  among themselves (gradients are averaged inside that group only). No tensor ever crosses
  between groups: the B blocks train at once with zero communication between blocks.
- N < B: process r trains blocks r, r + N, r + 2N, … one after another (rounds), each alone.
With `--block_index b`, all N processes form one data-parallel group on block b.

`accelerator.prepare(model)` is deliberately not used: it would wrap every process in one DDP and
broadcast rank 0's weights into every block (accelerate 1.15). Instead every group creates its own
`torch.distributed` group, broadcasts the initial weights from its first rank, and all-reduces
gradients inside the group after each backward pass.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..modeling.block_container import validate_block_indices


def init_distributed() -> tuple[int, int]:
    """(rank, world_size) of this launch; joins the process group when launched with several processes.

    Reads the variables `torchrun` and `accelerate launch` set. accelerate 1.15 does not start a
    multi-process CPU run itself (accelerate 1.15), so the group is initialised here when needed, with
    gloo on the CPU and NCCL on GPUs.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


@dataclass(frozen=True)
class BlockAssignment:
    """What one process trains, and with whom.

    Attributes:
        block_indices: the blocks this process trains, in order.
        group_ranks: global ranks of this process's data-parallel group (same for all its blocks).
        rank_in_group: this process's index inside the group (0 is the group leader, which saves).
    """

    block_indices: tuple[int, ...]
    group_ranks: tuple[int, ...]
    rank_in_group: int

    @property
    def group_size(self) -> int:
        return len(self.group_ranks)

    @property
    def is_group_leader(self) -> bool:
        return self.rank_in_group == 0


def assign_blocks(block_index: int | str, num_blocks: int, rank: int, world_size: int) -> tuple[BlockAssignment, list[tuple[int, ...]]]:
    """This process's assignment, and every group's ranks (all processes must create all groups).

    Raises a `ValueError` when `world_size > num_blocks` is not a multiple of `num_blocks`.
    """
    if block_index != "all":
        block = validate_block_indices([block_index], num_blocks)[0]
        ranks = tuple(range(world_size))
        return BlockAssignment((block,), ranks, rank), [ranks]
    if world_size <= num_blocks:
        blocks = tuple(range(rank, num_blocks, world_size))
        return BlockAssignment(blocks, (rank,), 0), [(r,) for r in range(world_size)]
    if world_size % num_blocks != 0:
        raise ValueError(
            f"{world_size} processes cannot be split evenly over num_blocks={num_blocks}: "
            f"use a multiple of {num_blocks} processes, at most {num_blocks}, or --block_index b."
        )
    per_block = world_size // num_blocks
    groups = [tuple(range(b * per_block, (b + 1) * per_block)) for b in range(num_blocks)]
    block = rank // per_block
    return BlockAssignment((block,), groups[block], rank % per_block), groups


class BlockProcessGroup:
    """The data-parallel group of one process: weight broadcast and gradient averaging inside it."""

    def __init__(self, assignment: BlockAssignment, all_groups: list[tuple[int, ...]]):
        self.assignment = assignment
        self.group = None
        if assignment.group_size > 1 or (dist.is_available() and dist.is_initialized()):
            # Every process must call new_group for every group, in the same order.
            for ranks in all_groups:
                group = dist.new_group(list(ranks))
                if ranks == assignment.group_ranks:
                    self.group = group

    @property
    def is_data_parallel(self) -> bool:
        return self.assignment.group_size > 1

    def broadcast_parameters(self, parameters: list[torch.nn.Parameter]) -> None:
        """Make every replica start from the group leader's weights."""
        if not self.is_data_parallel:
            return
        with torch.no_grad():
            for parameter in parameters:
                dist.broadcast(parameter.data, src=self.assignment.group_ranks[0], group=self.group)

    def average_gradients(self, parameters: list[torch.nn.Parameter]) -> None:
        """All-reduce (mean) every gradient inside the group; nothing leaves it."""
        if not self.is_data_parallel:
            return
        gradients = [p.grad for p in parameters if p.grad is not None]
        flat = torch.cat([gradient.reshape(-1) for gradient in gradients])
        dist.all_reduce(flat, group=self.group)
        flat /= self.assignment.group_size
        offset = 0
        for gradient in gradients:
            count = gradient.numel()
            gradient.copy_(flat[offset : offset + count].view_as(gradient))
            offset += count


def local_batch(indices: torch.Tensor, assignment: BlockAssignment) -> torch.Tensor:
    """This replica's slice of a global batch of example indices."""
    per_replica = indices.shape[0] // assignment.group_size
    start = assignment.rank_in_group * per_replica
    return indices[start : start + per_replica]
