"""The benchmark scripts run end to end at their smallest sizes and print their ratio lines.

No timing is asserted (timings belong to the benchmarks themselves); what is checked is that each
script measures both paths in one run and prints a finite, positive ratio in its documented format.
"""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def run_benchmark(script: str, *arguments: str) -> str:
    environment = dict(os.environ, OMP_NUM_THREADS="1", TQDM_DISABLE="1")
    completed = subprocess.run([sys.executable, str(BENCHMARKS / script), *arguments, "--device", "cpu"],
                               capture_output=True, text=True, timeout=600, env=environment)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout


def ratio(output: str, name: str) -> float:
    match = re.search(rf"{name}=([0-9.]+)", output)
    assert match, f"no {name}= in:\n{output}"
    value = float(match.group(1))
    assert math.isfinite(value) and value > 0
    return value


@pytest.mark.parametrize("family, size", [("dit", "XS"), ("mdm", "XS")])
def test_sampling_measures_both_paths(family, size):
    output = run_benchmark("sampling.py", "--family", family, "--size", size, "--num_blocks", "2",
                           "--num_inference_steps", "4", "--batch_size", "1", "--rounds", "1")
    assert "end to end" in output and "block-wise" in output and "ms per sample-step" in output
    ratio(output, "sampling_speedup_blockwise_over_e2e")


