"""Per-process TensorBoard logging: a process accelerate does not count as the main one keeps its curves."""

import argparse

import pytest
from accelerate import Accelerator
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from hf_diffusionblocks.training.launch import create_accelerator
from hf_diffusionblocks.training.tracking import log_metrics, process_writers


def run_args(tmp_path, report_to="tensorboard"):
    return argparse.Namespace(output_dir=str(tmp_path), mixed_precision="no", report_to=report_to, seed=0,
                              training_mode="blockwise")


def pretend_not_main(monkeypatch):
    """Make this process look like rank > 0 to accelerate (its decorators and properties)."""
    from accelerate.state import AcceleratorState, PartialState

    for cls in (PartialState, AcceleratorState, Accelerator):
        monkeypatch.setattr(cls, "is_main_process", property(lambda self: False))
    monkeypatch.setattr(PartialState, "use_distributed", property(lambda self: True))


def scalars(folder):
    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_a_non_main_process_writes_into_its_own_rank_folder(tmp_path, monkeypatch):
    pretend_not_main(monkeypatch)
    monkeypatch.setenv("RANK", "2")
    accelerator = create_accelerator(run_args(tmp_path), "train_test")
    assert accelerator.trackers == []                       # accelerate tracks on the main process only
    log_metrics(accelerator, {"train/loss_block_2": 0.5}, step=10)
    log_metrics(accelerator, {"train/loss_block_2": 0.25}, step=20)
    assert len(process_writers(accelerator)) == 1
    process_writers(accelerator)[0].flush()
    assert scalars(tmp_path / "logs" / "train_test" / "rank_2") == {"train/loss_block_2": [(10, 0.5), (20, 0.25)]}


def test_the_main_process_logs_through_accelerate(tmp_path):
    accelerator = create_accelerator(run_args(tmp_path), "train_test")
    log_metrics(accelerator, {"train/loss_block_0": 1.5}, step=3)
    assert [writer for writer in process_writers(accelerator)] == [accelerator.get_tracker("tensorboard").writer]
    accelerator.end_training()
    assert not (tmp_path / "logs" / "train_test" / "rank_0").exists()
    assert scalars(tmp_path / "logs" / "train_test") == {"train/loss_block_0": [(3, 1.5)]}


@pytest.mark.parametrize("report_to", ["none", "wandb"])
def test_no_process_writer_without_tensorboard(tmp_path, monkeypatch, report_to):
    pretend_not_main(monkeypatch)
    accelerator = Accelerator()
    from hf_diffusionblocks.training.tracking import attach_process_writer

    assert attach_process_writer(accelerator, report_to, "p", str(tmp_path)) is None
    log_metrics(accelerator, {"x": 1.0}, step=1)             # nothing to write to, and no error
    assert process_writers(accelerator) == []
