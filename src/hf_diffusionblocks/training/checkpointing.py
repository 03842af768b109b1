"""Per-block training checkpoints that survive being killed mid-save.

    <output_dir>/checkpoints/block_<b>/checkpoint-<step>/
        block_<b>.safetensors    the block's weights (a standalone block file)
        training_state.safetensors + training_state.json
                                 optimizer, learning-rate schedule and gradient-scaler state, without
                                 pickle (see `training_state.py`)
        trainer_state.json       step, block, and what the run was (written last)

A checkpoint is assembled in a hidden temporary folder and renamed into place, so a folder named
`checkpoint-<step>` is always complete; a run killed mid-save leaves only the temporary folder,
which is ignored and removed by the next save.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from typing import Any

import torch

from ..atomic_io import atomic_folder, atomic_write_json, read_json_file
from ..modeling.block_checkpoint import block_weights_name, load_block_file
from .arguments import OptimizationSettings
from .block_model import BlockTrainableModel
from .optimization import BlockOptimization
from .training_state import load_training_state, save_training_state

_CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
TRAINER_STATE_NAME = "trainer_state.json"

# Settings that shape the optimisation trajectory: a resume under other values would not continue the run.
# (Logging, checkpointing and validation frequencies may change freely.)
RESUME_DEFINING_SETTINGS = (
    "max_train_steps", "train_batch_size", "learning_rate", "lr_scheduler", "lr_warmup_steps", "adam_beta1",
    "adam_beta2", "adam_weight_decay", "adam_epsilon", "max_grad_norm", "mixed_precision", "seed",
    "gradient_accumulation_steps", "use_ema", "ema_decay",
)


def resume_settings(settings: OptimizationSettings, data_parallel_replicas: int) -> dict[str, Any]:
    """What a resumed run must share with the run that wrote the checkpoint to continue it exactly (`settings`
    of the block: its own `max_train_steps`; the data it reads), as recorded in `trainer_state.json`."""
    defining = {name: getattr(settings, name) for name in RESUME_DEFINING_SETTINGS}
    return {**defining, "data_parallel_replicas": data_parallel_replicas, "training_data": dict(settings.training_data)}


@dataclass
class BlockCheckpoint:
    """A complete checkpoint folder of one block."""

    path: str
    block_index: int
    step: int

    @property
    def weights_path(self) -> str:
        return os.path.join(self.path, block_weights_name(self.block_index))

    def load_training_state(self) -> dict[str, Any]:
        return load_training_state(self.path)

    def trainer_state(self) -> dict[str, Any]:
        return read_json_file(os.path.join(self.path, TRAINER_STATE_NAME))

    def restore(self, model: BlockTrainableModel, optimization: BlockOptimization, settings: dict[str, Any],
                device: torch.device) -> None:
        """Continue from this checkpoint: refuse other `settings` (`check_resumable`), check and load the
        block's weights into `model`, then the optimizer, schedule, scaler and EMA state."""
        check_resumable(self, settings)
        type(model).check_block_file(self.weights_path, self.block_index, model.config)
        tensors = load_block_file(self.weights_path, device=str(device))
        model.load_block_weights(self.block_index, tensors, source=self.weights_path)
        optimization.load_state_dict(self.load_training_state(), where=self.path, step=self.step)


def check_resumable(checkpoint: BlockCheckpoint, settings: dict[str, Any]) -> None:
    """Refuse to resume `checkpoint` under settings that differ from those it was written with.

    `max_train_steps` may grow only under a constant learning rate (the schedule of any other
    scheduler depends on the total); it may never fall below the checkpoint's step, which would
    relabel weights trained for more steps. A `trainer_state.json` that does not say which block and step it
    is, or records no settings (written by an older version), is refused with the reason: nothing would show
    that resuming continues the run that wrote it.
    """
    path = os.path.join(checkpoint.path, TRAINER_STATE_NAME)
    trainer_state = checkpoint.trainer_state()
    if not isinstance(trainer_state, dict):
        raise ValueError(f"resume_from_checkpoint: {path} holds JSON but not an object (the checkpoint's trainer state).")
    for name, expected in (("block_index", checkpoint.block_index), ("step", checkpoint.step)):
        if trainer_state.get(name) != expected or isinstance(trainer_state.get(name), bool):
            raise ValueError(
                f"resume_from_checkpoint: {path} records {name}={trainer_state.get(name)!r}, but the checkpoint is "
                f"{name}={expected} (block_{checkpoint.block_index}/checkpoint-{checkpoint.step}): the file was edited or moved."
            )
    recorded = trainer_state.get("settings")
    if not isinstance(recorded, dict):
        raise ValueError(
            f"resume_from_checkpoint: {path} records no settings (a checkpoint of an older version of hf-diffusionblocks), "
            "so nothing shows that resuming would continue the run that wrote it (learning rate, batch, seed, data, ...). "
            "Restart the block: a new --output_dir, or no --resume_from_checkpoint."
        )
    if settings["max_train_steps"] < checkpoint.step:
        raise ValueError(
            f"--max_train_steps={settings['max_train_steps']} is below the step of the checkpoint to resume "
            f"({checkpoint.step}, {checkpoint.path}): its weights have already trained longer."
        )
    differing = [name for name in sorted(recorded.keys() | settings.keys()) if recorded.get(name) != settings.get(name)]
    if settings.get("lr_scheduler") == "constant" == recorded.get("lr_scheduler"):
        differing = [name for name in differing if name != "max_train_steps"]
    if differing:
        details = ", ".join(f"{name}: checkpoint {recorded.get(name)!r} vs now {settings.get(name)!r}" for name in differing)
        raise ValueError(
            f"resume_from_checkpoint: {checkpoint.path} was written by a run with other settings ({details}); "
            "resuming would not continue that run. Use the same flags, or a new --output_dir."
        )


