"""CPU thread default of the training scripts."""

import pytest
import torch

from hf_diffusionblocks.training.runtime import configure_cpu_threads, default_cpu_threads


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
