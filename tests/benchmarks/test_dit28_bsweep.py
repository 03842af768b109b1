"""benchmarks/dit28_bsweep.sh at a tiny size on the digits: every row trained and evaluated (standard FID, feature
classifier distance, the paired loss by σ interval), the table printed, nothing redone on a second run."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from script_testing import requires_fid_weights

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@requires_fid_weights
def test_the_sweep_prints_every_row_at_both_protocols(tmp_path):
    environment = dict(os.environ, OMP_NUM_THREADS="1", TQDM_DISABLE="1", OUTPUT_ROOT=str(tmp_path), PYTHON=sys.executable,
                       DATASET="digits", HIDDEN="16", HEADS="2", PATCH="2", FID_SAMPLES="12", SAMPLES_PER_CLASS="2",
                       LOSS_IMAGES="12")
    command = ["bash", str(ROOT / "benchmarks" / "dit28_bsweep.sh"), "2", "8", "0"]
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1500, env=environment)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    rows = [line.split("|") for line in completed.stdout.splitlines() if line.startswith("| ") and "---" not in line][1:]
    names = [row[1].strip() for row in rows]
    assert names == ["end-to-end-N-seed0", "blockwise-B2-seed0", "blockwise-B3-seed0", "blockwise-B4-seed0", "end-to-end-2N",
                     "end-to-end-3N", "end-to-end-4N", "blockwise-B3-layers-6-3-3", "blockwise-B3-steps-2-1-1"]
    assert [row[2].strip() for row in rows] == ["2", "2+2", "2+2+2", "2+2+2+2", "4", "6", "8", "2+2+2", "4+2+2"]
    # the loss split has as many intervals as the row's B, each paired with the same-seed end-to-end model
    assert [len(row[5].split(" / ")) for row in rows[1:]] == [2, 3, 4, 2, 3, 4, 3, 3]
    assert "FID: 12 generated vs as many test images" in completed.stdout
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, env=environment)
    assert again.returncode == 0 and "already trained" in again.stdout
    assert not re.search(r"^== \S+ (train|evaluate) ", again.stdout, flags=re.M), "a finished row was redone"
