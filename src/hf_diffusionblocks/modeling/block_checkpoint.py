"""On-disk layout of a block-partitioned model, and atomic writes.

A model folder (or Hub repo, or its `subfolder`) holds:

    config.json                     the model config
    model.safetensors.index.json    transformers' sharded-checkpoint index: every weight → its block file
    block_0.safetensors             the weights of block 0 alone ("blocks.0.*")
    block_1.safetensors             ...

Each block file is a standalone safetensors file whose metadata records the block index and the
config it was trained under, so blocks trained in different processes or on different machines can
be checked before they are assembled. Every file is written to a temporary name and renamed, so a
process killed mid-save leaves the previous file intact.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from typing import Any, Callable

import torch
from safetensors import safe_open
from safetensors.torch import save_file

CONFIG_NAME = "config.json"
INDEX_NAME = "model.safetensors.index.json"
BLOCK_METADATA_KEYS = ("block_index", "num_blocks", "config", "training_steps")


def block_weights_name(block_index: int) -> str:
    return f"block_{block_index}.safetensors"


def _current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """Call `write(temporary_path)` then rename onto `path` (atomic on POSIX)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    os.close(handle)
    try:
        write(temporary)
        os.chmod(temporary, 0o666 & ~_current_umask())  # mkstemp creates 0600; give the usual mode
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def atomic_save_folder(directory: str | os.PathLike, save: Callable[[str], None], last: tuple[str, ...] = ()) -> None:
    """Call `save(staging)` on a fresh staging folder inside `directory`, then rename every file it wrote into
    place (atomic per file) and remove the staging folder.

    For folders that processes of a block-parallel launch write while others read: a reader never sees a
    half-written file. Files named in `last` (e.g. the `tokenizer_config.json` or `model_index.json` that
    readers test for) arrive after all the others, so once a reader sees them the folder is complete.
    """
    os.makedirs(directory, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".saving-") as staging:
        save(staging)
        written = [os.path.relpath(os.path.join(root, name), staging) for root, _, names in os.walk(staging) for name in names]
        for relative in sorted(written, key=lambda path: (os.path.basename(path) in last, path)):
            target = os.path.join(directory, relative)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.replace(os.path.join(staging, relative), target)


def atomic_write_json(path: str, payload: Any) -> None:
    def write(temporary: str) -> None:
        with open(temporary, "w", encoding="utf-8") as file:
            json.dump(payload, file, indent=2, sort_keys=True)
            file.write("\n")

    atomic_write(path, write)


def state_dict_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of named tensors (names, shapes and bytes): equal digests mean bit-identical weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(tensors.items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_block_file(
    path: str,
    state_dict: dict[str, torch.Tensor],
    *,
    block_index: int,
    num_blocks: int,
    config_dict: dict[str, Any],
    training_steps: int | None = None,
) -> None:
    """Write one block's weights with its provenance in the safetensors metadata."""
    metadata = {
        "format": "pt",
        "block_index": str(block_index),
        "num_blocks": str(num_blocks),
        "config": json.dumps(config_dict, sort_keys=True),
    }
    if training_steps is not None:
        metadata["training_steps"] = str(training_steps)
    tensors = {name: tensor.detach().contiguous().cpu() for name, tensor in state_dict.items()}
    atomic_write(path, lambda temporary: save_file(tensors, temporary, metadata=metadata))


def read_block_metadata(path: str) -> dict[str, Any]:
    """The provenance stored in a block file: block_index, num_blocks, config (dict), training_steps."""
    with safe_open(path, framework="pt") as file:
        raw = file.metadata() or {}
    missing = [key for key in ("block_index", "num_blocks", "config") if key not in raw]
    if missing:
        raise ValueError(f"{path} is not a DiffusionBlocks block file: its metadata lacks {missing}.")
    return {
        "block_index": int(raw["block_index"]),
        "num_blocks": int(raw["num_blocks"]),
        "config": json.loads(raw["config"]),
        "training_steps": int(raw["training_steps"]) if "training_steps" in raw else None,
    }


def write_index(path: str, weight_map: dict[str, str], total_size: int) -> None:
    atomic_write_json(path, {"metadata": {"total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))})
