"""Uploading a DiffusionBlocks folder to the Hub one block at a time.

Blocks are trained independently, often by different processes or machines that finish at
different times, so each block is uploaded as its own commit the moment it is done
(`push_block_to_hub`), and the files every block shares (configs, index, scheduler, model card,
VAE) are uploaded once (`push_root_files_to_hub`). `push_folder_to_hub` does both for a whole folder.

Why concurrent block uploads are safe: each commit *adds* exactly one file,
`<subfolder>/block_<b>.safetensors`, and is sent without a `parent_commit`. The Hub then applies
the commit on top of whatever the branch head is when the commit arrives, instead of refusing it
because another commit landed first. Two blocks committed at the same time therefore both end
up in the repo, in either order, and neither commit touches the other's file.
"""

from __future__ import annotations

import logging
import os
import re

from huggingface_hub import CommitInfo, CommitOperationAdd, HfApi

from .modeling.block_checkpoint import block_weights_name, read_block_metadata

logger = logging.getLogger(__name__)

# Matches the weight file of one block, wherever it sits (`transformer/block_2.safetensors`).
BLOCK_FILE_PATTERN = re.compile(r"^block_\d+\.safetensors$")


def _is_hidden_or_temporary(relative_path: str) -> bool:
    """Dot-files/folders (e.g. the `.name.tmp` files of atomic writes), training state and logs.

    Training scripts keep resumable state in `checkpoints/` (and `checkpoint-*`) and TensorBoard
    events in `logs/` inside the output folder: they belong to the run, not to the model.
    """
    parts = relative_path.split("/")
    return (
        any(part.startswith(".") for part in parts)
        or parts[0].startswith("checkpoint-")
        or parts[0] in ("checkpoints", "logs")
        or "__pycache__" in parts
    )


def root_files(folder: str | os.PathLike) -> list[str]:
    """Relative paths (with `/`) of every regular file in `folder` that is not a block weight file.

    Hidden files, atomic-write temporaries, `__pycache__` and `checkpoint-*` training-state folders are
    skipped. So is anything that is not the folder's own regular file: a symbolic link (to a file or a folder,
    wherever it points: uploading what it points to could publish a file from outside the folder), a socket or
    a pipe; each one skipped is named in a warning.
    """
    folder = str(folder)
    if not os.path.isdir(folder):
        raise ValueError(f"folder {folder!r} does not exist or is not a folder.")
    found, skipped = [], []
    for directory, subfolders, filenames in os.walk(folder):  # (os.walk does not enter linked folders)
        for name in subfolders + filenames:
            path = os.path.join(directory, name)
            relative = os.path.relpath(path, folder).replace(os.sep, "/")
            if BLOCK_FILE_PATTERN.match(name) or _is_hidden_or_temporary(relative):
                continue
            if os.path.islink(path) or (name in filenames and not os.path.isfile(path)):
                skipped.append(relative)
            elif name in filenames:
                found.append(relative)
    if skipped:
        logger.warning("not uploaded from %s (symbolic links or not regular files): %s", folder, sorted(skipped))
    return sorted(found)


def local_block_file(folder: str | os.PathLike, block_index: int, subfolder: str = "transformer") -> str:
    """Path of block `block_index`'s file: in `folder/subfolder/` (a pipeline folder), else in `folder/`."""
    name = block_weights_name(block_index)
    candidates = [os.path.join(str(folder), subfolder, name)] if subfolder else []
    candidates.append(os.path.join(str(folder), name))
    for path in candidates:
        if os.path.islink(path):
            raise ValueError(f"{path} is a symbolic link: only the folder's own regular files are uploaded or merged.")
        if os.path.isfile(path):
            return path
    raise ValueError(f"block {block_index} has no weight file in {str(folder)!r}: looked for {candidates}.")


def model_subfolder(folder: str | os.PathLike, subfolder: str = "transformer") -> str:
    """`subfolder` if `folder` is a pipeline folder holding it, `""` for a model folder."""
    return subfolder if subfolder and os.path.isdir(os.path.join(str(folder), subfolder)) else ""


def present_block_indices(folder: str | os.PathLike, subfolder: str = "transformer") -> list[int]:
    """Indices of the block files in `folder/subfolder/` (a pipeline folder), else in `folder/`."""
    directory = os.path.join(str(folder), model_subfolder(folder, subfolder))
    names = [name for name in os.listdir(directory) if BLOCK_FILE_PATTERN.match(name)]
    return sorted(int(name[len("block_") : -len(".safetensors")]) for name in names)


def _ensure_repo(api: HfApi, repo_id: str, private: bool | None) -> None:
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)


