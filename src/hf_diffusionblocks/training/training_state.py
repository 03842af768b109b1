"""Optimizer, learning-rate schedule and gradient-scaler state on disk without pickle.

`torch.save` writes a pickle, and loading a pickle runs whatever code the file names: a crafted
`training_state.pt` in an output folder (or in a downloaded checkpoint) would execute on resume.
So the state is split in two files that can only hold data:

    training_state.safetensors   every tensor of the state, under a generated key ("t0", "t1", ...)
    training_state.json          the rest of the structure, with {"__tensor__": "t0"} where a tensor was

The JSON keeps what JSON alone would lose: tuples (`{"__tuple__": [...]}`), dicts whose keys are
not strings (`{"__items__": [[key, value], ...]}`: the optimizer's state is keyed by parameter
number) and non-finite floats (Python's `json` writes them as `NaN`/`Infinity` and reads them
back). Floats round-trip exactly (`repr` is shortest-exact), so a resumed run is bit-identical.
Anything else (a function, an arbitrary object) cannot be saved and raises a `TypeError` naming
where it was.

Like a block file, the state checks itself: the tensors file's metadata records `state_sha256`, the SHA-256
of both files' content (every tensor's name, dtype, shape and bytes, and the JSON structure), verified on
load. A flipped bit or an edited learning rate is refused naming the files, instead of resuming a run that
is no longer the one that was saved.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ..atomic_io import atomic_write, atomic_write_json, read_json_file
from ..modeling.block_checkpoint import tensors_digest

TENSORS_NAME = "training_state.safetensors"
STRUCTURE_NAME = "training_state.json"
# What older versions wrote: a pickle. It is never read; its presence gets a clear error.
LEGACY_PICKLE_NAME = "training_state.pt"

DIGEST_KEY = "state_sha256"

_TENSOR, _TUPLE, _ITEMS = "__tensor__", "__tuple__", "__items__"
_MARKERS = frozenset({_TENSOR, _TUPLE, _ITEMS})


def _encode(value: Any, tensors: dict[str, torch.Tensor], where: str) -> Any:
    if isinstance(value, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = value.detach().contiguous().cpu()
        return {_TENSOR: key}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, tuple):
        return {_TUPLE: [_encode(item, tensors, f"{where}[{i}]") for i, item in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(item, tensors, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, dict):
        if all(isinstance(key, str) for key in value) and not _MARKERS & set(value):
            return {key: _encode(item, tensors, f"{where}.{key}") for key, item in value.items()}
        return {
            _ITEMS: [
                [_encode(key, tensors, f"{where} key"), _encode(item, tensors, f"{where}[{key!r}]")]
                for key, item in value.items()
            ]
        }
    raise TypeError(
        f"training state at {where} is a {type(value).__name__}, which cannot be saved without pickle "
        "(allowed: tensors, numbers, strings, None, and lists/tuples/dicts of them)."
    )


def _decode(value: Any, tensors: dict[str, torch.Tensor], path: str) -> Any:
    if isinstance(value, list):
        return [_decode(item, tensors, path) for item in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {_TENSOR}:
        key = value[_TENSOR]
        if key not in tensors:
            raise ValueError(f"{path} names tensor {key!r}, which {TENSORS_NAME} does not hold: the checkpoint is corrupt.")
        return tensors[key]
    if set(value) == {_TUPLE}:
        return tuple(_decode(item, tensors, path) for item in value[_TUPLE])
    if set(value) == {_ITEMS}:
        return {_hashable(_decode(key, tensors, path)): _decode(item, tensors, path) for key, item in value[_ITEMS]}
    return {key: _decode(item, tensors, path) for key, item in value.items()}


def _hashable(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key


def state_digest(tensors: dict[str, torch.Tensor], structure: Any) -> str:
    """SHA-256 of a saved state: its tensors (`tensors_digest`) and its JSON structure (keys sorted)."""
    digest = hashlib.sha256(tensors_digest(tensors).encode())
    digest.update(json.dumps(structure, sort_keys=True, allow_nan=True).encode())
    return digest.hexdigest()


def save_training_state(directory: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write `state` as `training_state.safetensors` + `training_state.json` in `directory` (each atomically), the
    digest of both in the tensors file's metadata."""
    tensors: dict[str, torch.Tensor] = {}
    structure = _encode(state, tensors, "training_state")
    directory = str(directory)
    metadata = {DIGEST_KEY: state_digest(tensors, structure)}
    atomic_write(os.path.join(directory, TENSORS_NAME), lambda temporary: save_file(tensors, temporary, metadata=metadata))
    atomic_write_json(os.path.join(directory, STRUCTURE_NAME), structure)


def has_training_state(directory: str | os.PathLike) -> bool:
    return all(os.path.isfile(os.path.join(str(directory), name)) for name in (TENSORS_NAME, STRUCTURE_NAME))


def load_training_state(directory: str | os.PathLike) -> dict[str, Any]:
    """Read the state `save_training_state` wrote; no code is executed whatever the files hold.

    A folder holding only the pickle of older versions gets a `ValueError` saying so; a missing,
    truncated or inconsistent file, or files that no longer match the `state_sha256` recorded when they were
    saved, get a `ValueError` naming them.
    """
    directory = str(directory)
    structure_path, tensors_path = os.path.join(directory, STRUCTURE_NAME), os.path.join(directory, TENSORS_NAME)
    if not has_training_state(directory):
        if os.path.isfile(os.path.join(directory, LEGACY_PICKLE_NAME)):
            raise ValueError(
                f"{directory} holds {LEGACY_PICKLE_NAME}, a pickle written by an older version of hf-diffusionblocks. "
                "Pickles can run code when loaded, so it is not read: resume from a newer checkpoint or restart the block."
            )
        raise ValueError(f"{directory} lacks {STRUCTURE_NAME} and/or {TENSORS_NAME}: not a complete training checkpoint.")
    structure = read_json_file(structure_path)
    try:
        with safe_open(tensors_path, framework="pt") as file:
            recorded = (file.metadata() or {}).get(DIGEST_KEY)
        tensors = load_file(tensors_path)
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{tensors_path} cannot be read ({error}): the checkpoint is corrupt.") from None
    # (a state saved before checksums existed records none)
    if recorded is not None and recorded != state_digest(tensors, structure):
        raise ValueError(
            f"{structure_path} and {TENSORS_NAME} do not match the {DIGEST_KEY} recorded when they were saved: the "
            "training state was edited or damaged. Resume from another checkpoint, or restart the block."
        )
    return _decode(structure, tensors, structure_path)
