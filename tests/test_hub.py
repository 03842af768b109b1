"""Per-block Hub upload and per-block loading from the Hub cache, against the in-process fake Hub
(`fake_hub.py`): the real client code runs end to end; only the network is replaced.
"""

from __future__ import annotations

import json
import os
import threading

import pytest
import torch
from conftest import randomize_
from fake_hub import REPO_ID, TOKEN, FakeHub, go_offline, repo_matches_folder

from hf_diffusionblocks import (
    DiffusionBlocksDiTModel,
    DiffusionBlocksImagePipeline,
    DiffusionBlocksScheduler,
)
from hf_diffusionblocks.hub import (
    push_block_to_hub,
    push_folder_to_hub,
    push_root_files_to_hub,
    root_files,
)
from hf_diffusionblocks.hub_download import HubOptions, read_safetensors_header


@pytest.fixture
def pipeline_folder(tmp_path, tiny_dit_config):
    """A pipeline folder as training writes it (3 blocks, with training steps, and a model card)."""
    model = randomize_(DiffusionBlocksDiTModel(tiny_dit_config))
    pipeline = DiffusionBlocksImagePipeline(
        model, DiffusionBlocksScheduler(**tiny_dit_config.scheduler_kwargs())
    )
    folder = tmp_path / "pipeline"
    pipeline.save_pretrained(folder)
    model.save_pretrained(folder / "transformer", training_steps={0: 10, 1: 20, 2: 30})
    (folder / "README.md").write_text("---\nlibrary_name: hf-diffusionblocks\n---\n# tiny\n")
    (folder / "transformer" / ".block_0.safetensors.abc.tmp").write_bytes(b"half-written")
    return folder


# ---- uploads -------------------------------------------------------------------------------------


def test_root_files_are_everything_but_block_weights(pipeline_folder):
    assert root_files(pipeline_folder) == [
        "README.md",
        "hf_diffusionblocks_classes.py",
        "model_index.json",
        "scheduler/hf_diffusionblocks_classes.py",
        "scheduler/scheduler_config.json",
        "transformer/config.json",
        "transformer/hf_diffusionblocks_classes.py",
        "transformer/model.safetensors.index.json",
    ]


def test_root_files_skip_training_state_and_logs(pipeline_folder):
    for relative in ("checkpoints/block_0/checkpoint-5/block_0.safetensors", "checkpoints/block_0/checkpoint-5/training_state.pt",
                     "logs/train_dit/events.out.tfevents.1", "validation/block_0_step_5.png"):
        path = pipeline_folder / relative if hasattr(pipeline_folder, "joinpath") else os.path.join(pipeline_folder, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "wb").close()
    files = root_files(pipeline_folder)
    assert "validation/block_0_step_5.png" in files
    assert not any(name.startswith(("checkpoints/", "logs/")) for name in files)


def test_concurrent_block_pushes_both_land(fake_hub, pipeline_folder):
    fake_hub.preupload_barrier = threading.Barrier(2)
    results, errors = {}, []

    def push(block_index: int) -> None:
        try:
            results[block_index] = push_block_to_hub(pipeline_folder, REPO_ID, block_index, token=TOKEN)
        except Exception as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=push, args=(block_index,)) for block_index in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    commits = fake_hub.repos[REPO_ID][1:]
    assert sorted(commit.added for commit in commits) == [
        ["transformer/block_0.safetensors"],
        ["transformer/block_1.safetensors"],
    ]
    head_files = fake_hub.head(REPO_ID).files
    assert set(head_files) == {"transformer/block_0.safetensors", "transformer/block_1.safetensors"}
    assert (
        head_files["transformer/block_1.safetensors"]
        == (pipeline_folder / "transformer" / "block_1.safetensors").read_bytes()
    )
    assert results[1].oid in {commit.oid for commit in commits}
    assert {commit.message for commit in commits} == {
        "Upload block 0 (10 training steps)",
        "Upload block 1 (20 training steps)",
    }


def test_root_files_pushed_once_in_one_commit(fake_hub, pipeline_folder):
    push_block_to_hub(pipeline_folder, REPO_ID, 2, token=TOKEN)
    push_root_files_to_hub(pipeline_folder, REPO_ID, token=TOKEN)
    root_commit = fake_hub.head(REPO_ID)
    assert root_commit.added == root_files(pipeline_folder)
    assert "transformer/block_2.safetensors" in root_commit.files  # the earlier block commit is kept
    assert not any(path.endswith(".tmp") for path in root_commit.files)
    creations = [path for _, path, _ in fake_hub.requests if path == "/api/repos/create"]
    assert len(creations) == 2  # the second one answered 409 and was accepted (exist_ok)


