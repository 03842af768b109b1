"""The output-folder part of every `TrainingTask`: write a finished block, upload it, find it again.

    <output_dir>/<weights_subfolder>/block_<b>.safetensors   what `save_block` writes (with the shared files)

`BlockOutputFolder` is written once for every task (image, text, pretrained fine-tuning); a task says
only what differs: the subfolder of its block files, what else a saved block brings along
(`save_outputs`, e.g. a whole pipeline folder) and the message of the shared files' commit.
`publish_block` is called again for a finished block by a resumed run, so an upload that failed in an
earlier run is completed.
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass

import torch

from ..hub import push_shared_files_and_block
from ..modeling.block_checkpoint import block_weights_name, read_block_metadata
from .progress import progress_bars_wanted

logger = logging.getLogger(__name__)

# push_shared_files_and_block's own message, kept for the tasks that never chose another one
DEFAULT_HUB_COMMIT_MESSAGE = "Upload configs, index, scheduler and model card"


@dataclass(frozen=True)
class HubTarget:
    """The Hub repo finished blocks are uploaded to (`--hub_model_id`, `--hub_token`)."""

    repo_id: str
    token: str | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> HubTarget | None:
        """The target of `--push_to_hub`, or None when the run does not push."""
        return cls(args.hub_model_id, args.hub_token) if args.push_to_hub else None


def finished_block_steps(model_dir: str, block_index: int) -> int | None:
    """Training steps recorded in `model_dir/block_<b>.safetensors`, or None when the block is not there."""
    path = os.path.join(model_dir, block_weights_name(block_index))
    return read_block_metadata(path)["training_steps"] if os.path.isfile(path) else None


def present_blocks(model_dir: str, num_blocks: int) -> list[int]:
    """The blocks of `range(num_blocks)` whose file is in `model_dir`."""
    return [b for b in range(num_blocks) if os.path.isfile(os.path.join(model_dir, block_weights_name(b)))]


def every_block_saved(model_class: type, model_dir: str, what: str) -> bool:
    """Whether every block of the model saved in `model_dir` has its file there; if not, log which are done
    (`what` is what the run makes once all are, e.g. "the sample grid")."""
    num_blocks = model_class.load_config(model_dir).num_blocks
    present = present_blocks(model_dir, num_blocks)
    if len(present) < num_blocks:
        logger.info("blocks %s of %d are done; %s waits until all are.", present, num_blocks, what)
        return False
    return True


def complete_pipeline(pipeline_class: type, model_class: type, output_dir: str, device: torch.device, what: str):
    """The pipeline saved in `output_dir`, on `device`, when every block of its transformer is there; else None,
    after logging which blocks are done (`what` is what the run writes once all are, e.g. "the sample grid")."""
    if not every_block_saved(model_class, os.path.join(output_dir, "transformer"), what):
        return None
    pipeline = pipeline_class.from_pretrained(output_dir).to(device)
    # diffusers passes tqdm an explicit disable=False on the first process, which overrides TQDM_DISABLE
    pipeline.set_progress_bar_config(disable=not progress_bars_wanted())
    return pipeline


class BlockOutputFolder:
    """Save, publish and look up the finished blocks of a run (the base of every training task).

    Args:
        output_dir (`str`): the run's output folder.
        weights_subfolder (`str`): where the block files live inside `output_dir` ("" or e.g. "transformer").
        hub (`HubTarget`, *optional*): upload each finished block there (None: the run does not push).
        hub_commit_message (`str`): the message of the commit of the shared files (`hub.root_files`: everything
            but block weights and run state) that precedes each block's own commit.
    """

    def __init__(
        self,
        output_dir: str,
        *,
        weights_subfolder: str = "",
        hub: HubTarget | None = None,
        hub_commit_message: str = DEFAULT_HUB_COMMIT_MESSAGE,
    ):
        self.output_dir = output_dir
        self.weights_subfolder = weights_subfolder
        self.hub = hub
        self.hub_commit_message = hub_commit_message

    @property
    def model_dir(self) -> str:
        """The folder of the block files (`config.json` + `block_<b>.safetensors`)."""
        return os.path.join(self.output_dir, self.weights_subfolder) if self.weights_subfolder else self.output_dir

    def save_outputs(self, model, block_index: int) -> None:
        """Write block `block_index`'s file and the shared files into `output_dir` (a task whose folder holds
        more, e.g. a pipeline, overrides this)."""
        model.save_pretrained(self.output_dir, block_indices=[block_index])

    def save_block(self, model, block_index: int, training_steps: int) -> None:
        """Record the block's steps, write it (`save_outputs`), then `publish_block` it."""
        model.block_training_steps[block_index] = training_steps
        self.save_outputs(model, block_index)
        self.publish_block(block_index)

    def publish_block(self, block_index: int) -> None:
        """Upload the shared files, then the saved block as its own commit (nothing when the run does not push).

        The shared files are identical from every process, so whoever finishes first makes the repo loadable
        for the blocks present; the model card follows when all are."""
        if self.hub is not None:
            push_shared_files_and_block(self.output_dir, self.hub.repo_id, block_index, subfolder=self.weights_subfolder,
                                        token=self.hub.token, commit_message=self.hub_commit_message)

    def finished_steps(self, block_index: int) -> int | None:
        """Training steps of the block already saved in the output folder (None if absent)."""
        return finished_block_steps(self.model_dir, block_index)
