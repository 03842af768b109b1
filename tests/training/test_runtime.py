"""CPU thread default of the training scripts."""

import pytest
import torch

from hf_diffusionblocks.training.runtime import configure_cpu_threads, default_cpu_threads, run_script


@pytest.mark.parametrize("cpus, processes, expected", [(1, 1, 1), (2, 1, 1), (16, 1, 8), (16, 2, 4), (4, 8, 1)])
def test_default_threads_are_half_the_cpus_shared_by_the_local_processes(cpus, processes, expected):
    assert default_cpu_threads(cpus, processes) == expected


def test_omp_num_threads_and_gpu_runs_are_left_alone(monkeypatch):
    previous = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "3")
        assert configure_cpu_threads("cpu") is None
        monkeypatch.delenv("OMP_NUM_THREADS")
        assert configure_cpu_threads("cuda") is None
        assert torch.get_num_threads() == previous
        threads = configure_cpu_threads("cpu")
        assert threads == default_cpu_threads() and torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(previous)


def test_run_script_turns_bad_input_into_an_argparse_style_error(capsys, monkeypatch):
    def bad_input():
        raise ValueError("--num_blocks must be >= 1, got 0.")

    monkeypatch.delenv("HF_DIFFUSIONBLOCKS_TRACEBACK", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        run_script(bad_input, prog="train_x.py")
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "train_x.py: error: --num_blocks must be >= 1, got 0.\n"
    monkeypatch.setenv("HF_DIFFUSIONBLOCKS_TRACEBACK", "1")
    with pytest.raises(ValueError, match="num_blocks"):
        run_script(bad_input)
    with pytest.raises(RuntimeError):                      # anything else is a bug: its traceback stays
        run_script(lambda: (_ for _ in ()).throw(RuntimeError("bug")))
