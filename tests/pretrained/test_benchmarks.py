"""The pretrained benchmarks run end to end at tiny sizes (slow: subprocesses, pretraining)."""

import importlib.util
import math
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load_benchmark(name):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_memory_and_speed_benchmark_reports_every_ratio():
    summary = load_benchmark("pretrained_memory").main([
        "--hidden_size", "32", "--num_heads", "2", "--num_layers", "4", "--num_blocks", "2", "4", "--sample_size", "8",
        "--batch_size", "1", "--steps", "1", "--sampling_steps", "4", "--repeats", "1"])
    assert set(summary["memory"]) == {f"{mode}_B{b}" for mode in ("full", "lora") for b in (1, 2, 4)}
    assert summary["memory"]["full_B1"]["accounted_ratio"] == 1.0
    # accounted bytes fall with B (tensor sizes, not timings)
    assert summary["memory"]["full_B4"]["accounted_ratio"] > summary["memory"]["full_B2"]["accounted_ratio"] > 1
    assert all(math.isfinite(value) and value > 0 for ratios in summary["speed"].values() for value in ratios.values())


@pytest.mark.slow
def test_quality_benchmark_runs_every_arm(tmp_path):
    results = load_benchmark("pretrained_quality").main([
        "--output_dir", str(tmp_path), "--hidden_size", "16", "--num_heads", "2", "--num_layers", "3", "--num_blocks", "3",
        "--pretrain_steps", "4", "--finetune_steps", "3", "--batch_size", "8", "--sampling_steps", "3"])
    arms = [name for name in results if name.startswith("(")]
    assert len(arms) == 6 and all(math.isfinite(results[name]) for name in arms)
    assert (tmp_path / "samples_S3_lr0.0002_0.png").is_file()


@pytest.mark.slow
def test_init_benchmark_reports_every_init_and_budget(tmp_path):
    results = load_benchmark("pretrained_init").main([
        "--output_dir", str(tmp_path), "--hidden_size", "16", "--num_heads", "2", "--num_layers", "3", "--num_blocks", "3",
        "--pretrain_steps", "4", "--finetune_steps", "8", "--batch_size", "8", "--sampling_steps", "3", "--num_samples", "20"])
    assert list(results) == ["source (pretrained)"] + [
        f"{init}, {budget}" for init in ("contiguous", "strided") for budget in ("step 0", "native 1/block", "native 2/block", "native 8/block")]
    assert all(math.isfinite(value) for value in results.values())


@pytest.mark.slow
def test_baselines_benchmark_measures_every_row_and_method(tmp_path):
    summary = load_benchmark("pretrained_baselines").main([
        "--hidden_size", "32", "--num_heads", "2", "--num_layers", "4", "--sample_size", "8", "--batch_size", "1",
        "--num_blocks", "2", "4", "--steps", "2", "--quality_dir", str(tmp_path), "--pretrain_steps", "4",
        "--quality_steps", "3", "--sampling_steps", "3"])
    memory = summary["memory"]
    assert len(memory) == 7 + 2 * 4
    measured = {row: result for row, result in memory.items() if "error" not in result}
    # every row but the optional ones (8-bit packages, group offloading a class may refuse) is measured
    assert set(memory) - set(measured) <= {"e2e:full:bnb8", "e2e:full:torchao8", "e2e:full:offload"}
    assert all(result["trainable_with_gradient"] for result in measured.values())
    accounted = {row: result["accounted_bytes"] for row, result in measured.items()}
    # tensor sizes, not timings: checkpointing keeps the same tensors; a block holds fewer than the whole model
    assert accounted["e2e:full:gc"] == accounted["e2e:full"] and accounted["b2:lora:gc"] == accounted["b2:lora"]
    assert accounted["e2e:full"] > accounted["b2:full"] > accounted["b4:full"]
    for row in ("e2e:full:bnb8", "e2e:full:torchao8"):
        if row in measured:
            assert measured[row]["optimizer_state_bytes"] < measured["e2e:full"]["optimizer_state_bytes"]
    quality = summary["quality"]
    assert all(math.isfinite(result["frechet_classifier_distance"]) for result in quality.values())
    plain, checkpointed = quality["end to end, full, 3 steps"], quality["end to end, full + grad. checkpointing, 3 steps"]
    assert math.isclose(plain["frechet_classifier_distance"], checkpointed["frechet_classifier_distance"], rel_tol=1e-3)
    assert (tmp_path / "results.json").is_file()
