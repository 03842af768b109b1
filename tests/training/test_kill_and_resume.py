"""A real SIGKILL of a training process — inside a step, inside a checkpoint write, inside the final save —
then `--resume_from_checkpoint latest`: the block's weights are bit-identical to an uninterrupted run's, and
the killed process's temporaries are gone."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]
KILL_POINTS = ROOT / "tests" / "kill_points"


def train_args(output_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable, str(ROOT / "examples" / "train_dit.py"), "--output_dir", str(output_dir), "--dataset", "digits",
        "--num_hidden_layers", "3", "--train_batch_size", "8", "--max_train_steps", "6", "--checkpointing_steps", "2",
        "--logging_steps", "2", "--num_inference_steps", "3", "--samples_per_class", "1", "--report_to", "none",
        "--block_index", "1", *extra,
    ]


def run(output_dir: Path, *extra: str, kill: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(KILL_POINTS), str(ROOT / "src"), env.get("PYTHONPATH")]))
    if kill:
        env["HF_DIFFUSIONBLOCKS_TEST_KILL"] = kill
    return subprocess.run(train_args(output_dir, *extra), env=env, capture_output=True, text=True, timeout=300)


def block_file(output_dir: Path) -> Path:
    return output_dir / "transformer" / "block_1.safetensors"


def temporaries(output_dir: Path) -> list[str]:
    return [str(path) for path in output_dir.rglob(".*") if ".owner-" in path.name]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, torch.Tensor]:
    output_dir = tmp_path_factory.mktemp("uninterrupted")
    result = run(output_dir)
    assert result.returncode == 0, result.stderr[-2000:]
    return load_file(block_file(output_dir))


def assert_resumes_exactly(output_dir: Path, expected: dict[str, torch.Tensor]) -> None:
    result = run(output_dir, "--resume_from_checkpoint", "latest")
    assert result.returncode == 0, result.stderr[-2000:]
    resumed = load_file(block_file(output_dir))
    assert resumed.keys() == expected.keys()
    assert all(torch.equal(resumed[name], expected[name]) for name in expected)
    assert temporaries(output_dir) == []


@pytest.mark.parametrize("kill, resumed_from", [
    ("step:5", 4),                  # inside step 5: checkpoints 2 and 4 are complete
    ("checkpoint_write:2", 2),      # inside the write of checkpoint 4: only checkpoint 2 is complete
    ("final_save:2", 4),            # the final save renamed some of its files into place, then died
    ("final_save:6", 4),            # ... all but the last ones (the block file arrives last: it marks "finished")
])
def test_sigkill_then_resume_is_bit_exact(tmp_path, uninterrupted, kill, resumed_from):
    killed = run(tmp_path, kill=kill)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not block_file(tmp_path).exists() or kill.startswith("final_save")
    if kill.startswith("checkpoint_write"):
        assert temporaries(tmp_path)            # the killed checkpoint's staging folder is left behind ...
    assert_resumes_exactly(tmp_path, uninterrupted)   # ... and removed by the resumed run


@pytest.mark.slow
def test_sigkill_at_random_times_then_resume_is_bit_exact(tmp_path, uninterrupted):
    """Kill at a random moment, resume, kill again ...: wherever the kills land, the result is the same."""
    rng = random.Random(int(os.environ.get("KILL_SEED", "0")))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "PYTHONPATH": str(ROOT / "src")}
    for _ in range(4):
        process = subprocess.Popen(train_args(tmp_path, "--resume_from_checkpoint", "latest"), env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(2.0, 8.0))
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert_resumes_exactly(tmp_path, uninterrupted)