def test_sampling_refuses_guidance_for_text():
    completed = subprocess.run([sys.executable, str(BENCHMARKS / "sampling.py"), "--family", "mdm", "--guidance_scale", "2"],
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode != 0 and "--guidance_scale applies to the dit family only" in completed.stderr


def test_step_time_measures_both_paths():
    output = run_benchmark("step_time.py", "--family", "mdm", "--size", "XS", "--num_blocks", "3", "--batch_size", "1",
                           "--steps", "1", "--warmup", "1", "--rounds", "1")
    assert "end-to-end step" in output and "sum of the 3 block steps" in output
    ratio(output, "step_time_ratio_blockwise_sum_over_e2e")


@pytest.mark.slow
def test_memory_measures_both_paths():
    output = run_benchmark("memory.py", "--family", "mdm", "--size", "XS", "--num_blocks", "3", "--batch_size", "1")
    assert ratio(output, "memory_ratio_e2e_over_blockwise") > 1


@pytest.mark.parametrize("script", sorted(path.name for path in BENCHMARKS.glob("*.sh")))
def test_result_scripts_parse(script):
    """The shell scripts behind the README tables are valid bash (they take an hour; only their syntax runs here)."""
    completed = subprocess.run(["bash", "-n", str(BENCHMARKS / script)], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr


@pytest.mark.parametrize("arguments, message", [((), "usage: text_results.sh"), (("gan",), "unknown family gan")])
def test_text_results_rejects_a_missing_or_unknown_family(tmp_path, arguments, message):
    completed = subprocess.run(["bash", str(BENCHMARKS / "text_results.sh"), *arguments], capture_output=True,
                               text=True, env=dict(os.environ, OUT=str(tmp_path / "out")), timeout=60)
    assert completed.returncode != 0 and message in completed.stderr, completed.stderr


@pytest.mark.slow
def test_text_results_mdm_runs_end_to_end_at_a_tiny_size(tmp_path):
    """The README's MDM table command, every run and evaluation, with EXTRA_FLAGS shrinking the model to seconds."""
    tiny = ("--hidden_size 16 --num_attention_heads 2 --sequence_length 32 --train_batch_size 2 --checkpointing_steps 1 "
            "--logging_steps 1 --validation_steps 1 --validation_windows 2 --num_inference_steps 3 --num_samples 1")
    environment = dict(os.environ, OUT=str(tmp_path), EXTRA_FLAGS=tiny, OMP_NUM_THREADS="1",
                       PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    completed = subprocess.run(["bash", str(BENCHMARKS / "text_results.sh"), "mdm", "2"], capture_output=True, text=True,
                               env=environment, timeout=900, cwd=BENCHMARKS.parent)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    summaries = re.findall(r"^BPC ([0-9.]+) ± ([0-9.]+) \(xz -9 ([0-9.]+)\); by t: (.*)$", completed.stdout, re.MULTILINE)
    assert len(summaries) == 3, completed.stdout                      # block-wise, end to end, end to end same compute
    for bpc, _, xz, by_t in summaries:
        strata = [float(value) for value in re.findall(r"\] ([0-9.]+)", by_t)]
        assert len(strata) == 6 and sum(strata) == pytest.approx(float(bpc), abs=0.01)
    assert (tmp_path / "blockwise" / "samples.txt").is_file()
    assert [json.loads((tmp_path / f"{run}.eval.json").read_text())["num_blocks"]
            for run in ("blockwise", "end_to_end", "end_to_end_same_compute")] == [3, 1, 1]


@pytest.mark.parametrize("solver", ["euler", "ancestral"])
def test_generation_measures_both_models_for_every_batch_size_and_decoding(solver):
    output = run_benchmark("generation.py", "--size", "XS", "--num_blocks", "2", "--batch_sizes", "1", "2",
                           "--max_new_tokens", "2", "--prompt_length", "3", "--rounds", "1", "--solver", solver)
    rows = [line.split() for line in output.splitlines() if re.match(r"\s+\d+ (greedy|sampled) ", line)]
    assert [(row[0], row[1]) for row in rows] == [("1", "greedy"), ("1", "sampled"), ("2", "greedy"), ("2", "sampled")]
    assert ratio(output, "generation_tokens_per_second_ratio_blockwise_over_e2e") == min(float(row[-1]) for row in rows)


def test_ar_diagnosis_scores_every_block_every_step_and_the_baseline(tmp_path):
    from hf_diffusionblocks import CharacterTokenizer, DiffusionBlocksCausalLMConfig, DiffusionBlocksForCausalLM

    text = "Shall I compare thee to a summer's day?\nThou art more lovely and more temperate:\n" * 60
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(text)
    tokenizer = CharacterTokenizer.from_corpus(text, pad_token="[PAD]")
    for name, num_blocks in (("bw", 2), ("e2e", 1)):
        config = DiffusionBlocksCausalLMConfig(
            vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=48,
            max_position_embeddings=16, num_blocks=num_blocks, objective="diffusion" if num_blocks > 1 else "next_token",
        )
        DiffusionBlocksForCausalLM(config).save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
    output = run_benchmark("ar_diagnosis.py", "--blockwise_dir", str(tmp_path / "bw"), "--end_to_end_dir", str(tmp_path / "e2e"),
                           "--dataset", str(corpus), "--num_windows", "3", "--batch_size", "2", "--num_inference_steps", "4",
                           "--output_json", str(tmp_path / "rows.json"))
    rows = json.loads((tmp_path / "rows.json").read_text())["rows"]
    assert list(rows)[:3] == ["end to end", "block 0, σ ~ training", "block 1, σ ~ training"]
    assert [name.split(" (")[0] for name in list(rows)[3:]] == [
        "step 1 fresh", "step 1 chain", "step 3 fresh", "step 3 chain", "final z, nearest E row"]   # last step of each block
    assert all(row["tokens"] == 3 * 15 and 0 <= row["accuracy"] <= 1 for row in rows.values())
    uniform = math.log(len(tokenizer))                      # untrained readouts are zero-initialised: uniform logits
    assert all(row["cross_entropy"] == pytest.approx(uniform, rel=1e-4) for name, row in rows.items() if "nearest" not in name)
    assert all(row["target_probability"] == pytest.approx(1 / len(tokenizer), rel=1e-4)
               for name, row in rows.items() if "nearest" not in name)
    assert "final z, nearest E row" in output
    ancestral = run_benchmark("ar_diagnosis.py", "--blockwise_dir", str(tmp_path / "bw"), "--dataset", str(corpus),
                              "--num_windows", "3", "--batch_size", "2", "--num_inference_steps", "4", "--solver", "ancestral",
                              "--output_json", str(tmp_path / "ancestral.json"))
    assert "solver ancestral" in ancestral
    assert list(json.loads((tmp_path / "ancestral.json").read_text())["rows"]) == list(rows)[1:]


def test_ar_ablations_table_reads_the_evaluations_and_diagnoses(tmp_path):
    def result(name, mauve, perplexity):
        return {"name": name, "mauve": {"mauve": mauve, "mauve_std": 0.01}, "generative_perplexity": {"generative_perplexity": perplexity}}

    human = result("human (other places)", 0.97, 30.0)
    (tmp_path / "ar-end_to_end.eval.json").write_text(json.dumps({"results": [human, result("end_to_end (sample)", 0.4, 39.0)]}))
    (tmp_path / "ar-blockwise.eval.json").write_text(json.dumps(
        {"results": [human, result("blockwise (greedy, euler)", 0.03, 488.0), result("blockwise (greedy, ancestral)", 0.14, 129.0)]}))
    for solver, accuracy in (("euler", 0.076), ("ancestral", 0.086)):
        rows = {"end to end": {"accuracy": 0.237, "target_probability": 0.138},
                "step 0 fresh (block 0, σ=80)": {"accuracy": 0.19, "target_probability": 0.087},
                "final z, nearest E row": {"accuracy": accuracy, "target_probability": None}}
        (tmp_path / f"ar-blockwise.diagnosis-{solver}.json").write_text(json.dumps(
            {"arguments": {"end_to_end_dir": str(tmp_path / "ar-end_to_end")}, "rows": rows}))
    completed = subprocess.run([sys.executable, str(BENCHMARKS / "ar_ablations_table.py"), str(tmp_path)],
                               capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    output = completed.stdout
    lines = [line for line in output.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert lines == [
        "| human continuations (other places) | — | 0.970 ± 0.010 | 30.0 | | |",
        "| end_to_end | sample | 0.400 ± 0.010 | 39.0 | 13.8% (its readout) | 23.7% (greedy) |",
        "| blockwise | greedy, euler | 0.030 ± 0.010 | 488.0 | 8.7% | 7.6% |",
        "| blockwise | greedy, ancestral | 0.140 ± 0.010 | 129.0 | 8.7% | 8.6% |",
    ]
