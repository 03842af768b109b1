"""On-disk layout of a converted pretrained transformer, and reading only the tensors one needs.

    config.json                     the source transformer's diffusers config, unchanged
    diffusion_blocks.json           the conversion: source class, blocks, layer ranges, time partition,
                                    scheduler config, checksums
    stems.safetensors               every tensor outside the layer list (embeddings, final norm, projection)
    block_0.safetensors             block 0's layers, under the source names of the layers they started from
    block_1.safetensors             ...
    model.safetensors.index.json    every tensor name → its file

Block files are the library's block files (`modeling/block_checkpoint.py`): written atomically, with
`block_index`, `num_blocks`, `training_steps` and a `config` in their metadata. That config is the
conversion's identity (source class and config, layer split, time partition, a digest of the stems),
so a block fine-tuned anywhere is accepted only by a folder of the same conversion.

Which source layers a block starts from is the conversion's `init` (`initial_layers.py`). The default,
`contiguous`, gives block b the b-th slice of the stack: concatenating the stems and all block files
gives back the source state dict exactly, and the manifest records no per-block indices. Any other
init records them as `source_layers` (one sorted list of stack indices per block); blocks may then
start from the same source layer (each holds its own copy, under that layer's source name), and the
index maps such a name to the first block holding it. A manifest without `source_layers` is contiguous.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Iterable

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..argument_checks import check_integer
from ..hub_download import HubOptions, resolve_file
from ..atomic_io import read_json_file
from ..modeling.block_checkpoint import (
    CONFIG_NAME,
    INDEX_NAME,
    atomic_write,
    atomic_write_json,
    block_weights_name,
    load_block_file,
    read_block_metadata,
    save_block_file,
    tensors_digest,
    write_index,
)
from ..partition import assign_layers_to_blocks
from .layer_stack import LayerStack
from .time_axis import TimeAxisPartition

MANIFEST_NAME = "diffusion_blocks.json"
STEMS_NAME = "stems.safetensors"
FORMAT_VERSION = 1


@dataclass
class ConversionManifest:
    """What `diffusion_blocks.json` records about a conversion."""

    source_class: str
    source_config: dict[str, Any]
    layer_list: str | list[list[Any]]  # the `LayerStack` in its manifest form (see layer_stack.py)
    layers_per_block: list[int]
    time_partition: TimeAxisPartition
    scheduler_config: dict[str, Any]
    stems_sha256: str
    block_sha256: dict[int, str]
    extra_stems: dict[str, str]
    source: str = ""
    # per block, the stack indices of the source layers it started from; None: contiguous slices
    source_layers: list[list[int]] | None = None
    init: str = "contiguous"

    def __post_init__(self):
        if self.source_layers is None:
            return
        if len(self.source_layers) != len(self.layers_per_block) or any(
            len(indices) != count for indices, count in zip(self.source_layers, self.layers_per_block)
        ):
            raise ValueError(f"source_layers must hold one list of layers_per_block[b] indices per block, got {self.source_layers}.")
        num_layers = self.source_num_layers
        for indices in self.source_layers:
            if list(indices) != sorted(set(indices)) or any(not 0 <= index < num_layers for index in indices):
                raise ValueError(f"source_layers must be increasing stack indices in [0, {num_layers}), got {self.source_layers}.")

    @property
    def num_blocks(self) -> int:
        return len(self.layers_per_block)

    @property
    def is_contiguous(self) -> bool:
        return self.source_layers is None

    @property
    def source_num_layers(self) -> int:
        """L, the source's layers: the blocks' layer counts always sum to it, whatever the init."""
        return sum(self.layers_per_block)

    @property
    def layer_stack(self) -> LayerStack:
        """The module lists the blocks start from (one, or Flux's two), numbered as one stack."""
        return LayerStack.from_manifest(self.layer_list, self.source_num_layers)

    def block_source_layers(self, block_index: int) -> list[int]:
        """The stack indices of the source layers block `block_index` started from, in its execution order."""
        self.time_partition.check_block_index(block_index)
        if self.source_layers is not None:
            return list(self.source_layers[block_index])
        start = sum(self.layers_per_block[:block_index])
        return list(range(start, start + self.layers_per_block[block_index]))

    def describe_block_layers(self, block_index: int) -> str:
        """`4-7` for a contiguous run of source layers, `0,4,7,11` otherwise."""
        indices = self.block_source_layers(block_index)
        if indices == list(range(indices[0], indices[-1] + 1)):
            return f"{indices[0]}-{indices[-1]}"
        return ",".join(str(index) for index in indices)

    def partition_table(self) -> str:
        """The time partition's table with each block's source layers."""
        return self.time_partition.table([self.describe_block_layers(b) for b in range(self.num_blocks)])

    def identity(self) -> dict[str, Any]:
        """The config recorded in every block file: what must match for a block to belong here."""
        return {
            "source_class": self.source_class,
            "source_config": self.source_config,
            "layer_list": self.layer_list,
            "layers_per_block": self.layers_per_block,
            "time_partition": self.time_partition.to_dict(),
            "stems_sha256": self.stems_sha256,
            # only non-contiguous conversions record it, so the identity of older folders is unchanged
            **({"source_layers": self.source_layers} if self.source_layers is not None else {}),
        }

    def to_dict(self) -> dict[str, Any]:
        edges = self.time_partition.block_timesteps.tolist()
        return {
            "format_version": FORMAT_VERSION,
            **self.identity(),
            "num_blocks": self.num_blocks,
            "block_timesteps": edges,
            "blocks": {
                str(b): {
                    "layers": self.block_source_layers(b) if self.source_layers is not None
                    else [self.block_source_layers(b)[0], self.block_source_layers(b)[-1]],
                    "timestep_interval": list(self.time_partition.block_interval(b)),
                    "training_interval": list(self.time_partition.training_interval(b)),
                    "converted_sha256": self.block_sha256[b],
                }
                for b in range(self.num_blocks)
            },
            "extra_stems": self.extra_stems,
            "scheduler_config": self.scheduler_config,
            "source": self.source,
            "init": self.init,
        }

    @classmethod
    def from_dict(cls, payload: Any, where: str = MANIFEST_NAME) -> "ConversionManifest":
        """The manifest in `payload` (what `diffusion_blocks.json` at `where` holds), every field checked before
        anything is built from it: a `ValueError` naming `where` and the field otherwise."""
        if not isinstance(payload, dict):
            raise ValueError(f"{where} holds JSON but not an object (a conversion manifest).")
        if payload.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{where} has format_version={payload.get('format_version')!r}; this library reads {FORMAT_VERSION}.")
        missing = [key for key in _REQUIRED_FIELDS if key not in payload]
        if missing:
            raise ValueError(f"{where} lacks {missing}: it is not a complete conversion manifest.")
        for key, kinds in _REQUIRED_FIELDS.items():
            if not isinstance(payload[key], kinds):
                allowed = " or ".join(_JSON_NAMES[kind] for kind in kinds)
                raise ValueError(f"{where}: {key} must be a JSON {allowed}, got {payload[key]!r}.")
        counts = payload["layers_per_block"]
        try:
            counts = [check_integer(count, f"layers_per_block[{index}]", minimum=1) for index, count in enumerate(counts)]
            layers_per_block = assign_layers_to_blocks(sum(counts), len(counts), counts)
            time_partition = TimeAxisPartition(**payload["time_partition"])
        except (ValueError, TypeError) as error:
            raise ValueError(f"{where}: {error}") from None
        try:
            LayerStack.from_manifest(payload["layer_list"], sum(layers_per_block))
        except ValueError as error:
            raise ValueError(f"{where}: layer_list {payload['layer_list']!r} is not a layer stack: {error}") from None
        if time_partition.num_blocks != len(layers_per_block):
            raise ValueError(
                f"{where}: time_partition has num_blocks={time_partition.num_blocks}, but layers_per_block has "
                f"{len(layers_per_block)} entries."
            )
        expected_keys = [str(b) for b in range(len(layers_per_block))]
        if sorted(payload["blocks"], key=str) != sorted(expected_keys) or not all(
            isinstance(entry, dict) and isinstance(entry.get("converted_sha256"), str) for entry in payload["blocks"].values()
        ):
            raise ValueError(
                f"{where}: blocks must have the keys {expected_keys}, each with a converted_sha256 string, "
                f"got keys {sorted(payload['blocks'])}."
            )
        extra_stems = payload.get("extra_stems", {})
        if not isinstance(extra_stems, dict) or not all(
            _IDENTIFIER.match(stem) and isinstance(prefix, str) for stem, prefix in extra_stems.items()
        ):
            raise ValueError(f"{where}: extra_stems must map stem names to tensor name prefixes, got {extra_stems!r}.")
        source_layers = _read_source_layers(payload, where)
        try:
            return cls(
                source_class=payload["source_class"],
                source_config=payload["source_config"],
                layer_list=payload["layer_list"],
                layers_per_block=layers_per_block,
                time_partition=time_partition,
                scheduler_config=payload["scheduler_config"],
                stems_sha256=payload["stems_sha256"],
                block_sha256={int(b): entry["converted_sha256"] for b, entry in payload["blocks"].items()},
                extra_stems=extra_stems,
                source=str(payload.get("source", "")),
                source_layers=source_layers,
                init=str(payload.get("init", "contiguous")),
            )
        except ValueError as error:  # source_layers that do not fit the blocks
            raise ValueError(f"{where}: {error}") from None


# what every manifest holds, and the JSON type(s) of each
_REQUIRED_FIELDS: dict[str, tuple[type, ...]] = {
    "source_class": (str,), "source_config": (dict,), "layer_list": (str, list), "layers_per_block": (list,),
    "time_partition": (dict,), "scheduler_config": (dict,), "stems_sha256": (str,), "blocks": (dict,),
}
_JSON_NAMES = {str: "string", dict: "object", list: "array"}
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _read_source_layers(payload: dict[str, Any], where: str) -> list[list[int]] | None:
    """The manifest's per-block source layers (None when absent: a contiguous conversion)."""
    value = payload.get("source_layers")
    if value is None:
        return None
    if not isinstance(value, list) or not all(
        isinstance(indices, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in indices) for indices in value
    ):
        raise ValueError(f"{where}: source_layers must be a list of integer lists, one per block, got {value!r}.")
    return [list(indices) for indices in value]


def write_converted_folder(
    directory: str,
    manifest: ConversionManifest,
    stems: dict[str, torch.Tensor],
    blocks: dict[int, dict[str, torch.Tensor]],
    training_steps: dict[int, int] | None = None,
) -> None:
    """Write config, manifest, stems, index and the given blocks (atomically, file by file)."""
    os.makedirs(directory, exist_ok=True)
    atomic_write_json(os.path.join(directory, CONFIG_NAME), manifest.source_config)
    atomic_write_json(os.path.join(directory, MANIFEST_NAME), manifest.to_dict())
    write_stems_file(os.path.join(directory, STEMS_NAME), stems, manifest)
    for block_index, tensors in blocks.items():
        save_block_file(
            os.path.join(directory, block_weights_name(block_index)),
            tensors,
            block_index=block_index,
            num_blocks=manifest.num_blocks,
            config_dict=manifest.identity(),
            training_steps=(training_steps or {}).get(block_index),
        )
    write_index_for(directory, manifest, stems)


def write_stems_file(path: str, stems: dict[str, torch.Tensor], manifest: ConversionManifest) -> None:
    tensors = {name: tensor.detach().contiguous().cpu() for name, tensor in stems.items()}
    metadata = {"format": "pt", "role": "stems", "source_class": manifest.source_class, "sha256": manifest.stems_sha256}
    atomic_write(path, lambda temporary: save_file(tensors, temporary, metadata=metadata))


def write_index_for(directory: str, manifest: ConversionManifest, stems: dict[str, torch.Tensor]) -> None:
    """Index every stem and every layer tensor (from the skeleton names of the source layers)."""
    weight_map = {name: STEMS_NAME for name in stems}
    total = sum(tensor.numel() * tensor.element_size() for tensor in stems.values())
    for block_index in range(manifest.num_blocks):
        path = os.path.join(directory, block_weights_name(block_index))
        if not os.path.isfile(path):
            continue
        with safe_open(path, framework="pt") as file:
            for name in file.keys():
                if name in weight_map:
                    continue  # a source layer several blocks start from: the first block holding it
                weight_map[name] = block_weights_name(block_index)
                tensor_slice = file.get_slice(name)
                total += _numel(tensor_slice.get_shape()) * _dtype_size(tensor_slice.get_dtype())
    write_index(os.path.join(directory, INDEX_NAME), weight_map, total)


def _numel(shape: Iterable[int]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count


def _dtype_size(name: str) -> int:
    return {"F64": 8, "I64": 8, "F32": 4, "I32": 4, "F16": 2, "BF16": 2, "I16": 2, "U8": 1, "I8": 1, "BOOL": 1}.get(name, 4)


# ---- reading --------------------------------------------------------------------------------------


def read_manifest(source: str, options: HubOptions = HubOptions()) -> ConversionManifest:
    path = resolve_file(source, MANIFEST_NAME, options)
    if path is None:
        where = f"{source}/{options.subfolder}" if options.subfolder else source
        raise ValueError(
            f"{where!r} has no {MANIFEST_NAME}: it is not a converted folder (make one with `hf-diffusionblocks convert`)."
        )
    return ConversionManifest.from_dict(read_json_file(path), where=path)


def load_tensors(path: str, names: Iterable[str] | None = None, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Read only `names` (all when None) from a safetensors file: other tensors are never read. A truncated or
    unreadable file raises a `ValueError` naming it."""
    try:
        with safe_open(path, framework="pt", device=device) as file:
            wanted = list(file.keys()) if names is None else list(names)
            return {name: file.get_tensor(name) for name in wanted}
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{path} cannot be read as safetensors ({error}): the file is truncated or corrupt.") from None


def load_stems(source: str, manifest: ConversionManifest, options: HubOptions = HubOptions()) -> dict[str, torch.Tensor]:
    path = resolve_file(source, STEMS_NAME, options)
    if path is None:
        raise ValueError(f"{source!r} has no {STEMS_NAME}.")
    tensors = load_tensors(path)
    if tensors_digest(tensors) != manifest.stems_sha256:
        raise ValueError(f"{path} does not match the stems digest in {MANIFEST_NAME}: the stems were changed or come from another conversion.")
    return tensors


def load_block(
    source: str, block_index: int, manifest: ConversionManifest, options: HubOptions = HubOptions(), path: str | None = None
) -> tuple[dict[str, torch.Tensor], int | None]:
    """Block `block_index`'s tensors (source names) and its training steps, after checking it belongs here."""
    path = path or resolve_file(source, block_weights_name(block_index), options)
    if path is None:
        raise ValueError(f"{source!r} has no {block_weights_name(block_index)} (block {block_index} of {manifest.num_blocks}).")
    check_block_file(path, block_index, manifest)
    # the whole file is read and checked against the checksum its metadata records (flipped bits are refused)
    return load_block_file(path), read_block_metadata(path)["training_steps"]


def check_block_file(path: str, block_index: int, manifest: ConversionManifest) -> None:
    """A `ValueError` when `path` is not block `block_index` of this conversion, naming what differs."""
    metadata = read_block_metadata(path)
    if metadata["block_index"] != block_index:
        raise ValueError(f"{path} holds block {metadata['block_index']}, expected block {block_index}.")
    expected = manifest.identity()
    differing = sorted(key for key in set(expected) | set(metadata["config"]) if metadata["config"].get(key) != expected.get(key))
    if differing:
        raise ValueError(f"{path} is a block of another conversion: {differing} differ from this folder's {MANIFEST_NAME}.")
