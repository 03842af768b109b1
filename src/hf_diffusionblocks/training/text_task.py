"""What the text families share in block-wise training: windows of one token stream as examples.

`TextWindowTask` implements the `TrainingTask` protocol for a model trained on fixed-length windows
cut from a long token stream (every start position is one example): the batch, the block loss, the
block's loss on fixed validation windows; saving, uploading and finding finished blocks are
`BlockOutputFolder`'s. A family gives its model class, its loss (called as
`loss_function(model, block_index, input_ids, generator)`) and, where its outputs differ, overrides
`save_outputs` or `log_validation`.

`write_text_samples` writes generated texts where people look for them: `samples.txt` in the output
folder and the TensorBoard "Text" tab.
"""

from __future__ import annotations

import logging
import os
from typing import Callable

import torch
from accelerate import Accelerator

from ..data.text import TrainingTexts, load_training_texts
from ..modeling.modeling_blocks import DiffusionBlocksPreTrainedModel
from .output_folder import BlockOutputFolder, HubTarget
from .tracking import log_metrics, process_writers

logger = logging.getLogger(__name__)

SAMPLES_FILE = "samples.txt"
SAMPLE_SEPARATOR = "\n" + "=" * 80 + "\n"


class TextWindowTask(BlockOutputFolder):
    """Block-wise training on windows of `window_length` tokens of `train_ids`.

    Args:
        config: the model config (`model_class(config, block_indices=...)` builds the model).
        model_class: the family's `DiffusionBlocksPreTrainedModel` subclass.
        loss_function: `(model, block_index, input_ids (batch, window_length), generator) -> scalar loss`.
        train_ids (`torch.LongTensor` of shape `(N,)`): the training token stream.
        validation_ids (`torch.LongTensor` of shape `(M,)`): the validation token stream.
        args: the parsed flags (`output_dir`, `validation_windows`, `push_to_hub`, `hub_model_id`, `hub_token`).
        window_length (`int`): tokens per example.
        weights_subfolder (`str`): where the block files live inside `output_dir` ("" or "transformer").
        hub_commit_message (`str`): the message of the commit of the shared files (`hub.root_files`: everything
            but block weights and run state) that precedes each block's own commit.
    """

    def __init__(
        self,
        config,
        model_class: type[DiffusionBlocksPreTrainedModel],
        loss_function: Callable[..., torch.Tensor],
        train_ids: torch.Tensor,
        validation_ids: torch.Tensor,
        args,
        *,
        window_length: int,
        weights_subfolder: str = "",
        hub_commit_message: str = "Upload config, index and tokenizer",
    ):
        if len(train_ids) < window_length:
            raise ValueError(f"the training text has {len(train_ids)} tokens, fewer than the {window_length} of one window.")
        self.config = config
        self.model_class = model_class
        self.loss_function = loss_function
        self.train_ids = train_ids
        self.window = torch.arange(window_length)
        self.num_examples = len(train_ids) - window_length + 1                     # one example per window start
        num_windows = min(args.validation_windows, len(validation_ids) // window_length)
        self.validation_stream = validation_ids
        self.validation_windows = validation_ids[: num_windows * window_length].view(num_windows, window_length)
        super().__init__(args.output_dir, weights_subfolder=weights_subfolder, hub=HubTarget.from_args(args),
                         hub_commit_message=hub_commit_message)

    def build_model(self, block_indices: list[int]) -> DiffusionBlocksPreTrainedModel:
        return self.model_class(self.config, block_indices=block_indices)

    def get_batch(self, indices: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]:
        return {"input_ids": self.train_ids[indices[:, None] + self.window].to(device)}   # (batch, window_length)

    def loss(self, model, block_index: int, batch: dict[str, torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        return self.loss_function(model, block_index, batch["input_ids"], generator)

    @torch.no_grad()
    def log_validation(self, model, block_index: int, step: int, accelerator: Accelerator) -> None:
        """The block's loss (nats per token) on the fixed validation windows with a fixed generator."""
        if len(self.validation_windows) == 0:
            return
        generator = torch.Generator().manual_seed(0)
        value = float(self.loss_function(model, block_index, self.validation_windows.to(accelerator.device), generator))
        log_metrics(accelerator, {f"validation/loss_block_{block_index}": value}, step=step)
        logger.info("block %d step %d: validation loss %.4f nats/token", block_index, step, value)


def write_text_samples(output_dir: str, texts: list[str], accelerator: Accelerator) -> None:
    """`texts` into `output_dir/samples.txt` (separated by a rule) and TensorBoard's Text tab."""
    with open(os.path.join(output_dir, SAMPLES_FILE), "w", encoding="utf-8") as file:
        file.write(SAMPLE_SEPARATOR.join(texts) + "\n")
    for writer in process_writers(accelerator):
        for index, text in enumerate(texts):
            writer.add_text(f"samples/{index}", "    " + text.replace("\n", "\n    "), 0)


def load_texts_for_run(args) -> TrainingTexts:
    """The training and validation texts that the text data flags (`add_text_data_arguments`) name, logged."""
    texts = load_training_texts(args.dataset_name, train_file=args.train_file, validation_file=args.validation_file,
                                validation_split_percentage=args.validation_split_percentage, text_column=args.text_column)
    logger.info(texts.describe())
    return texts
