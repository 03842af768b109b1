#!/usr/bin/env python
"""Block-parallel throughput: 2 blocks in 2 processes at once vs the same 2 blocks one after another.

Both runs train `examples/train_dit.py` on digits with the same settings; the parallel run is
`torchrun --nproc_per_node 2 ... --block_index all` (one block per process, zero communication
between them), the sequential run is one process with `--block_index all`. Throughput counts
training steps of all blocks per second of training-loop time (start-up excluded); each process
is limited to one thread (`OMP_NUM_THREADS=1`) so 2 processes use 2 cores. The script also prints
the machine's own ceiling: how much more work two independent single-thread matmul processes get
done than one (2.0 on two free physical cores; less on shared or throttled vCPUs).

    python benchmarks/parallel.py
Last line: `parallel_throughput_ratio=<x> num_processes=2` (ideal 2.0 on 2 free cores).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "train_dit.py"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def summaries(stdout: str) -> list[dict]:
    decoder, found, position = json.JSONDecoder(), [], stdout.find("{")
    while position != -1:
        summary, end = decoder.raw_decode(stdout, position)
        found.append(summary)
        position = stdout.find("{", end)
    return found


def run(launcher: list[str], output_dir: str, args: argparse.Namespace) -> list[dict]:
    command = [*launcher, str(SCRIPT), "--output_dir", output_dir, "--num_blocks", "2", "--block_index", "all",
               "--model_size", args.model_size, "--max_train_steps", str(args.steps), "--train_batch_size",
               str(args.batch_size), "--report_to", "none", "--checkpointing_steps", str(10 * args.steps),
               "--num_inference_steps", "2", "--samples_per_class", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    return summaries(result.stdout)


CALIBRATION = """
import time, torch
torch.set_num_threads(1)
a = torch.randn(256, 256)
started = time.perf_counter()
for _ in range(1500):
    a @ a
print(time.perf_counter() - started)
"""


def machine_scaling() -> float:
    """Throughput of 2 independent single-thread matmul processes over 1: the machine's own ceiling."""
    def timed(count: int) -> float:
        processes = [subprocess.Popen([sys.executable, "-c", CALIBRATION], stdout=subprocess.PIPE, text=True) for _ in range(count)]
        return max(float(process.communicate()[0]) for process in processes)
    alone, together = timed(1), timed(2)
    return 2 * alone / together


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_size", default="XS")
    parser.add_argument("--steps", type=int, default=300, help="Steps per block.")
    parser.add_argument("--batch_size", type=int, default=128)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as sequential_dir, tempfile.TemporaryDirectory() as parallel_dir:
        sequential = run([sys.executable], sequential_dir, args)
        parallel = run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                        "--master_addr", "127.0.0.1", "--master_port", str(free_port())], parallel_dir, args)
    total_steps = 2 * args.steps
    sequential_seconds = sum(block["seconds"] for summary in sequential for block in summary["blocks"])
    parallel_seconds = max(sum(block["seconds"] for block in summary["blocks"]) for summary in parallel)
    sequential_throughput = total_steps / sequential_seconds
    parallel_throughput = total_steps / parallel_seconds
    ceiling = machine_scaling()
    print(f"model={args.model_size} steps/block={args.steps} batch={args.batch_size} cpu_count={os.cpu_count()}")
    print(f"machine ceiling: 2 independent 1-thread matmul processes run {ceiling:.2f}x the work of one")
    print(f"1 process, blocks in turn : {sequential_throughput:8.2f} steps/s ({sequential_seconds:.1f} s)")
    print(f"2 processes, one block each: {parallel_throughput:8.2f} steps/s ({parallel_seconds:.1f} s)")
    print(f"parallel_throughput_ratio={parallel_throughput / sequential_throughput:.2f} num_processes=2")


if __name__ == "__main__":
    main()
