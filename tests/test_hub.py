"""Per-block Hub upload and per-block loading from the Hub cache, against an in-process fake Hub.

The fake Hub is an `httpx2.MockTransport` handler that implements the endpoints huggingface_hub's
client calls: repo creation, README validation, preupload, the NDJSON commit, and file resolution
(HEAD/GET with ranges). The real client code runs end to end; only the network is replaced.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from urllib.parse import unquote

import httpx2
import huggingface_hub
import pytest
import torch
from conftest import randomize_
from huggingface_hub import constants as hf_constants
from huggingface_hub.utils._http import default_client_factory, hf_request_event_hook

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
from hf_diffusionblocks.hub_utils import HubOptions, read_safetensors_header

REPO_ID = "org/name"
TOKEN = "hf_fake_token"


# ---- the fake Hub ------------------------------------------------------------------------------


@dataclass
class FakeCommit:
    oid: str
    message: str
    added: list[str]
    files: dict[str, bytes]


@dataclass
class FakeHub:
    """The state of a tiny Hub: repos as lists of commits on `main`, and a log of every request."""

    repos: dict[str, list[FakeCommit]] = field(default_factory=dict)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # method, path, Range header
    lock: threading.Lock = field(default_factory=threading.Lock)
    preupload_barrier: threading.Barrier | None = None
    fail_commits_adding: set[str] = field(default_factory=set)  # the connection drops while these are sent

    def client(self) -> httpx2.Client:
        # The same event hook as huggingface_hub's default client, so HF_HUB_OFFLINE is enforced as usual.
        return httpx2.Client(
            transport=httpx2.MockTransport(self.handle),
            event_hooks={"request": [hf_request_event_hook]},
            follow_redirects=True,
        )

    def head(self, repo_id: str) -> FakeCommit:
        return self.repos[repo_id][-1]

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        path = unquote(request.url.path)
        with self.lock:
            self.requests.append((request.method, path, request.headers.get("range")))
        if path == "/api/repos/create":
            return self.create_repo(json.loads(request.content))
        if path == "/api/validate-yaml":
            return httpx2.Response(200, json={"errors": [], "warnings": []})
        if path.startswith("/api/models/") and "/preupload/" in path:
            return self.preupload(json.loads(request.content))
        if path.startswith("/api/models/") and "/commit/" in path:
            repo_id = path[len("/api/models/") :].split("/commit/")[0]
            return self.commit(repo_id, request.content)
        if "/resolve/" in path:
            repo_id, rest = path.lstrip("/").split("/resolve/", 1)
            revision, filename = rest.split("/", 1)
            return self.resolve(request, repo_id, revision, filename)
        return httpx2.Response(404, json={"error": f"fake Hub has no endpoint {request.method} {path}"})

    def create_repo(self, payload: dict) -> httpx2.Response:
        repo_id = f"{payload['organization']}/{payload['name']}"
        with self.lock:
            if repo_id in self.repos:
                return httpx2.Response(
                    409,
                    json={
                        "error": "You already created this model repo",
                        "url": f"{hf_constants.ENDPOINT}/{repo_id}",
                    },
                )
            self.repos[repo_id] = [
                FakeCommit(hashlib.sha1(repo_id.encode()).hexdigest(), "initial commit", [], {})
            ]
        return httpx2.Response(200, json={"url": f"{hf_constants.ENDPOINT}/{repo_id}"})

    def preupload(self, payload: dict) -> httpx2.Response:
        if self.preupload_barrier is not None:
            self.preupload_barrier.wait(timeout=10)  # both uploads are in flight before either commits
        files = [
            {"path": entry["path"], "uploadMode": "regular", "shouldIgnore": False}
            for entry in payload["files"]
        ]
        return httpx2.Response(200, json={"files": files})

    def commit(self, repo_id: str, content: bytes) -> httpx2.Response:
        lines = [json.loads(line) for line in content.decode().splitlines() if line.strip()]
        header = lines[0]["value"]
        added = {}
        for line in lines[1:]:
            if line["key"] != "file":
                return httpx2.Response(
                    400, json={"error": f"fake Hub only takes inline files, got {line['key']}"}
                )
            added[line["value"]["path"]] = base64.b64decode(line["value"]["content"])
        dropped = self.fail_commits_adding & set(added)
        if dropped:
            self.fail_commits_adding -= dropped
            raise httpx2.RemoteProtocolError("connection dropped mid-upload (simulated)")
        with self.lock:
            head = self.head(repo_id)
            if "parentCommit" in header and header["parentCommit"] != head.oid:
                return httpx2.Response(412, json={"error": "A commit has happened since parentCommit."})
            oid = hashlib.sha1(f"{head.oid}{sorted(added)}".encode()).hexdigest()
            self.repos[repo_id].append(
                FakeCommit(oid, header["summary"], sorted(added), {**head.files, **added})
            )
        return httpx2.Response(
            200, json={"commitUrl": f"{hf_constants.ENDPOINT}/{repo_id}/commit/{oid}", "commitOid": oid}
        )

    def resolve(self, request: httpx2.Request, repo_id: str, revision: str, filename: str) -> httpx2.Response:
        commits = self.repos.get(repo_id)
        if commits is None:
            return httpx2.Response(404, headers={"X-Error-Code": "RepoNotFound"})
        commit = commits[-1] if revision == "main" else next((c for c in commits if c.oid == revision), None)
        if commit is None:
            return httpx2.Response(404, headers={"X-Error-Code": "RevisionNotFound"})
        if filename not in commit.files:
            return httpx2.Response(
                404, headers={"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit.oid}
            )
        data = commit.files[filename]
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{hashlib.sha256(data).hexdigest()}"'}
        if request.method == "HEAD":
            return httpx2.Response(200, headers={**headers, "Content-Length": str(len(data))})
        if "range" in request.headers:
            start, _, end = request.headers["range"].removeprefix("bytes=").partition("-")
            data = data[int(start) : int(end) + 1 if end else None]
            return httpx2.Response(206, headers=headers, content=data)
        return httpx2.Response(200, headers=headers, content=data)


@pytest.fixture
def fake_hub(monkeypatch):
    """The fake Hub as huggingface_hub's HTTP client, online (the session defaults to HF_HUB_OFFLINE=1)."""
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    hub = FakeHub()
    huggingface_hub.set_client_factory(hub.client)
    yield hub
    huggingface_hub.set_client_factory(default_client_factory)


