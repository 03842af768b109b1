"""Process-wide settings of a training script: log format and the number of CPU threads.

CPU threads. torch uses one intra-op thread per physical core by default. The models of this library's
examples are small (hidden 64-128), where extra threads mostly add synchronisation, and on a shared
machine they compete with other jobs (timings: docs/results/dit.md, "CPU threads"). So when
`OMP_NUM_THREADS` is not
set, a CPU run uses half the CPUs this process may run on (at least 1), divided among the processes of
the launch on this machine. On a machine with hyper-threading that is about torch's own default (one
per physical core); on a 2-vCPU VM it is 1 thread. `OMP_NUM_THREADS` (or `torch.set_num_threads`
before the script) always wins.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Callable

import torch

logger = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging() -> None:
    """INFO-level log lines with a time stamp (a no-op if logging was configured already)."""
    logging.basicConfig(format=LOG_FORMAT, level=logging.INFO)


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def default_cpu_threads(num_cpus: int | None = None, local_processes: int | None = None) -> int:
    """Half of `num_cpus` (default: `available_cpus()`) shared among `local_processes` (default:
    `$LOCAL_WORLD_SIZE` set by torchrun, else 1), at least 1."""
    num_cpus = available_cpus() if num_cpus is None else num_cpus
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", 1)) if local_processes is None else local_processes
    return max(1, num_cpus // (2 * max(1, local_processes)))


def configure_cpu_threads(device_type: str) -> int | None:
    """On a CPU run with `OMP_NUM_THREADS` unset, `torch.set_num_threads(default_cpu_threads())`.

    Returns the number of threads set, or None when nothing was changed (a GPU run, or the variable is set).
    """
    if device_type != "cpu" or os.environ.get("OMP_NUM_THREADS"):
        return None
    threads = default_cpu_threads()
    torch.set_num_threads(threads)
    logger.info("CPU run: %d torch thread(s) of %d CPUs (set OMP_NUM_THREADS to choose).", threads, available_cpus())
    return threads


def run_script(main: Callable[[], Any], prog: str | None = None) -> None:
    """Run a script's `main()`: bad input (`ValueError`, `FileNotFoundError`, the library's way of naming a wrong
    argument or file) ends the process with `<prog>: error: <message>` and status 2, like argparse's own
    errors, instead of a traceback. `HF_DIFFUSIONBLOCKS_TRACEBACK=1` shows the traceback as well."""
    try:
        main()
    except (ValueError, FileNotFoundError) as error:
        if os.environ.get("HF_DIFFUSIONBLOCKS_TRACEBACK"):
            raise
        prog = prog or os.path.basename(sys.argv[0])
        print(f"{prog}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
