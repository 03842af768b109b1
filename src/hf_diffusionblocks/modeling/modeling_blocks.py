"""`DiffusionBlocksPreTrainedModel`: a `PreTrainedModel` made of B independent blocks.

Written once for every family. A family subclass only says how to build one block
(`build_block`) and how to run it (`forward_block`). This base class knows:
- which layers each block owns (`config.resolved_layers_per_block`);
- which blocks are materialised: `Model(config, block_indices=[b])` builds block b alone, so
  training or serving one block needs ≈1/B of the parameters;
- the parameters of one block (for its optimizer);
- saving one block or all blocks (`block_<b>.safetensors`, see `block_checkpoint.py`) and loading
  all of them or just one with `from_pretrained(path_or_repo, block_index=b)`.

Blocks share no trainable parameter: every embedder and readout lives inside its block.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar, Sequence

import torch
from torch import nn
from transformers import PreTrainedModel

from ..atomic_io import read_json_file
from ..hub_download import HubOptions, resolve_file
from ..loader_keywords import LOAD_KEYWORDS, SAVE_KEYWORDS, check_keywords, load_dtype, take_download_keywords
from ..remote_code import auto_map_for_model_class, write_remote_code_module
from .block_container import BlockContainerMixin, validate_block_indices
from .block_checkpoint import (
    CONFIG_NAME,
    atomic_write_json,
    INDEX_NAME,
    block_weights_name,
    load_block_file,
    read_block_metadata,
    save_block_file,
    write_index,
)
from .configuration_blocks import BlockPartitionedConfig

def device_from_loader_options(kwargs: dict[str, Any], device: str | torch.device | None, owner: str) -> str | torch.device | None:
    """Take the placement options (`use_safetensors`, `device_map`) out of `kwargs`, already sorted by
    `loader_keywords.check_keywords`; return the device to load on. Only what this loader does is accepted:
    safetensors block files (`use_safetensors` None/True) and one device (`device_map` None, 'auto', a device,
    or `{"": device}`)."""
    if kwargs.pop("use_safetensors", None) is False:
        raise ValueError(f"{owner} got use_safetensors=False: DiffusionBlocks blocks are stored as safetensors files only.")
    device_map = kwargs.pop("device_map", None)
    if isinstance(device_map, dict) and set(device_map) == {""}:
        device_map = device_map[""]
    if device_map is None or device_map == "auto":
        return device
    if isinstance(device_map, (str, int, torch.device)):
        return device if device is not None else device_map
    raise ValueError(f"{owner} got device_map={device_map!r}: give None, a device or {{'': device}} (one device for every block).")


def sort_loader_keywords(
    kwargs: dict[str, Any], dtype: torch.dtype | str | None, device: str | torch.device | None, owner: str
) -> tuple[torch.dtype | str | None, str | torch.device | None, dict[str, Any], dict[str, Any]]:
    """A loader's `**kwargs` sorted by the one table (`loader_keywords.LOAD_KEYWORDS`): unknown and unimplemented
    options refused by name, moot ones dropped. Returns the dtype asked for (`dtype` or `torch_dtype`), the device
    (`device` or `device_map`), huggingface_hub's download options, and the honoured keywords still unapplied
    (those the caller does not name as parameters)."""
    kwargs = check_keywords(kwargs, LOAD_KEYWORDS, owner)
    dtype = load_dtype({"dtype": dtype, "torch_dtype": kwargs.pop("torch_dtype", None)}, owner)
    device = device_from_loader_options(kwargs, device, owner)
    return dtype, device, take_download_keywords(kwargs), kwargs


def resolve_dtype(dtype: torch.dtype | str | None, stored: torch.dtype) -> torch.dtype | None:
    """The dtype to cast loaded blocks to: `"auto"` is the dtype the block files were saved in, a string names a
    torch dtype (`"float16"`), None keeps the model's."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return stored
    resolved = getattr(torch, str(dtype), None)
    if not isinstance(resolved, torch.dtype):
        raise ValueError(f"dtype must be a torch.dtype, its name (e.g. 'float16') or 'auto', got {dtype!r}.")
    return resolved