def go_offline(monkeypatch, cache_dir) -> None:
    """HF_HUB_OFFLINE=1, HF_HUB_CACHE=cache_dir; huggingface_hub reads both into constants at import time."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache_dir))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache_dir))


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
    from hf_diffusionblocks.cli import main

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


def test_push_shared_files_and_block_uploads_only_the_named_files(fake_hub, pipeline_folder):
    from hf_diffusionblocks.hub import push_shared_files_and_block

    push_shared_files_and_block(pipeline_folder, REPO_ID, 1, allow_patterns=["model_index.json", "transformer/*.json"],
                                token=TOKEN, commit_message="Upload shared files")
    shared, block = fake_hub.repos[REPO_ID][-2:]
    assert sorted(shared.added) == ["model_index.json", "transformer/config.json", "transformer/model.safetensors.index.json"]
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
    head = fake_hub.head(REPO_ID).files
    local_files = root_files(output_dir) + [f"transformer/block_{b}.safetensors" for b in range(3)]
    assert sorted(head) == sorted(local_files)
    assert all(head[name] == (output_dir / name).read_bytes() for name in head)   # bit-identical to the local folder
    from_hub = DiffusionBlocksImagePipeline.from_pretrained(REPO_ID, cache_dir=str(tmp_path / "cache")).transformer
    local = DiffusionBlocksDiTModel.from_pretrained(output_dir / "transformer")
    assert from_hub.loaded_block_indices == [0, 1, 2]
    assert all(torch.equal(from_hub.state_dict()[name], tensor) for name, tensor in local.state_dict().items())
