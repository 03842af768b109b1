"""The block lookups every block-partitioned model needs, and the check of block indices, written once.

A model keeps its materialised blocks in `self.blocks`, an `nn.ModuleDict` keyed by the block index as a
string, and says how many blocks it has in all (`num_blocks_total`). The library's own models
(`DiffusionBlocksPreTrainedModel`) and the routed pretrained transformers (`pretrained/modeling_routed.py`)
both hold blocks this way.
"""

from __future__ import annotations

from typing import Iterable, Iterator

from torch import nn


def validate_block_indices(block_indices: Iterable[int], num_blocks: int) -> list[int]:
    """Sorted unique block indices; a `ValueError` naming the valid range for any other value."""
    indices = list(block_indices)
    for block_index in indices:
        if not isinstance(block_index, int) or isinstance(block_index, bool) or not 0 <= block_index < num_blocks:
            raise ValueError(f"block_index must be an int in [0, {num_blocks - 1}] (num_blocks={num_blocks}), got {block_index!r}.")
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
