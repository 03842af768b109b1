"""Metrics from every process of a block-parallel launch, not only the main one.

`Accelerator.log` writes on the main process only: in a block-parallel launch the other processes
train other blocks, whose curves would be lost. Here a process that accelerate does not count as
the main one gets its own TensorBoard folder, `<logging_dir>/<project>/rank_<r>` (TensorBoard shows
it as a run next to the main one), and `log_metrics` writes there.
"""

from __future__ import annotations

import os
import weakref
from typing import Any

from accelerate import Accelerator

_PROCESS_WRITERS: "weakref.WeakKeyDictionary[Accelerator, Any]" = weakref.WeakKeyDictionary()


def attach_process_writer(accelerator: Accelerator, report_to: str, project_name: str, logging_dir: str) -> str | None:
    """On a non-main process reporting to TensorBoard, open its own writer; returns its folder (else None)."""
    if accelerator.is_main_process or report_to not in ("tensorboard", "all"):
        return None
    from torch.utils.tensorboard import SummaryWriter

    rank = int(os.environ.get("RANK", accelerator.process_index))
    folder = os.path.join(logging_dir, project_name, f"rank_{rank}")
    _PROCESS_WRITERS[accelerator] = SummaryWriter(folder)
    return folder


def log_metrics(accelerator: Accelerator, values: dict[str, float], step: int) -> None:
    """`accelerator.log` on the main process; this process's own TensorBoard writer on the others."""
    if accelerator.is_main_process:
        accelerator.log(values, step=step)
        return
    writer = _PROCESS_WRITERS.get(accelerator)
    if writer is not None:
        for name, value in values.items():
            writer.add_scalar(name, value, global_step=step)


def process_writers(accelerator: Accelerator) -> list[Any]:
    """The TensorBoard writers this process writes to: the main process's trackers', or its own."""
    if accelerator.is_main_process:
        return [tracker.writer for tracker in accelerator.trackers if tracker.name == "tensorboard"]
    writer = _PROCESS_WRITERS.get(accelerator)
    return [] if writer is None else [writer]


def close_process_writer(accelerator: Accelerator) -> None:
    writer = _PROCESS_WRITERS.pop(accelerator, None)
    if writer is not None:
        writer.close()