def per_sample_level(
    value: torch.Tensor | float, batch: int, name: str, device: torch.device, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """A noise level (σ or t) given as a scalar or one value per sample, as a `(batch,)` tensor; a
    `ValueError` naming `name` for any other shape."""
    value = torch.as_tensor(value, dtype=dtype, device=device)
    if value.ndim == 0:
        value = value.expand(batch)
    if value.shape != (batch,):
        raise ValueError(f"{name} must be a scalar or have shape ({batch},), got {tuple(value.shape)}.")
    return value


class DiffusionBlocksPreTrainedModel(BlockContainerMixin, PreTrainedModel):
    """Base class of every DiffusionBlocks model: B blocks, each a standalone module and checkpoint."""

    config_class = BlockPartitionedConfig
    base_model_prefix = "model"
    main_input_name = "sample"
    supports_gradient_checkpointing = True
    # The transformers Auto classes that resolve this model (the family's model class says which): they go into
    # config.json's `auto_map` on save, and the registry registers them. Empty: the folder gets no `auto_map`.
    auto_model_classes: ClassVar[tuple[type, ...]] = ()

    def __init__(self, config: BlockPartitionedConfig, block_indices: Sequence[int] | None = None):
        super().__init__(config)
        self.layers_per_block = config.resolved_layers_per_block
        # training steps of each block, recorded in its block file on save (filled by training and loading)
        self.block_training_steps: dict[int, int] = {}
        indices = range(config.num_blocks) if block_indices is None else validate_block_indices(block_indices, config.num_blocks)
        self.blocks = nn.ModuleDict(
            {str(block_index): self.build_block(block_index, self.layers_per_block[block_index]) for block_index in indices}
        )
        self.post_init()

    # ---- what a family provides ------------------------------------------------------------
    def build_block(self, block_index: int, num_layers: int) -> nn.Module:
        """Build block `block_index` with its own embedders, `num_layers` layers and readout."""
        raise NotImplementedError

    def forward_block(self, block_index: int, *args, **kwargs):
        """Run block `block_index` alone."""
        raise NotImplementedError

    # ---- weights initialisation (DiT): xavier linears, zero-init AdaLN and readouts --------
    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            if getattr(module, "_zero_init", False):
                nn.init.zeros_(module.weight)
            else:
                nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
        elif isinstance(module, nn.Conv2d):
            nn.init.xavier_uniform_(module.weight.view(module.weight.shape[0], -1))
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    # ---- blocks (lookups: BlockContainerMixin) --------------------------------------------
    @property
    def num_blocks_total(self) -> int:
        return self.config.num_blocks

    def block_state_dict(self, block_index: int) -> dict[str, torch.Tensor]:
        """Block `block_index`'s weights under their full names (`blocks.<b>.…`)."""
        prefix = f"blocks.{block_index}."
        return {prefix + name: tensor for name, tensor in self.get_block(block_index).state_dict().items()}

    def block_tensor_mismatches(self, block_index: int, shapes: dict[str, tuple[int, ...]]) -> list[str]:
        """What differs between the tensors (name → shape) a block file holds and what block `block_index`
        expects: missing, unexpected and reshaped tensors, one line each (empty when they match).
        Works on a skeleton built on the meta device, so a file can be checked without loading weights."""
        expected = {name: tuple(tensor.shape) for name, tensor in self.block_state_dict(block_index).items()}
        problems = [f"missing tensor {name}" for name in sorted(expected.keys() - shapes.keys())]
        problems += [f"unexpected tensor {name}" for name in sorted(shapes.keys() - expected.keys())]
        problems += [
            f"tensor {name} has shape {tuple(shapes[name])}, expected {expected[name]}"
            for name in sorted(expected.keys() & shapes.keys())
            if tuple(shapes[name]) != expected[name]
        ]
        return problems

    def load_block_weights(self, block_index: int, tensors: dict[str, torch.Tensor], source: str = "state dict") -> None:
        """Copy a block file's tensors (full names, `blocks.<b>.…`) into block `block_index`; a `ValueError`
        naming `source` lists every missing, unexpected or mis-shaped tensor."""
        problems = self.block_tensor_mismatches(block_index, {name: tuple(t.shape) for name, t in tensors.items()})
        if problems:
            raise ValueError(f"block {block_index} ({source}) does not fit this model: " + "; ".join(problems) + ".")
        prefix = f"blocks.{block_index}."
        self.get_block(block_index).load_state_dict({name[len(prefix):]: tensor for name, tensor in tensors.items()}, strict=True)

    def num_block_parameters(self, block_index: int) -> int:
        return sum(parameter.numel() for parameter in self.block_parameters(block_index))

    # ---- saving ----------------------------------------------------------------------------
    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        block_indices: Sequence[int] | None = None,
        is_main_process: bool = True,
        push_to_hub: bool = False,
        training_steps: dict[int, int] | None = None,
        **kwargs: Any,
    ) -> None:
        """Write config, index and one `block_<b>.safetensors` per block (all loaded blocks by default).

        Several processes may save different blocks into the same folder: each file is written
        atomically and the shared config/index are identical whoever writes them.
        """
        if push_to_hub:
            raise ValueError("use push_to_hub(...) or hf_diffusionblocks.push_block_to_hub to upload blocks.")
        check_keywords(kwargs, SAVE_KEYWORDS, f"{type(self).__name__}.save_pretrained")
        if os.path.isfile(save_directory):
            raise ValueError(f"save_directory {save_directory!r} is a file, not a folder.")
        indices = self.loaded_block_indices if block_indices is None else validate_block_indices(block_indices, self.config.num_blocks)
        for block_index in indices:
            self.get_block(block_index)
        if not is_main_process:
            return
        os.makedirs(save_directory, exist_ok=True)
        self.save_root_files(save_directory)
        for block_index in indices:
            steps = (training_steps or {}).get(block_index, self.block_training_steps.get(block_index))
            self.save_block(save_directory, block_index, training_steps=steps)

    def save_root_files(self, save_directory: str | os.PathLike) -> None:
        """config.json, the index mapping every weight of every block to its block file, and, for a model class
        that declares `auto_model_classes`, `auto_map` in config.json with the module it names, so that
        transformers' Auto classes load the folder with `trust_remote_code=True` (see `remote_code.py`)."""
        config = self.config
        config.architectures = [self.__class__.__name__]
        config_dict = config.to_dict()
        auto_map = auto_map_for_model_class(type(self))
        if auto_map is not None:
            config_dict["auto_map"] = auto_map
            write_remote_code_module(save_directory)
        atomic_write_json(os.path.join(save_directory, CONFIG_NAME), config_dict)
        with torch.device("meta"):
            skeleton = type(self)(config)
        weight_map = {name: block_weights_name(int(name.split(".")[1])) for name in skeleton.state_dict()}
        total_size = sum(t.numel() * t.element_size() for t in skeleton.state_dict().values())
        write_index(os.path.join(save_directory, INDEX_NAME), weight_map, total_size)

    def save_block(self, save_directory: str | os.PathLike, block_index: int, training_steps: int | None = None) -> str:
        """Write `block_<b>.safetensors` alone (atomically). Returns its path."""
        path = os.path.join(save_directory, block_weights_name(block_index))
        save_block_file(
            path,
            self.block_state_dict(block_index),
            block_index=block_index,
            num_blocks=self.config.num_blocks,
            config_dict=self.config.architecture_dict(),
            training_steps=training_steps,
        )
        return path

    # ---- loading ---------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *model_args: Any,
        block_index: int | Sequence[int] | None = None,
        config: BlockPartitionedConfig | None = None,
        subfolder: str = "",
        revision: str | None = None,
        cache_dir: str | None = None,
        token: str | bool | None = None,
        local_files_only: bool = False,
        force_download: bool = False,
        dtype: torch.dtype | str | None = None,
        device: str | torch.device | None = None,
        verify_checksums: bool = True,
        **kwargs: Any,
    ) -> "DiffusionBlocksPreTrainedModel":
        """Load all blocks, or only `block_index` (an int or a list), from a folder or Hub repo.

        Only the requested blocks' files are read (or downloaded), so loading one block needs
        ≈1/B of the memory. Missing blocks raise an error listing the missing and present ones;
        a block file trained under a different config raises an error naming the fields that differ;
        a truncated file, or one whose tensors do not match the checksum recorded at save time, raises
        an error naming the file (`verify_checksums=False` skips the hashing).
        """
        owner = f"{cls.__name__}.from_pretrained"
        if model_args:
            raise ValueError(f"{owner} takes no positional model arguments, got {model_args}.")
        dtype, device, download_options, unapplied = sort_loader_keywords(kwargs, dtype, device, owner)
        assert not unapplied, f"honoured keywords left unapplied: {sorted(unapplied)}"  # the table and this loader agree
        options = HubOptions(subfolder, revision, cache_dir, token, local_files_only, force_download, download_options)
        source = str(pretrained_model_name_or_path)
        if config is None:
            config = cls.load_config(source, options)

        requested = list(range(config.num_blocks)) if block_index is None else (
            list(block_index) if isinstance(block_index, (list, tuple, range)) else [block_index]
        )
        indices = validate_block_indices(requested, config.num_blocks)
        files = {index: resolve_file(source, block_weights_name(index), options) for index in indices}
        missing = [index for index, path in files.items() if path is None]
        if missing:
            present = [
                index for index in range(config.num_blocks)
                if index not in missing and (files.get(index) or resolve_file(source, block_weights_name(index), options))
            ]
            raise ValueError(
                f"{source}{'/' + subfolder if subfolder else ''} is missing blocks {missing} "
                f"(present: {present}, num_blocks={config.num_blocks})."
            )

        model = cls(config, block_indices=indices)
        stored_dtype = torch.float32
        for index, path in files.items():
            metadata = cls.check_block_file(path, index, config)
            if metadata["training_steps"] is not None:
                model.block_training_steps[index] = metadata["training_steps"]
            tensors = load_block_file(path, verify_checksum=verify_checksums)
            stored_dtype = next((t.dtype for t in tensors.values() if t.is_floating_point()), stored_dtype)
            model.load_block_weights(index, tensors, source=path)
        dtype = resolve_dtype(dtype, stored_dtype)
        if dtype is not None:
            model = model.to(dtype)
        if device is not None:
            model = model.to(device)
        model.eval()
        return model

    @classmethod
    def load_config(cls, source: str, options: HubOptions = HubOptions()) -> BlockPartitionedConfig:
        """Read config.json and check it belongs to this model family."""
        path = resolve_file(source, CONFIG_NAME, options)
        if path is None:
            where = f"{source}/{options.subfolder}" if options.subfolder else source
            raise ValueError(f"no {CONFIG_NAME} found in {where!r} (a folder or Hub repo of a DiffusionBlocks model).")
        config_dict = read_json_file(path)
        if not isinstance(config_dict, dict):
            raise ValueError(f"{path} holds JSON but not an object of config fields.")
        expected = cls.config_class.model_type
        if config_dict.get("model_type") != expected:
            raise ValueError(
                f"{source} holds a checkpoint of model_type={config_dict.get('model_type')!r}, "
                f"but {cls.__name__} expects model_type={expected!r}."
            )
        config_dict.pop("transformers_version", None)
        return cls.config_class.from_dict(config_dict)

    @classmethod
    def check_block_file(cls, path: str, block_index: int, config: BlockPartitionedConfig) -> dict[str, Any]:
        """Verify a block file is block `block_index` of a model with exactly this config."""
        metadata = read_block_metadata(path)
        if metadata["block_index"] != block_index:
            raise ValueError(f"{path} holds block {metadata['block_index']}, expected block {block_index}.")
        differing = config.differing_fields(metadata["config"])
        if differing:
            details = ", ".join(
                f"{name}: config={config.architecture_dict().get(name)!r} vs block={metadata['config'].get(name)!r}"
                for name in differing
            )
            raise ValueError(f"block {block_index} ({path}) was trained under a different config; differing fields: {details}.")
        return metadata
