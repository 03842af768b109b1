"""--gradient_accumulation_steps and --use_ema in the shared trainer, through examples/train_dit.py."""

import pytest
import torch

from hf_diffusionblocks.training.image_task import DiTTrainingTask
from script_testing import block_weights, check_kill_and_exact_resume, load_script


def tiny_args(output_dir, *extra):
    return [
        "--output_dir", str(output_dir), "--dataset", "digits", "--num_hidden_layers", "3", "--train_batch_size", "4",
        "--max_train_steps", "4", "--logging_steps", "2", "--checkpointing_steps", "2", "--lr_warmup_steps", "0",
        "--num_inference_steps", "3", "--samples_per_class", "1", "--report_to", "none", "--block_index", "1", *extra,
    ]


def weights(output_dir):
    return block_weights(output_dir / "transformer", 1)


def test_accumulation_runs_k_passes_per_step_on_distinct_batches(tmp_path):
    script = load_script("train_dit")
    seen, original = [], DiTTrainingTask.get_batch

    def recording_get_batch(self, indices, device):
        seen.append(indices.tolist())
        return original(self, indices, device)

    DiTTrainingTask.get_batch = recording_get_batch
    try:
        summary = script.main(tiny_args(tmp_path / "k2", "--gradient_accumulation_steps", "2"))
    finally:
        DiTTrainingTask.get_batch = original
    assert summary["blocks"][0]["steps"] == 4
    training_batches = [batch for batch in seen if len(batch) == 4]
    assert len(training_batches) == 8                                  # 2 passes for each of 4 steps
    assert len({tuple(batch) for batch in training_batches}) == 8      # each pass its own examples
    script.main(tiny_args(tmp_path / "k1"))
    assert not torch.equal(weights(tmp_path / "k2")["blocks.1.final_layer.linear.weight"],
                           weights(tmp_path / "k1")["blocks.1.final_layer.linear.weight"])


@pytest.mark.parametrize("extra", [["--gradient_accumulation_steps", "2"], ["--use_ema"]])
def test_kill_and_resume_stays_exact(tmp_path, extra):
    script = load_script("train_dit")
    check_kill_and_exact_resume(script, DiTTrainingTask, lambda out, *more: tiny_args(out, *extra, *more),
                                tmp_path, block_index=1, weights_subfolder="transformer",
                                kill_at_call=6 if extra[0] == "--gradient_accumulation_steps" else 4)


def test_ema_weights_are_saved_and_decay_zero_gives_the_last_weights(tmp_path):
    script = load_script("train_dit")
    script.main(tiny_args(tmp_path / "plain"))
    script.main(tiny_args(tmp_path / "ema", "--use_ema"))
    script.main(tiny_args(tmp_path / "ema0", "--use_ema", "--ema_decay", "0"))
    plain, ema, ema0 = weights(tmp_path / "plain"), weights(tmp_path / "ema"), weights(tmp_path / "ema0")
    name = "blocks.1.final_layer.linear.weight"
    assert not torch.equal(plain[name], ema[name])                     # the average, not the last iterate
    for key in plain:
        torch.testing.assert_close(ema0[key], plain[key], rtol=0, atol=1e-6)


def test_bad_values_are_named(tmp_path):
    script = load_script("train_dit")
    with pytest.raises(ValueError, match="--gradient_accumulation_steps must be >= 1, got 0"):
        script.main(tiny_args(tmp_path, "--gradient_accumulation_steps", "0"))
    with pytest.raises(ValueError, match=r"--ema_decay must be in \[0, 1\) \(a finite number\), got 1.0"):
        script.main(tiny_args(tmp_path, "--use_ema", "--ema_decay", "1.0"))
