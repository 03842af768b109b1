"""Reading the files of a model from a local folder or a Hub repository (with the Hub cache).

Also reads what a folder or repo holds without loading weights: where its model config lives, and
safetensors headers (metadata, parameter counts). Which family a config belongs to is the registry's
question (`families.load_config_file`); uploading is `hub.py`'s.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from typing import Any

from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub import constants as hf_constants
from huggingface_hub.errors import (
    EntryNotFoundError,
    HFValidationError,
    LocalEntryNotFoundError,
    SafetensorsParsingError,
)
from safetensors import SafetensorError, safe_open

@dataclass(frozen=True)
class HubOptions:
    """Where and how to fetch files: the usual `from_pretrained` Hub arguments."""

    subfolder: str = ""
    revision: str | None = None
    cache_dir: str | None = None
    token: str | bool | None = None
    local_files_only: bool = False
    force_download: bool = False
    # huggingface_hub's own download options (proxies, user_agent, ...: `loader_keywords.DOWNLOAD_KEYWORDS`), passed on
    download_options: dict[str, Any] = field(default_factory=dict)


def path_inside(folder: str | os.PathLike, relative: Any, what: str) -> str:
    """`folder/relative`, for a name read from a file or given as a subfolder (a sharded index's shard, `convert
    --subfolder`) that must stay inside `folder`; a `ValueError` naming `what` and the name otherwise.

    Refused: anything but a non-empty string, an absolute path, a `..` component, and a name that leaves the folder
    once symbolic links are resolved (a link inside the folder pointing out of it).
    """
    folder = str(folder)
    if not isinstance(relative, str) or not relative.strip():
        raise ValueError(f"{what} must be a non-empty path relative to {folder!r}, got {relative!r}.")
    parts = relative.replace("\\", "/").split("/")
    if os.path.isabs(relative) or relative.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
        raise ValueError(
            f"{what} {relative!r} is not a path inside {folder!r}: absolute paths and '..' are refused."
        )
    root = os.path.realpath(folder)
    path = os.path.join(folder, *[part for part in parts if part not in ("", ".")])
    if os.path.commonpath([root, os.path.realpath(path)]) != root:
        raise ValueError(f"{what} {relative!r} leads outside {folder!r} through a symbolic link; refused.")
    return path


def hub_cache_snapshot(folder: str) -> tuple[str, str, str, str] | None:
    """`(repo_id, commit, subfolder, cache_dir)` when `folder` lies in a Hub cache snapshot
    (`<cache_dir>/models--<org>--<name>/snapshots/<commit>/<subfolder>`), else None."""
    parts = os.path.abspath(folder).split(os.sep)
    for position in range(len(parts) - 2, 0, -1):
        if parts[position] == "snapshots" and parts[position - 1].startswith("models--"):
            repo_id = parts[position - 1][len("models--") :].replace("--", "/")
            subfolder = "/".join(parts[position + 2 :])
            return repo_id, parts[position + 1], subfolder, os.sep.join(parts[: position - 1]) or os.sep
    return None


def resolve_file(path_or_repo: str | os.PathLike, filename: str, options: HubOptions = HubOptions()) -> str | None:
    """Local path of `filename` in a folder or Hub repo (downloaded into the cache), or None if it is absent.

    A folder inside a Hub cache snapshot (what diffusers' `DiffusionPipeline.from_pretrained` hands a component
    after downloading the files it knows by name, which does not include `block_<b>.safetensors`) is completed
    from its repo at the snapshot's commit: the file is fetched into the same snapshot.
    """
    path_or_repo = str(path_or_repo)
    if os.path.isdir(path_or_repo):
        candidate = os.path.join(path_or_repo, options.subfolder, filename)
        if os.path.isfile(candidate):
            return candidate
        snapshot = hub_cache_snapshot(os.path.join(path_or_repo, options.subfolder))
        if snapshot is None:
            return None
        repo_id, commit, subfolder, cache_dir = snapshot
        path_or_repo = repo_id
        options = replace(options, subfolder=subfolder, revision=commit, cache_dir=cache_dir)
    try:
        return hf_hub_download(
            path_or_repo,
            filename,
            subfolder=options.subfolder or None,
            revision=options.revision,
            cache_dir=options.cache_dir,
            token=options.token,
            local_files_only=options.local_files_only,
            force_download=options.force_download,
            **options.download_options,
        )
    except (EntryNotFoundError, LocalEntryNotFoundError):
        return None
    except HFValidationError as error:
        raise ValueError(f"{path_or_repo!r} is neither an existing local folder nor a valid Hub repo id.") from error


# ---- reading what a folder or repo holds, without loading weights --------------------------


@dataclass(frozen=True)
class BlockFileHeader:
    """The header of one `block_<b>.safetensors`: its metadata strings and its parameter count."""

    metadata: dict[str, str]
    parameter_count: int

    @property
    def training_steps(self) -> int | None:
        steps = self.metadata.get("training_steps")
        return int(steps) if steps is not None else None


def read_local_safetensors_header(path: str) -> BlockFileHeader:
    """Metadata and parameter count of a local safetensors file; reads the header only, no tensor data. A file that
    is not safetensors, or is truncated (its header promises more bytes than it holds), raises a `ValueError`
    naming it."""
    try:
        with safe_open(path, framework="pt") as file:
            metadata = dict(file.metadata() or {})
            parameter_count = sum(math.prod(file.get_slice(name).get_shape()) for name in file.keys())
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{path} cannot be read as safetensors ({error}): the file is truncated or corrupt.") from None
    return BlockFileHeader(metadata, parameter_count)


def read_safetensors_header(
    path_or_repo: str | os.PathLike, filename: str, options: HubOptions = HubOptions()
) -> BlockFileHeader | None:
    """Header of `filename` in a folder or Hub repo, or None if the file is absent.

    Online, a Hub file's header is read with HTTP range requests (no weights are downloaded); offline
    (or with `local_files_only`), only a file already in the Hub cache is read.
    """
    path_or_repo = str(path_or_repo)
    if os.path.isdir(path_or_repo) or options.local_files_only or hf_constants.is_offline_mode():
        local_options = replace(options, local_files_only=not os.path.isdir(path_or_repo))
        path = resolve_file(path_or_repo, filename, local_options)
        return None if path is None else read_local_safetensors_header(path)
    path_in_repo = f"{options.subfolder}/{filename}" if options.subfolder else filename
    try:
        api_options = {name: options.download_options[name] for name in ("endpoint", "headers", "user_agent") if name in options.download_options}
        header = HfApi(token=options.token, **api_options).parse_safetensors_file_metadata(
            path_or_repo, path_in_repo, revision=options.revision
        )
    except EntryNotFoundError:
        return None
    except SafetensorsParsingError as error:
        raise ValueError(f"{path_or_repo}/{path_in_repo} cannot be read as safetensors ({error}).") from None
    parameter_count = sum(tensor.parameter_count for tensor in header.tensors.values())
    return BlockFileHeader(dict(header.metadata), parameter_count)


def locate_model(
    path_or_repo: str | os.PathLike, subfolder: str = "transformer", options: HubOptions = HubOptions()
) -> tuple[str, HubOptions]:
    """Path of `config.json` of the model in a model folder/repo, or in `subfolder` of a pipeline folder/repo.

    Returns the config path, and the options (with the model's subfolder) to fetch the model's other files.
    """
    candidates = [subfolder, ""] if subfolder else [""]
    for candidate in candidates:
        candidate_options = replace(options, subfolder=candidate)
        config_path = resolve_file(path_or_repo, "config.json", candidate_options)
        if config_path is not None:
            return config_path, candidate_options
    where = " or ".join(repr(f"{path_or_repo}/{name}" if name else str(path_or_repo)) for name in candidates)
    raise ValueError(f"no config.json in {where}: not a DiffusionBlocks model or pipeline folder/repo.")
