"""Resolving files of a model from a local folder or a Hub repository (with the Hub cache)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, HFValidationError, LocalEntryNotFoundError


@dataclass(frozen=True)
class HubOptions:
    """Where and how to fetch files: the usual `from_pretrained` Hub arguments."""

    subfolder: str = ""
    revision: str | None = None
    cache_dir: str | None = None
    token: str | bool | None = None
    local_files_only: bool = False
    force_download: bool = False


def resolve_file(path_or_repo: str | os.PathLike, filename: str, options: HubOptions = HubOptions()) -> str | None:
    """Local path of `filename` in a folder or Hub repo (downloaded into the cache), or None if it is absent."""
    path_or_repo = str(path_or_repo)
    if os.path.isdir(path_or_repo):
        candidate = os.path.join(path_or_repo, options.subfolder, filename)
        return candidate if os.path.isfile(candidate) else None
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
        )
    except (EntryNotFoundError, LocalEntryNotFoundError):
        return None
    except HFValidationError as error:
        raise ValueError(f"{path_or_repo!r} is neither an existing local folder nor a valid Hub repo id.") from error