def push_block_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    block_index: int,
    *,
    subfolder: str = "transformer",
    token: str | bool | None = None,
    revision: str | None = None,
    private: bool | None = None,
    commit_message: str | None = None,
) -> CommitInfo:
    """Upload `block_<block_index>.safetensors` alone, as its own commit.

    Safe to call from several processes at once for different blocks: the commit only adds this
    block's file and carries no `parent_commit`, so the Hub applies it on top of the current head
    whatever other blocks were committed meanwhile (see the module docstring).

    Args:
        folder (`str` or `os.PathLike`): a pipeline folder (the block file is in `folder/subfolder/`) or a
            model folder (the block file is at its root).
        repo_id (`str`): the Hub repo, created (with `private`) if it does not exist.
        block_index (`int`): the block to upload; the file's metadata must say it is this block.
        subfolder (`str`, defaults to `"transformer"`): the repo folder that receives the block file
            (`subfolder/block_<b>.safetensors`), as in a pipeline folder; `""` for a model repo.
        token (`str` or `bool`, *optional*): Hub token; the locally saved one by default.
        revision (`str`, *optional*): an existing branch to commit to (default `main`).
        private (`bool`, *optional*): visibility of the repo if it has to be created.
        commit_message (`str`, *optional*): defaults to "Upload block <b> (<n> training steps)".
    Returns:
        `CommitInfo` of the commit.
    """
    path = local_block_file(folder, block_index, subfolder)
    metadata = read_block_metadata(path)
    if metadata["block_index"] != block_index:
        raise ValueError(f"{path} holds block {metadata['block_index']}, not block_index={block_index}.")
    if commit_message is None:
        steps = metadata["training_steps"]
        commit_message = f"Upload block {block_index}" + (
            f" ({steps} training steps)" if steps is not None else ""
        )
    name = block_weights_name(block_index)
    path_in_repo = f"{subfolder}/{name}" if subfolder else name
    api = HfApi(token=token)
    _ensure_repo(api, repo_id, private)
    return api.create_commit(
        repo_id,
        operations=[CommitOperationAdd(path_in_repo=path_in_repo, path_or_fileobj=path)],
        commit_message=commit_message,
        revision=revision,
    )


def push_root_files_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    token: str | bool | None = None,
    revision: str | None = None,
    private: bool | None = None,
    commit_message: str = "Upload configs, index, scheduler and model card",
) -> CommitInfo:
    """Upload every file of `folder` that is not a block weight file, in one commit.

    For a pipeline folder that is `model_index.json`, `scheduler/`, `transformer/config.json`,
    `transformer/model.safetensors.index.json`, `README.md` and `vae/` if present. These files are the
    same whichever process writes them, so uploading them again is harmless.

    Args: as `push_block_to_hub`, without `block_index` and `subfolder`; paths in the repo mirror `folder`.
    Returns:
        `CommitInfo` of the commit.
    """
    paths = root_files(folder)
    if not paths:
        raise ValueError(f"{folder!r} holds no file other than block weights: nothing to upload.")
    api = HfApi(token=token)
    _ensure_repo(api, repo_id, private)
    operations = [
        CommitOperationAdd(
            path_in_repo=relative, path_or_fileobj=os.path.join(str(folder), *relative.split("/"))
        )
        for relative in paths
    ]
    return api.create_commit(repo_id, operations=operations, commit_message=commit_message, revision=revision)


def push_folder_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    subfolder: str = "transformer",
    token: str | bool | None = None,
    revision: str | None = None,
    private: bool | None = None,
) -> list[CommitInfo]:
    """Upload a whole folder: its root files in one commit, then one commit per block file present.

    Paths in the repo mirror `folder`: a pipeline folder's blocks go to `subfolder/`, a model folder's to
    the root.
    """
    commits = [push_root_files_to_hub(folder, repo_id, token=token, revision=revision, private=private)]
    subfolder = model_subfolder(folder, subfolder)
    for block_index in present_block_indices(folder, subfolder):
        commits.append(
            push_block_to_hub(
                folder,
                repo_id,
                block_index,
                subfolder=subfolder,
                token=token,
                revision=revision,
                private=private,
            )
        )
    return commits


def push_missing_blocks_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    subfolder: str = "transformer",
    token: str | bool | None = None,
    revision: str | None = None,
    private: bool | None = None,
) -> list[CommitInfo]:
    """Upload, one commit each, the block files of `folder` that the repo does not hold yet.

    What a run that trained only some blocks calls when it ends (fine-tuning blocks 1 and 3 of a converted
    model, say), so that its repo loads whole: the blocks it did not train reach the repo as the folder holds
    them. A block the repo already holds is left alone, so a block that another process has pushed is
    never replaced; a block pushed later replaces this upload.

    Args: as `push_folder_to_hub`.
    Returns:
        the `CommitInfo` of each block commit, in block order (empty when the repo held every block).
    """
    subfolder = model_subfolder(folder, subfolder)
    api = HfApi(token=token)
    _ensure_repo(api, repo_id, private)
    held = set(api.list_repo_files(repo_id, revision=revision))
    commits = []
    for block_index in present_block_indices(folder, subfolder):
        name = block_weights_name(block_index)
        if (f"{subfolder}/{name}" if subfolder else name) not in held:
            commits.append(push_block_to_hub(folder, repo_id, block_index, subfolder=subfolder, token=token,
                                             revision=revision, private=private))
    return commits


def push_shared_files_and_block(
    folder: str | os.PathLike,
    repo_id: str,
    block_index: int,
    *,
    subfolder: str = "transformer",
    token: str | bool | None = None,
    private: bool | None = None,
    commit_message: str = "Upload configs, index, scheduler and model card",
) -> CommitInfo:
    """Upload the shared files of `folder` (`root_files`) in one commit, then block `block_index` as its own.

    What a training script does when a block is finished: the shared files are whatever the folder holds
    besides block weights and run state (configs, index, scheduler, tokenizer, the remote-code modules at
    the root and in every component folder, samples, model card), so no script keeps its own list, and
    the block commit stays a one-file commit (safe next to other processes' blocks).
    """
    push_root_files_to_hub(folder, repo_id, token=token, private=private, commit_message=commit_message)
    return push_block_to_hub(folder, repo_id, block_index, subfolder=subfolder, token=token, private=private)
