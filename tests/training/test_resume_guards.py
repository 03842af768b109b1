"""Resuming under other flags, or training into a folder of another model, stops at start-up with the field named."""

import json
import os
import shutil

import pytest

from script_testing import load_script


def tiny_args(output_dir, *extra):
    return [
        "--output_dir", str(output_dir), "--dataset", "digits", "--num_hidden_layers", "3",
        "--train_batch_size", "8", "--max_train_steps", "4", "--logging_steps", "2", "--checkpointing_steps", "2",
        "--num_inference_steps", "3", "--samples_per_class", "1", "--report_to", "none", "--block_index", "1", *extra,
    ]


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory):
    """Block 1 trained to step 4 with a checkpoint at step 2, whose final block file is then lost (as in a kill)."""
    output_dir = tmp_path_factory.mktemp("interrupted")
    load_script("train_dit").main(tiny_args(output_dir))
    os.remove(output_dir / "transformer" / "block_1.safetensors")
    assert (output_dir / "checkpoints" / "block_1" / "checkpoint-2").is_dir()
    return output_dir


def test_fewer_steps_than_the_checkpoint_are_refused(interrupted_run):
    with pytest.raises(ValueError, match=r"--max_train_steps=1 is below the step of the checkpoint to resume \(2"):
        load_script("train_dit").main(tiny_args(interrupted_run, "--max_train_steps", "1", "--resume_from_checkpoint", "latest"))
    assert not (interrupted_run / "transformer" / "block_1.safetensors").exists()


@pytest.mark.parametrize("flag, value, field", [
    ("--learning_rate", "0.01", "learning_rate"),
    ("--train_batch_size", "4", "train_batch_size"),
    ("--seed", "3", "seed"),
    ("--max_train_steps", "6", "max_train_steps"),          # the default schedule depends on the total
])
def test_changed_optimisation_flags_are_refused_on_resume(interrupted_run, flag, value, field):
    with pytest.raises(ValueError, match=rf"resume_from_checkpoint: .*checkpoint-2 was written by a run with other settings \({field}: "):
        load_script("train_dit").main(tiny_args(interrupted_run, flag, value, "--resume_from_checkpoint", "latest"))
    assert not (interrupted_run / "transformer" / "block_1.safetensors").exists()


def test_a_changed_architecture_is_refused_before_training(tmp_path):
    script = load_script("train_dit")
    script.main(tiny_args(tmp_path, "--block_index", "0"))
    before = sorted(os.listdir(tmp_path / "transformer"))
    with pytest.raises(ValueError, match=r"--output_dir: .*config\.json holds a model with another configuration \(num_hidden_layers: saved 3 vs now 6"):
        script.main(tiny_args(tmp_path, "--block_index", "1", "--num_hidden_layers", "6"))
    assert sorted(os.listdir(tmp_path / "transformer")) == before


def test_the_same_layer_split_written_out_resumes(tmp_path):
    """`--layers_per_block 1 1 1` is the even split a run without the flag used: equal values, not a new model."""
    script = load_script("train_dit")
    script.main(tiny_args(tmp_path))
    os.remove(tmp_path / "transformer" / "block_1.safetensors")
    summary = script.main(tiny_args(tmp_path, "--layers_per_block", "1", "1", "1", "--resume_from_checkpoint", "latest"))
    assert summary["blocks"][0]["resumed_from"] == 2
    with pytest.raises(ValueError, match=r"another configuration \(layers_per_block: saved .* vs now \[2, 1, 1\], "
                                         r"num_hidden_layers: saved 3 vs now 4"):
        script.main(tiny_args(tmp_path, "--num_hidden_layers", "4", "--layers_per_block", "2", "1", "1"))


def drop_settings(state: dict) -> None:
    del state["settings"]


def edit_json_file(name, edit):
    def tamper(checkpoint):
        payload = json.loads((checkpoint / name).read_text())
        edit(payload)
        (checkpoint / name).write_text(json.dumps(payload))
    return tamper


def flip_a_bit(name):
    def tamper(checkpoint):
        data = bytearray((checkpoint / name).read_bytes())
        data[-3] ^= 0x01
        (checkpoint / name).write_bytes(bytes(data))
    return tamper


def set_learning_rate(structure: dict) -> None:
    structure["optimizer"]["param_groups"][0]["lr"] = 1000.0


@pytest.mark.parametrize("tamper, message", [
    (edit_json_file("trainer_state.json", drop_settings), r"trainer_state\.json records no settings \(a checkpoint of an older version"),
    (edit_json_file("trainer_state.json", lambda state: state.update(step=None)), r"trainer_state\.json records step=None, but the checkpoint is step=2"),
    (edit_json_file("training_state.json", set_learning_rate), r"training_state\.json and training_state\.safetensors do not match the state_sha256"),
    (flip_a_bit("training_state.safetensors"), r"training_state\.json and training_state\.safetensors do not match the state_sha256"),
], ids=["old trainer_state without settings", "trainer_state step null", "training_state lr edited", "training_state bit flipped"])
def test_an_edited_or_old_checkpoint_is_refused_naming_the_file(interrupted_run, tmp_path, tamper, message):
    output_dir = tmp_path / "run"
    shutil.copytree(interrupted_run, output_dir)
    tamper(output_dir / "checkpoints" / "block_1" / "checkpoint-2")
    with pytest.raises(ValueError, match=message):
        load_script("train_dit").main(tiny_args(output_dir, "--resume_from_checkpoint", "latest"))
    assert not (output_dir / "transformer" / "block_1.safetensors").exists()