class BlockCheckpointManager:
    """Save, list, prune and find the latest checkpoint of one block.

    Args:
        output_dir: the run's output folder.
        block_index: the block whose checkpoints these are.
        total_limit: keep at most this many checkpoints (None keeps all).
    """

    def __init__(self, output_dir: str, block_index: int, total_limit: int | None = None):
        if total_limit is not None and total_limit < 1:
            raise ValueError(f"checkpoints_total_limit must be >= 1, got {total_limit}.")
        self.directory = os.path.join(output_dir, "checkpoints", f"block_{block_index}")
        self.block_index = block_index
        self.total_limit = total_limit

    def checkpoints(self) -> list[BlockCheckpoint]:
        """Complete checkpoints, oldest first."""
        if not os.path.isdir(self.directory):
            return []
        found = []
        for name in os.listdir(self.directory):
            match = _CHECKPOINT_PATTERN.match(name)
            path = os.path.join(self.directory, name)
            if match and os.path.isfile(os.path.join(path, TRAINER_STATE_NAME)):
                found.append(BlockCheckpoint(path, self.block_index, int(match.group(1))))
        return sorted(found, key=lambda checkpoint: checkpoint.step)

    def latest(self) -> BlockCheckpoint | None:
        checkpoints = self.checkpoints()
        return checkpoints[-1] if checkpoints else None

    def resolve(self, resume_from_checkpoint: str | None) -> BlockCheckpoint | None:
        """`None` → no resume; `"latest"` → the latest complete checkpoint (or None); else a checkpoint folder path."""
        if resume_from_checkpoint is None:
            return None
        if resume_from_checkpoint == "latest":
            return self.latest()
        path = os.path.abspath(resume_from_checkpoint)
        match = _CHECKPOINT_PATTERN.match(os.path.basename(path))
        if not match or not os.path.isfile(os.path.join(path, TRAINER_STATE_NAME)):
            raise ValueError(
                f"resume_from_checkpoint={resume_from_checkpoint!r} is not a complete checkpoint folder "
                f"(expected .../checkpoint-<step> containing {TRAINER_STATE_NAME}), nor 'latest'."
            )
        if not os.path.isfile(os.path.join(path, block_weights_name(self.block_index))):
            raise ValueError(f"{path} is not a checkpoint of block {self.block_index}.")
        return BlockCheckpoint(path, self.block_index, int(match.group(1)))

    def save(
        self, step: int, model: BlockTrainableModel, optimization: BlockOptimization, settings: dict[str, Any]
    ) -> BlockCheckpoint:
        """Write checkpoint `step` atomically (temporary folder + rename), then prune old ones; `settings` are
        those `resume_settings` gives, recorded for `check_resumable`."""
        trainer_state = {"block_index": self.block_index, "settings": settings}
        os.makedirs(self.directory, exist_ok=True)
        self._remove_stale_temporaries()
        final_path = os.path.join(self.directory, f"checkpoint-{step}")
        with atomic_folder(final_path, overwrite=True) as temporary:
            model.save_block(temporary, self.block_index, training_steps=step)
            save_training_state(temporary, optimization.state_dict())
            atomic_write_json(os.path.join(temporary, TRAINER_STATE_NAME), {**trainer_state, "step": step})
        self._prune()
        return BlockCheckpoint(final_path, self.block_index, step)

    def _remove_stale_temporaries(self) -> None:
        for name in os.listdir(self.directory):
            if name.startswith(".checkpoint-") and name.endswith(".tmp"):
                shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)

    def _prune(self) -> None:
        if self.total_limit is None:
            return
        for checkpoint in self.checkpoints()[: -self.total_limit]:
            shutil.rmtree(checkpoint.path, ignore_errors=True)
