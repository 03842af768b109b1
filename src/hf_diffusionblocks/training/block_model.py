"""What `BlockTrainer` needs of a model: the block interface, written as a `typing.Protocol`.

Every family's `DiffusionBlocksPreTrainedModel` and the fine-tuning model of a converted pretrained
transformer (`pretrained.finetuning.BlockFinetuningModel`) satisfy it; the trainer and the
checkpoints use nothing else. A model built for block b only (`task.build_model([b])`) answers for b.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class BlockTrainableModel(Protocol):
    """A model the trainer can train one block of, checkpoint, resume and save."""

    config: Any                          # what a saved block must match (`check_block_file`)
    layers_per_block: list[int]          # layers of each block, for the log line
    block_training_steps: dict[int, int]  # steps of each finished block, written into its file

    def block_parameters(self, block_index: int) -> Iterable[torch.nn.Parameter]:
        """The parameters the block's optimizer steps (and nothing else)."""

    def block_state_dict(self, block_index: int) -> dict[str, torch.Tensor]:
        """The tensors saved for the block (their digest identifies the trained weights)."""

    def save_block(self, directory: str, block_index: int, training_steps: int | None = None) -> str:
        """Write the block's file into `directory` (a checkpoint folder); returns its path."""

    def load_block_weights(self, block_index: int, tensors: dict[str, torch.Tensor], source: str = "state dict") -> None:
        """Load a saved block's tensors (a resumed checkpoint); a `ValueError` naming `source` when they do not fit."""

    @classmethod
    def check_block_file(cls, path: str, block_index: int, config: Any) -> Any:
        """Refuse (`ValueError`) a block file that is not block `block_index` of a model with `config`."""

    def parameters(self, recurse: bool = True) -> Iterator[torch.nn.Parameter]:
        """All parameters (data-parallel replicas start from the same ones)."""

    def train(self, mode: bool = True) -> Any:
        """Training mode (dropout and the like on)."""

    def eval(self) -> Any:
        """Inference mode, for validation and the final weights."""

    def to(self, *args: Any, **kwargs: Any) -> Any:
        """The model on the training device."""
