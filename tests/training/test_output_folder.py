"""BlockOutputFolder: where a finished block is written, when it is uploaded, how a resumed run finds it."""

from types import SimpleNamespace

import torch

import hf_diffusionblocks.training.output_folder as output_folder
from hf_diffusionblocks.modeling.block_checkpoint import save_block_file
from hf_diffusionblocks.training.output_folder import (
    DEFAULT_HUB_COMMIT_MESSAGE,
    BlockOutputFolder,
    HubTarget,
    finished_block_steps,
    present_blocks,
)


class RecordingModel:
    """What save_block touches of a model: its per-block steps and save_pretrained."""

    def __init__(self):
        self.block_training_steps = {}
        self.saved = []

    def save_pretrained(self, directory, block_indices):
        self.saved.append((directory, block_indices, dict(self.block_training_steps)))


def write_block(directory, block_index, training_steps):
    directory.mkdir(parents=True, exist_ok=True)
    save_block_file(str(directory / f"block_{block_index}.safetensors"), {"weight": torch.zeros(2)},
                    block_index=block_index, num_blocks=3, config_dict={}, training_steps=training_steps)


def test_hub_target_exists_only_when_the_run_pushes():
    pushing = SimpleNamespace(push_to_hub=True, hub_model_id="org/model", hub_token="secret")
    assert HubTarget.from_args(pushing) == HubTarget("org/model", "secret")
    assert HubTarget.from_args(SimpleNamespace(push_to_hub=False, hub_model_id="org/model", hub_token=None)) is None


def test_finished_steps_and_present_blocks_read_the_block_files(tmp_path):
    folder = BlockOutputFolder(str(tmp_path), weights_subfolder="transformer")
    assert folder.model_dir == str(tmp_path / "transformer")
    assert folder.finished_steps(1) is None
    write_block(tmp_path / "transformer", 1, 12)
    write_block(tmp_path / "transformer", 2, 7)
    assert folder.finished_steps(1) == 12 and folder.finished_steps(0) is None
    assert finished_block_steps(str(tmp_path / "transformer"), 2) == 7
    assert present_blocks(folder.model_dir, 3) == [1, 2]
    assert BlockOutputFolder(str(tmp_path)).finished_steps(1) is None      # another subfolder, another folder


def test_save_block_records_the_steps_writes_then_publishes(tmp_path, monkeypatch):
    pushed = []
    monkeypatch.setattr(output_folder, "push_shared_files_and_block",
                        lambda folder, repo_id, block_index, **kwargs: pushed.append((folder, repo_id, block_index, kwargs)))
    model = RecordingModel()
    BlockOutputFolder(str(tmp_path)).save_block(model, 2, 30)
    assert model.saved == [(str(tmp_path), [2], {2: 30})] and pushed == []    # no Hub target: nothing uploaded

    folder = BlockOutputFolder(str(tmp_path), weights_subfolder="lora", hub=HubTarget("org/model", "token"),
                               hub_commit_message="Upload config and index")
    folder.save_block(model, 0, 5)
    assert model.saved[-1] == (str(tmp_path), [0], {2: 30, 0: 5})
    assert pushed == [(str(tmp_path), "org/model", 0,
                       {"subfolder": "lora", "token": "token", "commit_message": "Upload config and index"})]
    folder.publish_block(1)                                     # what a resumed run does for a finished block
    assert pushed[-1][2] == 1


def test_a_task_overrides_only_what_its_folder_holds_beyond_the_block(tmp_path, monkeypatch):
    written = []

    class PipelineFolder(BlockOutputFolder):
        def save_outputs(self, model, block_index):
            written.append(("pipeline", block_index, model.block_training_steps[block_index]))

    pushed = []
    monkeypatch.setattr(output_folder, "push_shared_files_and_block", lambda *args, **kwargs: pushed.append(kwargs))
    PipelineFolder(str(tmp_path), weights_subfolder="transformer", hub=HubTarget("org/model")).save_block(RecordingModel(), 1, 9)
    assert written == [("pipeline", 1, 9)]
    assert pushed == [{"subfolder": "transformer", "token": None, "commit_message": DEFAULT_HUB_COMMIT_MESSAGE}]
