"""An in-process fake Hub for tests: huggingface_hub's real client code runs end to end; only the network
is replaced.

The fake Hub is a `MockTransport` handler (of httpx2 or httpx: whichever the installed huggingface_hub speaks) that implements the endpoints huggingface_hub's
client calls: repo creation, README validation, preupload, the NDJSON commit, file resolution
(HEAD/GET with ranges), the model info and the file tree (what `snapshot_download` lists). The `fake_hub` fixture (registered in conftest.py) installs it as
huggingface_hub's HTTP client for one test.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from urllib.parse import unquote

import huggingface_hub
import pytest
from huggingface_hub import constants as hf_constants
from huggingface_hub.utils import _http as hub_http
from huggingface_hub.utils._http import default_client_factory, hf_request_event_hook

# huggingface_hub 1.x sends its requests with httpx, 2.x with its fork httpx2: answer in the client's own types
http = getattr(hub_http, "httpx2", None) or hub_http.httpx

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
    authorizations: list[str | None] = field(default_factory=list)  # the Authorization header of each request
    lock: threading.Lock = field(default_factory=threading.Lock)
    preupload_barrier: threading.Barrier | None = None
    fail_commits_adding: set[str] = field(default_factory=set)  # the connection drops while these are sent

    def client(self) -> http.Client:
        # The same event hook as huggingface_hub's default client, so HF_HUB_OFFLINE is enforced as usual.
        return http.Client(
            transport=http.MockTransport(self.handle),
            event_hooks={"request": [hf_request_event_hook]},
            follow_redirects=True,
        )

    def head(self, repo_id: str) -> FakeCommit:
        return self.repos[repo_id][-1]

    def handle(self, request: http.Request) -> http.Response:
        path = unquote(request.url.path)
        with self.lock:
            self.requests.append((request.method, path, request.headers.get("range")))
            self.authorizations.append(request.headers.get("authorization"))
        if path == "/api/repos/create":
            return self.create_repo(json.loads(request.content))
        if path == "/api/validate-yaml":
            return http.Response(200, json={"errors": [], "warnings": []})
        if path.startswith("/api/models/") and "/preupload/" in path:
            return self.preupload(json.loads(request.content))
        if path.startswith("/api/models/") and "/commit/" in path:
            repo_id = path[len("/api/models/") :].split("/commit/")[0]
            return self.commit(repo_id, request.content)
        if request.method == "GET" and path.startswith("/api/models/") and "/tree/" in path:
            return self.tree(*path[len("/api/models/") :].split("/tree/", 1))
        if request.method == "GET" and path.startswith("/api/models/"):
            return self.model_info(path[len("/api/models/") :])
        if "/resolve/" in path:
            repo_id, rest = path.lstrip("/").split("/resolve/", 1)
            revision, filename = rest.split("/", 1)
            return self.resolve(request, repo_id, revision, filename)
        return http.Response(404, json={"error": f"fake Hub has no endpoint {request.method} {path}"})

    def create_repo(self, payload: dict) -> http.Response:
        repo_id = f"{payload['organization']}/{payload['name']}"
        with self.lock:
            if repo_id in self.repos:
                return http.Response(
                    409,
                    json={
                        "error": "You already created this model repo",
                        "url": f"{hf_constants.ENDPOINT}/{repo_id}",
                    },
                )
            self.repos[repo_id] = [
                FakeCommit(hashlib.sha1(repo_id.encode()).hexdigest(), "initial commit", [], {})
            ]
        return http.Response(200, json={"url": f"{hf_constants.ENDPOINT}/{repo_id}"})

    def preupload(self, payload: dict) -> http.Response:
        if self.preupload_barrier is not None:
            self.preupload_barrier.wait(timeout=10)  # both uploads are in flight before either commits
        files = [
            {"path": entry["path"], "uploadMode": "regular", "shouldIgnore": False}
            for entry in payload["files"]
        ]
        return http.Response(200, json={"files": files})

    def commit(self, repo_id: str, content: bytes) -> http.Response:
        lines = [json.loads(line) for line in content.decode().splitlines() if line.strip()]
        header = lines[0]["value"]
        added = {}
        for line in lines[1:]:
            if line["key"] != "file":
                return http.Response(
                    400, json={"error": f"fake Hub only takes inline files, got {line['key']}"}
                )
            added[line["value"]["path"]] = base64.b64decode(line["value"]["content"])
        dropped = self.fail_commits_adding & set(added)
        if dropped:
            self.fail_commits_adding -= dropped
            raise http.RemoteProtocolError("connection dropped mid-upload (simulated)")
        with self.lock:
            head = self.head(repo_id)
            if "parentCommit" in header and header["parentCommit"] != head.oid:
                return http.Response(412, json={"error": "A commit has happened since parentCommit."})
            oid = hashlib.sha1(f"{head.oid}{sorted(added)}".encode()).hexdigest()
            self.repos[repo_id].append(
                FakeCommit(oid, header["summary"], sorted(added), {**head.files, **added})
            )
        return http.Response(
            200, json={"commitUrl": f"{hf_constants.ENDPOINT}/{repo_id}/commit/{oid}", "commitOid": oid}
        )

    def model_info(self, rest: str) -> http.Response:
        """`GET /api/models/<repo>[/revision/<rev>]`: the head commit and its files (what `snapshot_download`
        and diffusers' `DiffusionPipeline.download` list before fetching)."""
        repo_id, _, revision = rest.partition("/revision/")
        commits = self.repos.get(repo_id)
        if commits is None:
            return http.Response(404, headers={"X-Error-Code": "RepoNotFound"})
        commit = commits[-1] if revision in ("", "main") else next((c for c in commits if c.oid == revision), None)
        if commit is None:
            return http.Response(404, headers={"X-Error-Code": "RevisionNotFound"})
        siblings = [{"rfilename": name, "size": len(data)} for name, data in sorted(commit.files.items())]
        return http.Response(200, json={"id": repo_id, "modelId": repo_id, "sha": commit.oid, "private": False,
                                          "siblings": siblings, "tags": [], "downloads": 0, "likes": 0})

    def tree(self, repo_id: str, revision_and_path: str) -> http.Response:
        """`GET /api/models/<repo>/tree/<rev>[/<path>]`: every file of a commit, recursively (one page)."""
        revision, _, prefix = revision_and_path.partition("/")
        commits = self.repos.get(repo_id)
        commit = None if commits is None else next((c for c in reversed(commits) if revision in ("main", c.oid)), None)
        if commit is None:
            return http.Response(404, headers={"X-Error-Code": "RevisionNotFound" if commits else "RepoNotFound"})
        entries = [
            {"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
            for name, data in sorted(commit.files.items())
            if name.startswith(prefix)
        ]
        return http.Response(200, json=entries)

    def resolve(self, request: http.Request, repo_id: str, revision: str, filename: str) -> http.Response:
        commits = self.repos.get(repo_id)
        if commits is None:
            return http.Response(404, headers={"X-Error-Code": "RepoNotFound"})
        commit = commits[-1] if revision == "main" else next((c for c in commits if c.oid == revision), None)
        if commit is None:
            return http.Response(404, headers={"X-Error-Code": "RevisionNotFound"})
        if filename not in commit.files:
            return http.Response(
                404, headers={"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit.oid}
            )
        data = commit.files[filename]
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{hashlib.sha256(data).hexdigest()}"'}
        if request.method == "HEAD":
            return http.Response(200, headers={**headers, "Content-Length": str(len(data))})
        if "range" in request.headers:
            start, _, end = request.headers["range"].removeprefix("bytes=").partition("-")
            data = data[int(start) : int(end) + 1 if end else None]
            return http.Response(206, headers=headers, content=data)
        return http.Response(200, headers=headers, content=data)


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


def repo_matches_folder(hub: FakeHub, repo_id: str, folder) -> list[str]:
    """The files of `repo_id`'s head, after checking they are exactly the local `folder`'s shared files and
    block files (`hub.root_files` + `present_block_indices`), each bit-identical to its local copy."""
    import os

    from hf_diffusionblocks.hub import model_subfolder, present_block_indices, root_files

    subfolder = model_subfolder(folder)
    blocks = [f"{subfolder}/block_{b}.safetensors".lstrip("/") for b in present_block_indices(folder)]
    head = hub.head(repo_id).files
    assert sorted(head) == sorted(root_files(folder) + blocks)
    for name, data in head.items():
        with open(os.path.join(str(folder), *name.split("/")), "rb") as file:
            assert file.read() == data, f"{name} differs from the local file"
    return sorted(head)
