"""On-disk layout of a block-partitioned model: block files, their metadata and checksums, the index.

A model folder (or Hub repo, or its `subfolder`) holds:

    config.json                     the model config
    model.safetensors.index.json    transformers' sharded-checkpoint index: every weight → its block file
    block_0.safetensors             the weights of block 0 alone ("blocks.0.*")
    block_1.safetensors             ...

Each block file is a standalone safetensors file whose metadata records the block index, the
config it was trained under and the SHA-256 of its tensors (`weights_sha256`), so blocks trained in
different processes or on different machines can be checked before they are assembled, and a file
damaged on disk or in transit is refused instead of sampled from. The provenance itself (block index,
config, training steps, the tensors' digest) is covered by `metadata_sha256`, checked whenever the metadata
is read, header-only reads included: an edited step count or config is refused like a flipped bit. The checksum lives in the file
itself rather than in the shared index: processes of a block-parallel run write their blocks
independently, and a block's Hub commit stays one self-verifying file. Every file is written to a
temporary name and renamed, so a process killed mid-save leaves the previous file intact.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any, Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ..atomic_io import atomic_write, atomic_write_json

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
INDEX_NAME = "model.safetensors.index.json"
BLOCK_METADATA_KEYS = ("block_index", "num_blocks", "config", "training_steps", "weights_sha256", "metadata_sha256")
# what `metadata_sha256` covers: every provenance entry (absent ones as null)
_PROVENANCE_KEYS = ("block_index", "num_blocks", "config", "training_steps", "weights_sha256")


def block_weights_name(block_index: int) -> str:
    return f"block_{block_index}.safetensors"


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
    tensors = {name: tensor.detach().contiguous().cpu() for name, tensor in state_dict.items()}
    metadata = {
        "format": "pt",
        "block_index": str(block_index),
        "num_blocks": str(num_blocks),
        "config": json.dumps(config_dict, sort_keys=True),
        "weights_sha256": tensors_digest(tensors),
    }
    if training_steps is not None:
        metadata["training_steps"] = str(training_steps)
    metadata["metadata_sha256"] = metadata_digest(metadata)
    atomic_write(path, lambda temporary: save_file(tensors, temporary, metadata=metadata))


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes, in name order: equal digests mean bit-identical tensors."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().contiguous().cpu()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def metadata_digest(metadata: Mapping[str, str]) -> str:
    """SHA-256 of a block file's provenance strings (`_PROVENANCE_KEYS`, as stored), what `metadata_sha256` records."""
    payload = {key: metadata.get(key) for key in _PROVENANCE_KEYS}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def metadata_edit(path: str, metadata: Mapping[str, str]) -> str | None:
    """Why the provenance in `metadata` (a block file's raw header strings) is not what was saved, or None when
    it is (or the file predates `metadata_sha256`)."""
    recorded = metadata.get("metadata_sha256")
    if recorded is None or recorded == metadata_digest(metadata):
        return None
    return (f"{path}'s metadata (block_index, num_blocks, config, training_steps, weights_sha256) does not match the "
            "metadata_sha256 recorded when it was saved: it was edited or damaged. Re-download or re-train the block.")


def _unreadable(path: str, error: Exception) -> ValueError:
    return ValueError(f"{path} cannot be read as safetensors ({error}): the file is truncated or corrupt.")


def read_block_metadata(path: str) -> dict[str, Any]:
    """The provenance stored in a block file: block_index, num_blocks, config (dict), training_steps,
    weights_sha256 (None in files written before checksums existed), after checking it against the
    `metadata_sha256` it records (a `ValueError` naming the file when it was edited)."""
    try:
        with safe_open(path, framework="pt") as file:
            raw = file.metadata() or {}
    except (SafetensorError, OSError) as error:
        raise _unreadable(path, error) from None
    missing = [key for key in ("block_index", "num_blocks", "config") if key not in raw]
    if missing:
        raise ValueError(f"{path} is not a DiffusionBlocks block file: its metadata lacks {missing}.")
    edited = metadata_edit(path, raw)
    if edited:
        raise ValueError(edited)
    try:
        return {
            "block_index": int(raw["block_index"]),
            "num_blocks": int(raw["num_blocks"]),
            "config": json.loads(raw["config"]),
            "training_steps": int(raw["training_steps"]) if "training_steps" in raw else None,
            "weights_sha256": raw.get("weights_sha256"),
        }
    except ValueError as error:
        raise ValueError(f"{path} has malformed block metadata ({error}).") from None


def load_block_file(path: str, *, verify_checksum: bool = True, device: str = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of a block file, checked against the `weights_sha256` its metadata records.

    A truncated or unreadable file, or one whose tensors no longer match their checksum (flipped bits),
    raises a `ValueError` naming the file and its block. A file written before checksums existed loads
    with a warning naming it. `verify_checksum=False` skips the hashing (faster for large blocks; the file
    must still parse).
    """
    metadata = read_block_metadata(path)
    try:
        tensors = load_file(path, device=device)
    except (SafetensorError, OSError) as error:
        raise _unreadable(path, error) from None
    expected = metadata["weights_sha256"]
    if verify_checksum and expected is None:
        logger.warning("%s records no checksum (it was written before block files had one): loaded unverified. "
                       "Save the model again to add one.", path)
    if verify_checksum and expected is not None and tensors_digest(tensors) != expected:
        raise ValueError(
            f"block {metadata['block_index']} ({path}) is corrupt: its tensors do not match the checksum recorded "
            "when it was saved. Re-download or re-train it (verify_checksum=False / --no_verify skips this check)."
        )
    return tensors


def write_index(path: str, weight_map: dict[str, str], total_size: int) -> None:
    atomic_write_json(path, {"metadata": {"total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))})