def test_push_block_refuses_a_missing_block(fake_hub, tmp_path, tiny_dit_config):
    DiffusionBlocksDiTModel(tiny_dit_config, block_indices=[0]).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="block 1 has no weight file"):
        push_block_to_hub(tmp_path, REPO_ID, 1, token=TOKEN)
    assert fake_hub.requests == []


def test_model_folder_blocks_go_to_the_repo_subfolder_asked_for(fake_hub, tmp_path, tiny_dit_config):
    DiffusionBlocksDiTModel(tiny_dit_config, block_indices=[0]).save_pretrained(tmp_path)
    push_block_to_hub(tmp_path, REPO_ID, 0, token=TOKEN)  # into a pipeline repo's transformer/
    assert list(fake_hub.head(REPO_ID).files) == ["transformer/block_0.safetensors"]
    push_folder_to_hub(tmp_path, "org/model-only", token=TOKEN)  # a model repo mirrors the model folder
    assert sorted(fake_hub.head("org/model-only").files) == [
        "block_0.safetensors",
        "config.json",
        "hf_diffusionblocks_classes.py",
        "model.safetensors.index.json",
    ]


# ---- downloads: one block at a time, online through the fake Hub and offline from the cache -------


@pytest.fixture
def hub_repo(fake_hub, pipeline_folder):
    push_folder_to_hub(pipeline_folder, REPO_ID, token=TOKEN)
    fake_hub.requests.clear()
    return fake_hub


def downloaded_files(hub: FakeHub) -> set[str]:
    return {
        path.split("/resolve/main/")[1]
        for method, path, _ in hub.requests
        if method == "GET" and "/resolve/" in path
    }


def test_from_pretrained_one_block_downloads_only_that_block(
    hub_repo, pipeline_folder, tmp_path, monkeypatch
):
    cache = tmp_path / "hub-cache"
    model = DiffusionBlocksDiTModel.from_pretrained(
        REPO_ID, subfolder="transformer", block_index=1, cache_dir=str(cache)
    )
    assert model.loaded_block_indices == [1]
    assert downloaded_files(hub_repo) == {"transformer/config.json", "transformer/block_1.safetensors"}
    reference = DiffusionBlocksDiTModel.from_pretrained(pipeline_folder / "transformer", block_index=1)
    for name, tensor in reference.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name

    # Offline, from the cache that now holds block 1 only: block 1 loads, the full model names the others.
    hub_repo.requests.clear()
    go_offline(monkeypatch, cache)
    offline = DiffusionBlocksDiTModel.from_pretrained(REPO_ID, subfolder="transformer", block_index=1)
    assert torch.equal(
        offline.get_block(1).final_layer.linear.weight, reference.get_block(1).final_layer.linear.weight
    )
    with pytest.raises(ValueError, match=r"missing blocks \[0, 2\] \(present: \[1\]"):
        DiffusionBlocksDiTModel.from_pretrained(REPO_ID, subfolder="transformer")
    assert hub_repo.requests == []  # offline: nothing reached the (fake) network


def test_pipeline_samples_offline_from_the_cache(hub_repo, pipeline_folder, tmp_path, monkeypatch):
    cache = tmp_path / "hub-cache"
    DiffusionBlocksImagePipeline.from_pretrained(REPO_ID, cache_dir=str(cache))  # fills the cache
    hub_repo.requests.clear()
    go_offline(monkeypatch, cache)
    pipeline = DiffusionBlocksImagePipeline.from_pretrained(REPO_ID)
    assert hub_repo.requests == []
    local = DiffusionBlocksImagePipeline.from_pretrained(pipeline_folder)
    kwargs = dict(class_labels=[1, 2], num_inference_steps=6, output_type="pt")
    images = pipeline(**kwargs, generator=torch.Generator().manual_seed(0)).images
    expected = local(**kwargs, generator=torch.Generator().manual_seed(0)).images
    assert images.shape == (2, 1, 8, 8)
    assert torch.equal(images, expected)


def test_block_header_read_with_range_requests(hub_repo, tiny_dit_config):
    header = read_safetensors_header(REPO_ID, "block_2.safetensors", HubOptions(subfolder="transformer"))
    assert header.training_steps == 30
    assert header.parameter_count == DiffusionBlocksDiTModel(
        tiny_dit_config, block_indices=[2]
    ).num_block_parameters(2)
    gets = [(path, byte_range) for method, path, byte_range in hub_repo.requests if method == "GET"]
    assert gets and all(
        path.endswith("transformer/block_2.safetensors") and byte_range for path, byte_range in gets
    )
    assert (
        read_safetensors_header(REPO_ID, "block_7.safetensors", HubOptions(subfolder="transformer")) is None
    )


