"""training_state: optimizer / schedule / scaler state round-trips bit-exactly with no pickle anywhere."""

import json
import os
import pickle

import pytest
import torch
from diffusers.optimization import get_scheduler

from hf_diffusionblocks.training.checkpointing import BlockCheckpointManager
from hf_diffusionblocks.training.training_state import (
    LEGACY_PICKLE_NAME,
    STRUCTURE_NAME,
    TENSORS_NAME,
    load_training_state,
    save_training_state,
)


def trained_optimization():
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.01)
    schedule = get_scheduler("cosine", optimizer=optimizer, num_warmup_steps=2, num_training_steps=10)
    scaler = torch.amp.GradScaler("cpu", enabled=True)
    for _ in range(3):
        layer(torch.randn(5, 4)).square().mean().backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
    return layer, optimizer, schedule, scaler


def test_round_trip_is_exact_and_resumes_identically(tmp_path):
    layer, optimizer, schedule, scaler = trained_optimization()
    state = {"optimizer": optimizer.state_dict(), "lr_schedule": schedule.state_dict(), "scaler": scaler.state_dict()}
    save_training_state(tmp_path, state)
    assert sorted(os.listdir(tmp_path)) == [STRUCTURE_NAME, TENSORS_NAME]
    loaded = load_training_state(tmp_path)

    assert loaded["lr_schedule"] == state["lr_schedule"]
    assert loaded["scaler"] == state["scaler"]
    assert loaded["optimizer"]["param_groups"] == state["optimizer"]["param_groups"]
    assert isinstance(loaded["optimizer"]["param_groups"][0]["betas"], tuple)          # tuples survive
    assert set(loaded["optimizer"]["state"]) == {0, 1}                                 # int keys survive
    for index, values in state["optimizer"]["state"].items():
        for name, tensor in values.items():
            assert torch.equal(loaded["optimizer"]["state"][index][name], tensor)
            assert loaded["optimizer"]["state"][index][name].dtype == tensor.dtype

    # a copy restored from disk takes the same next step as the original
    copy = torch.nn.Linear(4, 3)
    copy.load_state_dict(layer.state_dict())
    copy_optimizer = torch.optim.AdamW(copy.parameters(), lr=1e-3)
    copy_schedule = get_scheduler("cosine", optimizer=copy_optimizer, num_warmup_steps=2, num_training_steps=10)
    copy_optimizer.load_state_dict(loaded["optimizer"])
    copy_schedule.load_state_dict(loaded["lr_schedule"])
    batch = torch.randn(5, 4)
    for model, opt, sched in ((layer, optimizer, schedule), (copy, copy_optimizer, copy_schedule)):
        model(batch).square().mean().backward()
        opt.step()
        sched.step()
    assert torch.equal(layer.weight, copy.weight) and torch.equal(layer.bias, copy.bias)


def test_awkward_values_round_trip(tmp_path):
    state = {
        "nan": float("nan"), "inf": float("-inf"), "tiny": 5e-324, "none": None, "flag": True,
        "nested": ({1: "a", (2, 3): [1.5, torch.arange(3)]},),
        "marker_lookalike": {"__tensor__": "t0"},        # a user dict that looks like an encoded tensor
    }
    save_training_state(tmp_path, state)
    loaded = load_training_state(tmp_path)
    assert loaded["nan"] != loaded["nan"] and loaded["inf"] == float("-inf") and loaded["tiny"] == 5e-324
    assert loaded["none"] is None and loaded["flag"] is True
    assert loaded["nested"][0][1] == "a" and torch.equal(loaded["nested"][0][(2, 3)][1], torch.arange(3))
    assert loaded["marker_lookalike"] == {"__tensor__": "t0"}


def test_objects_that_need_pickle_are_refused_with_their_place(tmp_path):
    with pytest.raises(TypeError, match=r"training_state\.lr_schedule\.lr_lambdas\[0\] is a function"):
        save_training_state(tmp_path, {"lr_schedule": {"lr_lambdas": [lambda step: 1.0]}})


class _Payload:
    """Unpickling this object creates a file: proof that code ran."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_malicious_pickle_in_a_checkpoint_is_refused_without_running(tmp_path):
    manager = BlockCheckpointManager(str(tmp_path), block_index=0)
    checkpoint = tmp_path / "checkpoints" / "block_0" / "checkpoint-5"
    checkpoint.mkdir(parents=True)
    (checkpoint / "block_0.safetensors").write_bytes(b"")
    (checkpoint / "trainer_state.json").write_text(json.dumps({"step": 5, "block_index": 0}))
    marker = tmp_path / "payload-ran"
    with open(checkpoint / LEGACY_PICKLE_NAME, "wb") as file:
        pickle.dump({"optimizer": _Payload(str(marker))}, file)

    found = manager.latest()
    with pytest.raises(ValueError, match=r"training_state\.pt, a pickle .* not read"):
        found.load_training_state()
    assert not marker.exists()


def test_corrupt_state_files_are_named(tmp_path):
    save_training_state(tmp_path, {"x": torch.ones(2)})
    (tmp_path / TENSORS_NAME).write_bytes((tmp_path / TENSORS_NAME).read_bytes()[:20])
    with pytest.raises(ValueError, match=rf"{TENSORS_NAME} cannot be read"):
        load_training_state(tmp_path)
    (tmp_path / STRUCTURE_NAME).write_text("{not json")
    with pytest.raises(ValueError, match=rf"{STRUCTURE_NAME} is not valid JSON"):
        load_training_state(tmp_path)
    os.remove(tmp_path / TENSORS_NAME)
    with pytest.raises(ValueError, match="not a complete training checkpoint"):
        load_training_state(tmp_path)


def test_the_state_checks_its_checksum(tmp_path):
    """A flipped bit in the tensors or an edited number in the JSON is refused naming the files."""
    layer, optimizer, schedule, scaler = trained_optimization()
    state = {"optimizer": optimizer.state_dict(), "lr_schedule": schedule.state_dict(), "scaler": scaler.state_dict()}
    save_training_state(tmp_path, state)
    intact = {name: (tmp_path / name).read_bytes() for name in (STRUCTURE_NAME, TENSORS_NAME)}
    load_training_state(tmp_path)

    data = bytearray(intact[TENSORS_NAME])
    data[-3] ^= 0x01
    (tmp_path / TENSORS_NAME).write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"{STRUCTURE_NAME} and {TENSORS_NAME} do not match the state_sha256"):
        load_training_state(tmp_path)
    (tmp_path / TENSORS_NAME).write_bytes(intact[TENSORS_NAME])

    for edit in (lambda s: s["optimizer"]["param_groups"][0].update(lr=1000.0),
                 lambda s: s["lr_schedule"].update(base_lrs=[1000.0]),
                 lambda s: s["lr_schedule"].update(last_epoch=None)):
        structure = json.loads(intact[STRUCTURE_NAME])
        edit(structure)
        (tmp_path / STRUCTURE_NAME).write_text(json.dumps(structure))
        with pytest.raises(ValueError, match=rf"{tmp_path}/{STRUCTURE_NAME} and {TENSORS_NAME} do not match"):
            load_training_state(tmp_path)
