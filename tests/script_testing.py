"""Helpers shared by the tests of `examples/*.py`: load a script as a module, kill a run mid-training
and check that resuming gives the weights of an uninterrupted run."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Callable

import pytest
import torch
from safetensors.torch import load_file

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"



def _fid_weights_installed() -> bool:
    from hf_diffusionblocks.metrics.inception import find_fid_weights

    try:
        find_fid_weights()
    except FileNotFoundError:
        return False
    return True


requires_fid_weights = pytest.mark.skipif(not _fid_weights_installed(), reason="needs the standard FID's weights (the `fid` extra)")

def load_script(name: str):
    """`examples/<name>.py` as a fresh module (its `main(argv)` is the script)."""
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def block_weights(model_dir: Path, block_index: int) -> dict[str, torch.Tensor]:
    return load_file(Path(model_dir) / f"block_{block_index}.safetensors")


def check_kill_and_exact_resume(
    script,
    task_class: type,
    run_args: Callable[..., list[str]],
    tmp_path: Path,
    *,
    block_index: int,
    weights_subfolder: str = "",
    kill_at_call: int = 4,
    checkpoint_step: int = 2,
) -> None:
    """Train block `block_index` uninterrupted; train it again, killed (KeyboardInterrupt) at the
    `kill_at_call`-th loss call; resume with `--resume_from_checkpoint latest`. The resumed run starts
    from `checkpoint_step`, ends with bit-identical weights, and a further resume skips the block.

    `run_args(output_dir, *extra)` builds the script's argument list.
    """
    uninterrupted, interrupted = tmp_path / "uninterrupted", tmp_path / "interrupted"
    script.main(run_args(uninterrupted))
    original_loss, calls = task_class.loss, {"count": 0}

    def crashing_loss(self, *args, **kwargs):
        calls["count"] += 1
        if calls["count"] == kill_at_call:
            raise KeyboardInterrupt("simulated kill")
        return original_loss(self, *args, **kwargs)

    task_class.loss = crashing_loss
    try:
        with pytest.raises(KeyboardInterrupt):
            script.main(run_args(interrupted))
    finally:
        task_class.loss = original_loss
    block_file = interrupted / weights_subfolder / f"block_{block_index}.safetensors"
    assert not block_file.exists()                                  # nothing half-written
    checkpoint = interrupted / "checkpoints" / f"block_{block_index}" / f"checkpoint-{checkpoint_step}"
    assert (checkpoint / "trainer_state.json").is_file()

    summary = script.main(run_args(interrupted, "--resume_from_checkpoint", "latest"))
    assert summary["blocks"][0]["resumed_from"] == checkpoint_step
    expected = block_weights(uninterrupted / weights_subfolder, block_index)
    resumed = block_weights(interrupted / weights_subfolder, block_index)
    assert expected.keys() == resumed.keys()
    for name in expected:
        assert torch.equal(expected[name], resumed[name]), name
    again = script.main(run_args(interrupted, "--resume_from_checkpoint", "latest"))
    assert again["blocks"][0]["skipped"]


def check_model_card(output_dir: Path, *, pipeline_tag: str, steps: str, dataset: str, training_mode: str,
                     metrics: tuple[str, ...] = ()):
    """`output_dir/README.md` is the family's card: its Hub `pipeline_tag`, the data, the training mode, the
    sampling call's default step count (`steps`, e.g. "num_inference_steps=128") and the named metrics."""
    from huggingface_hub import ModelCard

    card = ModelCard.load(Path(output_dir) / "README.md")
    assert card.data.pipeline_tag == pipeline_tag
    assert card.data.datasets == [dataset]
    assert f"**Training mode:** `{training_mode}`" in card.text
    assert f"(`{steps}`)" in card.text
    for name in metrics:
        assert f"| {name} |" in card.text
    return card


def check_pushed_repo(hub, repo_id: str, output_dir: Path, *, component_folders: tuple[str, ...] = ()) -> list[str]:
    """The repo a `--push_to_hub` run left: exactly the local folder's shared files and blocks, bit-identical,
    with the model card and the remote-code module at the root and in every component folder (what
    `trust_remote_code=True` loading imports)."""
    from fake_hub import repo_matches_folder

    files = repo_matches_folder(hub, repo_id, output_dir)
    assert "README.md" in files
    for folder in ("", *component_folders):
        assert f"{folder}/hf_diffusionblocks_classes.py".lstrip("/") in files
    return files
