"""Training progress that reads well both in a terminal and in a log file.

In a terminal a tqdm bar is the right display. Redirected to a file (a batch job, `> run.log 2>&1`) a bar
writes a line at every refresh, about 1,400 lines for one short run; there a plain log line every
`log_every` steps says the same: step, speed, time left and the last loss.

    progress = training_progress(range(start, total), initial=start, total=total, desc="block 0",
                                 disable=not accelerator.is_local_main_process, log_every=50)
    for step in progress:
        ...
        progress.set_postfix(loss="0.1234")
    progress.close()

`TQDM_DISABLE=1` silences the bar as usual; the plain lines are log records (`logging.INFO`), silenced
like any other by the logging level.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Iterator, TextIO

from tqdm.auto import tqdm

logger = logging.getLogger(__name__)


def is_terminal(stream: TextIO | None = None) -> bool:
    """Whether `stream` (default: `sys.stderr`, where tqdm draws) is an interactive terminal."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def format_duration(seconds: float) -> str:
    """`3h02m`, `4m05s` or `12s`."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


class LoggedProgress:
    """Iterates over `steps` and logs one line every `log_every` completed steps and after the last one."""

    def __init__(self, steps: range, *, initial: int, total: int, desc: str, log_every: int):
        if log_every < 1:
            raise ValueError(f"log_every must be >= 1, got {log_every}.")
        self.steps, self.initial, self.total, self.desc, self.log_every = steps, initial, total, desc, log_every
        self.postfix: dict[str, str] = {}
        self.started = time.perf_counter()

    def __iter__(self) -> Iterator[int]:
        for step in self.steps:
            yield step
            completed = step + 1          # the loop body of `step` has run when the next step is asked for
            if completed % self.log_every == 0 or completed == self.total:
                self.log(completed)

    def log(self, completed: int) -> None:
        elapsed = time.perf_counter() - self.started
        done = completed - self.initial
        rate = done / elapsed if elapsed > 0 else float("inf")
        line = f"{self.desc}: step {completed}/{self.total} ({100 * completed / self.total:.0f}%)"
        if done and rate != float("inf"):
            line += f", {rate:.2f} steps/s, {format_duration((self.total - completed) / rate)} left"
        if self.postfix:
            line += ", " + " ".join(f"{key}={value}" for key, value in self.postfix.items())
        logger.info(line)

    def set_postfix(self, **values) -> None:
        self.postfix = {key: str(value) for key, value in values.items()}

    def close(self) -> None:
        pass


class SilentProgress(LoggedProgress):
    """For processes that must not print (all but the first of a launch)."""

    def log(self, completed: int) -> None:
        pass


def training_progress(
    steps: range, *, initial: int, total: int, desc: str, disable: bool = False, log_every: int = 50
) -> tqdm | LoggedProgress:
    """A tqdm bar when stderr is a terminal, else a `LoggedProgress`; nothing when `disable`.

    Args:
        steps (`range`): the steps still to run.
        initial (`int`): steps already done (a resumed run).
        total (`int`): the last step.
        desc (`str`): prefix of the bar or the line, e.g. `"block 0"`.
        disable (`bool`, defaults to `False`): show nothing (the other processes of a launch).
        log_every (`int`, defaults to 50): steps between two plain lines (the run's `--logging_steps`).
    """
    if disable:
        return SilentProgress(steps, initial=initial, total=total, desc=desc, log_every=log_every)
    if is_terminal():
        return tqdm(steps, initial=initial, total=total, desc=desc)
    return LoggedProgress(steps, initial=initial, total=total, desc=desc, log_every=log_every)


def progress_bars_wanted() -> bool:
    """For code that takes a `progress: bool`: a bar only in a terminal, and never under `TQDM_DISABLE=1`
    (an explicit `tqdm(disable=False)` would override that variable)."""
    disabled = os.environ.get("TQDM_DISABLE", "").strip().lower() in ("1", "true", "yes", "on")
    return is_terminal() and not disabled
