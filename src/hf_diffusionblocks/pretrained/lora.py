"""Per-block LoRA adapters (through `peft`): injected into one block, saved alone, merged on load.

An adapter file is a library block file (`block_<b>.safetensors`, atomic, with metadata) holding
only block b's LoRA tensors under source layer names (`transformer_blocks.<i>.attn1.to_q.lora_A.weight`).
Its metadata `config` is the conversion's identity plus the LoRA settings, so an adapter is merged
only into blocks of the conversion it was trained on.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

import torch
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from ..argument_checks import check_integer, check_number
from ..modeling.block_checkpoint import block_weights_name, read_block_metadata, save_block_file
from .converted_folder import ConversionManifest, load_tensors

DEFAULT_TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0")


@dataclass(frozen=True)
class LoraSettings:
    """The LoRA of one block: rank, alpha, dropout and the layer-relative module names it adapts."""

    rank: int = 8
    alpha: float = 8.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] = field(default=DEFAULT_TARGET_MODULES)

    def __post_init__(self):
        check_integer(self.rank, "lora rank", minimum=1)
        # alpha / rank scales the adapter's output: NaN or inf would train NaN adapters without a word
        object.__setattr__(self, "alpha", check_number(self.alpha, "lora alpha", minimum=0, minimum_exclusive=True))
        object.__setattr__(self, "dropout", check_number(self.dropout, "lora dropout", minimum=0, maximum=1,
                                                         maximum_exclusive=True))
        if isinstance(self.target_modules, str) or not self.target_modules or not all(
            isinstance(name, str) and name for name in self.target_modules
        ):
            raise ValueError(f"lora target_modules must name at least one module, got {self.target_modules!r}.")

    def peft_config(self) -> LoraConfig:
        return LoraConfig(r=self.rank, lora_alpha=self.alpha, lora_dropout=self.dropout, target_modules=list(self.target_modules))

    def to_dict(self) -> dict:
        return {**asdict(self), "target_modules": list(self.target_modules)}


def adapter_identity(manifest: ConversionManifest, settings: LoraSettings) -> dict:
    return {**manifest.identity(), "lora": settings.to_dict()}


def inject_block_lora(block: nn.Module, settings: LoraSettings) -> list[nn.Parameter]:
    """Add LoRA layers to one block's `ModuleList` in place; returns the adapter parameters (the only trainable ones)."""
    inject_adapter_in_model(settings.peft_config(), block)
    parameters = [parameter for name, parameter in block.named_parameters() if "lora_" in name]
    if not parameters:
        raise ValueError(f"lora target_modules {list(settings.target_modules)} matched no module of the block.")
    for name, parameter in block.named_parameters():
        parameter.requires_grad_("lora_" in name)
    return parameters


def block_lora_state_dict(block: nn.Module, block_index: int, manifest: ConversionManifest) -> dict[str, torch.Tensor]:
    """The adapter tensors of block `block_index` under source layer names."""
    indices = manifest.block_source_layers(block_index)
    renamed = {}
    for name, tensor in get_peft_model_state_dict(block).items():
        local, rest = name.split(".", 1)
        renamed[manifest.layer_stack.source_name(indices[int(local)], rest)] = tensor
    return renamed


def load_block_lora_state(block: nn.Module, tensors: dict[str, torch.Tensor], block_index: int, manifest: ConversionManifest) -> None:
    """Put saved adapter tensors (source names) into a block that already has LoRA injected."""
    indices = manifest.block_source_layers(block_index)
    local = {}
    for name, tensor in tensors.items():
        located = manifest.layer_stack.split_source_name(name)
        if located is None or located[0] not in indices:
            raise ValueError(f"adapter of block {block_index} holds {name!r}, which is not a layer of that block "
                             f"(source layers {indices} of {manifest.layer_stack.describe()}).")
        local[f"{indices.index(located[0])}.{located[1]}"] = tensor
    result = set_peft_model_state_dict(block, local)
    if result.unexpected_keys:
        raise ValueError(f"adapter of block {block_index} has tensors the block does not: {result.unexpected_keys[:5]}.")


def save_block_lora(
    path: str, block: nn.Module, block_index: int, manifest: ConversionManifest, settings: LoraSettings, training_steps: int | None
) -> str:
    save_block_file(
        path, block_lora_state_dict(block, block_index, manifest), block_index=block_index,
        num_blocks=manifest.num_blocks, config_dict=adapter_identity(manifest, settings), training_steps=training_steps,
    )
    return path


def read_lora_settings(path: str) -> LoraSettings:
    config = read_block_metadata(path)["config"]
    if "lora" not in config:
        raise ValueError(f"{path} is a block file, not a LoRA adapter (its metadata has no 'lora').")
    lora = config["lora"]
    return LoraSettings(lora["rank"], lora["alpha"], lora["dropout"], tuple(lora["target_modules"]))


def check_adapter_file(path: str, block_index: int, manifest: ConversionManifest, settings: LoraSettings | None = None) -> LoraSettings:
    """The adapter's settings, after checking it is block `block_index` of this conversion."""
    settings = settings or read_lora_settings(path)
    metadata = read_block_metadata(path)
    if metadata["block_index"] != block_index:
        raise ValueError(f"{path} holds the adapter of block {metadata['block_index']}, expected block {block_index}.")
    wanted = adapter_identity(manifest, settings)
    differing = sorted(key for key in set(wanted) | set(metadata["config"]) if metadata["config"].get(key) != wanted.get(key))
    if differing:
        raise ValueError(f"{path} is an adapter of another conversion or LoRA setting: {differing} differ.")
    return settings


def merge_block_loras(model, lora_dir: str) -> list[int]:
    """Merge `lora_dir/block_<b>.safetensors` into every loaded block b that has one; returns those blocks."""
    if not os.path.isdir(lora_dir):
        raise ValueError(f"lora_dir {lora_dir!r} is not a folder.")
    merged = []
    for block_index in model.loaded_block_indices:
        path = os.path.join(lora_dir, block_weights_name(block_index))
        if not os.path.isfile(path):
            continue
        settings = check_adapter_file(path, block_index, model.conversion)
        block = model.blocks[str(block_index)]
        inject_block_lora(block, settings)
        load_block_lora_state(block, load_tensors(path), block_index, model.conversion)
        merge_and_remove_lora(block)
        merged.append(block_index)
    if not merged:
        raise ValueError(f"lora_dir {lora_dir!r} holds no adapter of the loaded blocks {model.loaded_block_indices}.")
    return merged


def merge_and_remove_lora(module: nn.Module) -> None:
    """Fold every LoRA layer into its base layer's weight and put the base layer back."""
    for name, child in list(module.named_modules()):
        if isinstance(child, BaseTunerLayer):
            child.merge()
            parent_name, _, attribute = name.rpartition(".")
            setattr(module.get_submodule(parent_name) if parent_name else module, attribute, child.get_base_layer())
    for parameter in module.parameters():
        parameter.requires_grad_(False)


__all__ = [
    "DEFAULT_TARGET_MODULES", "LoraSettings", "block_lora_state_dict", "check_adapter_file",
    "inject_block_lora", "load_block_lora_state", "merge_block_loras", "save_block_lora",
]
