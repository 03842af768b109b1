"""The block lookups every block-partitioned model needs, the check of block indices, and running a batch
whose samples belong to different blocks: written once.

A model keeps its materialised blocks in `self.blocks`, an `nn.ModuleDict` keyed by the block index as a
string, and says how many blocks it has in all (`num_blocks_total`). The library's own models
(`DiffusionBlocksPreTrainedModel`) and the routed pretrained transformers (`pretrained/modeling_routed.py`)
both hold blocks this way.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

import torch
from torch import nn

from ..argument_checks import check_block_index


def validate_block_indices(block_indices: Iterable[int], num_blocks: int) -> list[int]:
    """Sorted unique block indices; a `ValueError` naming the valid range for any other value."""
    indices = list(block_indices)
    for block_index in indices:
        check_block_index(block_index, num_blocks)
    if not indices:
        raise ValueError("block_indices must name at least one block.")
    return sorted(set(indices))


class BlockContainerMixin:
    """`loaded_block_indices`, `get_block`, `block_parameters` over `self.blocks` (an `nn.ModuleDict`)."""

    blocks: nn.ModuleDict

    @property
    def num_blocks_total(self) -> int:
        """B, whether or not every block is loaded."""
        raise NotImplementedError

    @property
    def loaded_block_indices(self) -> list[int]:
        """Indices of the blocks materialised in this instance."""
        return sorted(int(key) for key in self.blocks.keys())

    @property
    def is_complete(self) -> bool:
        return len(self.blocks) == self.num_blocks_total

    def get_block(self, block_index: int) -> nn.Module:
        """The module of block `block_index`; a clear error if it is out of range or not loaded."""
        validate_block_indices([block_index], self.num_blocks_total)
        if str(block_index) not in self.blocks:
            raise ValueError(
                f"block {block_index} is not loaded in this model (loaded blocks: {self.loaded_block_indices}); "
                f"load it with from_pretrained(..., block_index={block_index})."
            )
        return self.blocks[str(block_index)]

    def block_parameters(self, block_index: int) -> Iterator[nn.Parameter]:
        """The trainable parameters of one block: what its optimizer gets."""
        return self.get_block(block_index).parameters()


def run_by_owning_block(
    owners: torch.Tensor, run: Callable[[int, torch.Tensor | None], torch.Tensor]
) -> torch.Tensor | None:
    """Run every block on the samples it owns and put the results back in batch order.

    Args:
        owners (`torch.LongTensor` of shape `(batch,)`): the block that owns each sample (its noise level's).
        run (`Callable`): `(block_index, indices)` → the block's output for the samples `indices` (increasing),
            `(len(indices), ...)`; `indices` is None when the block owns the whole batch (nothing to select).
    Returns:
        The `(batch, ...)` output, or None for an empty batch.
    """
    present = owners.unique().tolist()
    if len(present) == 1:
        return run(present[0], None)
    output = None
    for block_index in present:
        indices = (owners == block_index).nonzero().squeeze(1)
        part = run(block_index, indices)
        if output is None:
            output = part.new_empty((owners.shape[0], *part.shape[1:]))
        output[indices.to(output.device)] = part
    return output