def test_cli_info_on_a_hub_repo_reads_headers_only(hub_repo, tmp_path, capsys):
    from hf_diffusionblocks_cli import main

    assert main(["info", REPO_ID, "--cache_dir", str(tmp_path / "hub-cache")]) == 0
    output = capsys.readouterr().out
    assert f"model: {REPO_ID}/transformer" in output and "missing blocks: []" in output
    assert "training_steps" in output and "    2        4-5   present              30" in output
    block_gets = [
        byte_range for method, path, byte_range in hub_repo.requests if method == "GET" and "block_" in path
    ]
    assert len(block_gets) == 3 and all(byte_range for byte_range in block_gets)  # three headers, no weights


def train_dit_pushing(output_dir, *extra: str) -> dict:
    """examples/train_dit.py, tiny, pushing every block to REPO_ID as it finishes."""
    from script_testing import load_script

    return load_script("train_dit").main([
        "--output_dir", str(output_dir), "--num_hidden_layers", "3", "--max_train_steps", "2", "--train_batch_size", "8",
        "--report_to", "none", "--num_inference_steps", "3", "--samples_per_class", "1", "--push_to_hub",
        "--hub_model_id", REPO_ID, "--hub_token", TOKEN, *extra,
    ])


def test_train_dit_pushes_each_block_as_it_finishes(fake_hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    train_dit_pushing(tmp_path)
    block_commits = [commit.added for commit in fake_hub.repos[REPO_ID] if any(name.endswith(".safetensors") for name in commit.added)]
    assert block_commits == [[f"transformer/block_{b}.safetensors"] for b in range(3)]  # one commit per block, in order
    head = fake_hub.head(REPO_ID).files
    assert {"README.md", "model_index.json", "transformer/config.json", "scheduler/scheduler_config.json"} <= set(head)
    assert not any(name.startswith(("checkpoints/", "logs/")) for name in head)


def test_push_shared_files_and_block_uploads_the_shared_files_then_the_block_alone(fake_hub, pipeline_folder):
    from hf_diffusionblocks.hub import push_shared_files_and_block

    (pipeline_folder / "checkpoints" / "block_1").mkdir(parents=True)
    (pipeline_folder / "checkpoints" / "block_1" / "training_state.json").write_text("{}")
    push_shared_files_and_block(pipeline_folder, REPO_ID, 1, token=TOKEN, commit_message="Upload shared files")
    shared, block = fake_hub.repos[REPO_ID][-2:]
    assert shared.message == "Upload shared files" and shared.added == root_files(pipeline_folder)
    # the remote-code modules go up at the root and in every component folder: trust_remote_code loading works
    assert {"hf_diffusionblocks_classes.py", "scheduler/hf_diffusionblocks_classes.py",
            "transformer/hf_diffusionblocks_classes.py", "README.md"} <= set(shared.added)
    assert not any(name.startswith("checkpoints/") or name.endswith(".tmp") for name in shared.added)
    assert block.added == ["transformer/block_1.safetensors"]


def test_a_block_upload_that_fails_midway_leaves_nothing_loadable_and_a_retry_completes(
    fake_hub, pipeline_folder, tmp_path
):
    push_root_files_to_hub(pipeline_folder, REPO_ID, token=TOKEN)
    push_block_to_hub(pipeline_folder, REPO_ID, 0, token=TOKEN)
    fake_hub.fail_commits_adding = {"transformer/block_1.safetensors"}
    with pytest.raises(Exception, match="connection dropped"):
        push_block_to_hub(pipeline_folder, REPO_ID, 1, token=TOKEN)
    assert "transformer/block_1.safetensors" not in fake_hub.head(REPO_ID).files
    cache = str(tmp_path / "cache")
    with pytest.raises(ValueError, match=r"missing blocks \[1\] \(present: \[0\]"):
        DiffusionBlocksDiTModel.from_pretrained(REPO_ID, subfolder="transformer", block_index=[0, 1], cache_dir=cache)

    push_block_to_hub(pipeline_folder, REPO_ID, 1, token=TOKEN)             # the retry completes the repo
    loaded = DiffusionBlocksDiTModel.from_pretrained(REPO_ID, subfolder="transformer", block_index=1, cache_dir=cache)
    local = DiffusionBlocksDiTModel.from_pretrained(pipeline_folder / "transformer", block_index=1)
    assert all(torch.equal(loaded.state_dict()[name], tensor) for name, tensor in local.state_dict().items())


def test_a_resumed_training_run_completes_the_upload_a_failed_push_left_undone(fake_hub, tmp_path):
    output_dir = tmp_path / "run"
    fake_hub.fail_commits_adding = {"transformer/block_1.safetensors"}
    with pytest.raises(Exception, match="connection dropped"):
        train_dit_pushing(output_dir)
    assert (output_dir / "transformer" / "block_1.safetensors").is_file()   # saved before its upload failed
    assert "transformer/block_1.safetensors" not in fake_hub.head(REPO_ID).files

    # block 0 and block 1 are finished locally and skipped; the resumed run uploads them, then trains block 2
    summary = train_dit_pushing(output_dir, "--resume_from_checkpoint", "latest")
    assert [(block["block_index"], block["skipped"]) for block in summary["blocks"]] == [(0, True), (1, True), (2, False)]
    files = repo_matches_folder(fake_hub, REPO_ID, output_dir)   # every local file, bit-identical
    assert {f"transformer/block_{b}.safetensors" for b in range(3)} | {"README.md", "samples.png"} <= set(files)
    from_hub = DiffusionBlocksImagePipeline.from_pretrained(REPO_ID, cache_dir=str(tmp_path / "cache")).transformer
    local = DiffusionBlocksDiTModel.from_pretrained(output_dir / "transformer")
    assert from_hub.loaded_block_indices == [0, 1, 2]
    assert all(torch.equal(from_hub.state_dict()[name], tensor) for name, tensor in local.state_dict().items())


def test_diffusers_loads_a_pipeline_repo_with_trust_remote_code(hub_repo, pipeline_folder, tmp_path):
    """diffusers downloads only the weight files it knows by name (`diffusion_pytorch_model*`, `model*`), not
    `block_<b>.safetensors`: the model, loaded from the snapshot folder, fetches its block files at the same commit."""
    from diffusers import DiffusionPipeline

    pipeline = DiffusionPipeline.from_pretrained(REPO_ID, trust_remote_code=True, cache_dir=str(tmp_path / "cache"))
    assert type(pipeline) is DiffusionBlocksImagePipeline and pipeline.transformer.loaded_block_indices == [0, 1, 2]
    local = DiffusionBlocksDiTModel.from_pretrained(pipeline_folder / "transformer")
    assert all(torch.equal(pipeline.transformer.state_dict()[name], tensor) for name, tensor in local.state_dict().items())


# ---- what may leave the folder, and what a remote config may ask for -------------------------------------------


def test_uploads_carry_only_the_folders_own_regular_files(fake_hub, pipeline_folder, tmp_path, caplog):
    secret = tmp_path / "secret.txt"
    secret.write_text("outside the folder")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "notes.txt").write_text("outside too")
    os.symlink(secret, pipeline_folder / "linked_secret.txt")
    os.symlink(tmp_path / "outside", pipeline_folder / "linked_folder")
    os.mkfifo(pipeline_folder / "scheduler" / "pipe")
    with caplog.at_level("WARNING", logger="hf_diffusionblocks.hub"):
        files = root_files(pipeline_folder)
    assert not any(name.startswith(("linked_", "scheduler/pipe")) for name in files) and "README.md" in files
    assert "linked_folder" in caplog.text and "linked_secret.txt" in caplog.text and "scheduler/pipe" in caplog.text
    push_folder_to_hub(pipeline_folder, REPO_ID, token=TOKEN)
    uploaded = fake_hub.head(REPO_ID).files
    assert not any("linked" in name or "notes" in name for name in uploaded)
    assert b"outside the folder" not in b"".join(uploaded.values())
    # a block file that is a link (to another model's block, anywhere) is refused by name, not uploaded
    os.replace(pipeline_folder / "transformer" / "block_1.safetensors", tmp_path / "block_1.safetensors")
    os.symlink(tmp_path / "block_1.safetensors", pipeline_folder / "transformer" / "block_1.safetensors")
    with pytest.raises(ValueError, match=r"transformer/block_1\.safetensors is a symbolic link"):
        push_block_to_hub(pipeline_folder, REPO_ID, 1, token=TOKEN)


def test_info_on_a_hub_repo_whose_config_asks_for_a_million_blocks_answers_at_once(
    fake_hub, tmp_path, tiny_dit_config, capsys
):
    from hf_diffusionblocks_cli import main

    folder = tmp_path / "huge"
    DiffusionBlocksDiTModel(tiny_dit_config).save_pretrained(folder, block_indices=[0])
    config = json.loads((folder / "config.json").read_text())
    config.update(num_blocks=1_000_000, num_hidden_layers=1_000_000, layers_per_block=None)
    (folder / "config.json").write_text(json.dumps(config))
    push_root_files_to_hub(folder, REPO_ID, token=TOKEN)
    fake_hub.requests.clear()
    assert main(["info", REPO_ID, "--cache_dir", str(tmp_path / "cache")]) == 1
    assert len(fake_hub.requests) < 10  # the config, not one request per block
    assert not any("block_" in path for _, path, _ in fake_hub.requests)
    assert "config.json: num_blocks must be an integer in [1, 1024], got 1000000." in capsys.readouterr().err
