"""benchmarks/dit28_results.sh at a tiny size: every model trained and evaluated, the table printed, nothing redone."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hf_diffusionblocks.data.images import FASHION_MNIST_DIR

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="needs the Debian package dataset-fashion-mnist")
def test_the_script_prints_the_table_of_every_model(tmp_path):
    environment = dict(os.environ, OMP_NUM_THREADS="1", TQDM_DISABLE="1", OUTPUT_ROOT=str(tmp_path), PYTHON=sys.executable,
                       CLASSIFIER_TRAIN_SIZE="300", LOSS_IMAGES="10")
    command = ["bash", str(ROOT / "benchmarks" / "dit28_results.sh"), "4", "XS", "8", "7", "7", "uniform_log,equal_total_high"]
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1200, env=environment)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    lines = completed.stdout.splitlines()
    rows = [line for line in lines[lines.index("| model | training steps | FD (feature classifier) | loss σ-interval 0 (high) "
                                                "| 1 | 2 (low) | total loss |"):] if line.startswith("| ")]
    names = [row.split("|")[1].strip() for row in rows[1:6]]
    assert names == ["blockwise-equiprobable", "end-to-end-equal-compute", "end-to-end-equal-steps", "blockwise-uniform-log",
                     "blockwise-steps-6-3-3"]
    steps = [row.split("|")[2].strip() for row in rows[1:6]]
    assert steps == ["4+4+4", "4", "12", "4+4+4", "6+3+3"]               # uneven steps: 3N in total, half on block 0
    differences = [row.split("|")[1].strip() for row in rows[7:]]  # the paired table, the reference left out
    assert differences == ["blockwise-equiprobable", "end-to-end-equal-steps", "blockwise-uniform-log", "blockwise-steps-6-3-3"]
    assert re.search(r"FD: 70 generated vs 10000 test images", completed.stdout)
    assert re.search(r"real data: 70 training images \(7 per class, seed 0\) vs the test images: FD [0-9.]+", completed.stdout)
    for name in names:
        assert (tmp_path / f"fmnist28-{name}" / "samples.png").is_file()
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, env=environment)
    assert again.returncode == 0 and "already trained" in again.stdout and "evaluated in" not in again.stdout
    assert [line for line in again.stdout.splitlines() if line.startswith("| ")] == [
        line for line in completed.stdout.splitlines() if line.startswith("| ")]
    # FID_SAMPLES adds the standard FID: the models evaluated without it are evaluated again, once.
    with_fid = dict(environment, FID_SAMPLES="20")
    fid = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1200, env=with_fid)
    assert fid.returncode == 0, fid.stdout[-3000:] + fid.stderr[-3000:]
    assert fid.stdout.count("evaluated in") == 5 and "train " not in fid.stdout
    fid_rows = [line for line in fid.stdout.splitlines() if line.startswith("| ")]
    assert fid_rows[0].startswith("| model | training steps | FD (feature classifier) | FID (Inception) | loss")
    assert all(re.search(r"\| [0-9.]+ \(N = 20\) \|", row) for row in fid_rows[1:6])
    once = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, env=with_fid)
    assert once.returncode == 0 and "evaluated in" not in once.stdout
    assert [line for line in once.stdout.splitlines() if line.startswith("| ")] == fid_rows
