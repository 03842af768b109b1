"""Progress of a training loop: a bar in a terminal, a plain line every N steps in a log file."""

import io
import logging

import pytest
from tqdm.auto import tqdm

from hf_diffusionblocks.training import progress as progress_module
from hf_diffusionblocks.training.progress import LoggedProgress, format_duration, progress_bars_wanted, training_progress


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def run(progress, steps):
    for step in progress:
        progress.set_postfix(loss=f"{step / 10:.1f}")
    progress.close()


def test_not_a_terminal_logs_a_plain_line_every_n_steps_and_at_the_end(monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger=progress_module.__name__)
    monkeypatch.setattr(progress_module.sys, "stderr", io.StringIO())
    progress = training_progress(range(3, 12), initial=3, total=12, desc="block 1", log_every=4)
    assert isinstance(progress, LoggedProgress)
    run(progress, range(3, 12))
    lines = [record.getMessage() for record in caplog.records]
    assert [line.split(",")[0] for line in lines] == ["block 1: step 4/12 (33%)", "block 1: step 8/12 (67%)",
                                                      "block 1: step 12/12 (100%)"]
    assert lines[1].endswith("loss=0.7") and "steps/s" in lines[1] and "left" in lines[1]


def test_a_terminal_gets_a_tqdm_bar_and_disable_gets_nothing(monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger=progress_module.__name__)
    monkeypatch.setattr(progress_module.sys, "stderr", FakeTerminal())
    bar = training_progress(range(2), initial=0, total=2, desc="block 0", log_every=1)
    assert isinstance(bar, tqdm)
    bar.close()
    silent = training_progress(range(4), initial=0, total=4, desc="block 0", disable=True, log_every=1)
    run(silent, range(4))
    assert caplog.records == []


def test_progress_bars_wanted_only_in_a_terminal_without_tqdm_disable(monkeypatch):
    monkeypatch.setattr(progress_module.sys, "stderr", FakeTerminal())
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert progress_bars_wanted()
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert not progress_bars_wanted()
    monkeypatch.delenv("TQDM_DISABLE")
    monkeypatch.setattr(progress_module.sys, "stderr", io.StringIO())
    assert not progress_bars_wanted()


def test_log_every_must_be_positive_and_durations_read_well():
    with pytest.raises(ValueError, match="log_every must be >= 1"):
        LoggedProgress(range(2), initial=0, total=2, desc="b", log_every=0)
    assert [format_duration(s) for s in (12.4, 245, 10_920)] == ["12s", "4m05s", "3h02m"]
