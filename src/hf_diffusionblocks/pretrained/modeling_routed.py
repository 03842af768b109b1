"""Routed transformers: a converted pretrained transformer that runs one block per call.

`RoutedDiTTransformer2DModel`, `RoutedPixArtTransformer2DModel`, `RoutedSD3Transformer2DModel` and
`RoutedFluxTransformer2DModel` subclass the diffusers class they were converted from, so they carry
its config and forward signature and drop into its pipelines unchanged (`pipe.transformer = routed`). They hold the stems
and the loaded blocks (`self.blocks["b"]`, each a `ModuleList` of that block's source layers);
`self.transformer_blocks` is empty. In `forward`, the timestep of each sample picks its block from
the conversion's time partition; a batch whose samples fall in different blocks is split, each
part runs its block alone, and the outputs are put back in order. One call therefore runs L/B
layers, not L.

PixArt, SD3 and Flux run their source class's own forward with its layer lists temporarily set to
the chosen block's layers (Flux has two lists, see `layer_stack.py`). DiT cannot: its output head
reads the embedder of `transformer_blocks[0]`, so its routed forward is written out and uses the
stem copy of that embedder (`output_conditioning_embedding`, see `conversion.py`).
"""

from __future__ import annotations

import copy
import inspect
import os
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from accelerate import init_empty_weights
from diffusers import DiTTransformer2DModel, FluxTransformer2DModel, PixArtTransformer2DModel, SD3Transformer2DModel
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from torch import nn

from ..hub_download import HubOptions
from ..loader_keywords import SAVE_KEYWORDS, check_keywords
from ..modeling.block_checkpoint import tensors_digest
from ..modeling.block_container import BlockContainerMixin, run_by_owning_block, validate_block_indices
from ..modeling.embeddings import unpatchify
from ..modeling.modeling_blocks import resolve_dtype, sort_loader_keywords
from .conversion import check_manifest_mapping
from .converted_folder import MANIFEST_NAME, ConversionManifest, load_block, load_stems, read_manifest, write_converted_folder
from .lora import merge_block_loras


def source_layer_name(name: str, manifest: ConversionManifest) -> str:
    """`blocks.<b>.<j>.rest` → the source name of the stack layer block b's layer j started from
    (`transformer_blocks.<i>.rest`, i = `manifest.block_source_layers(b)[j]`)."""
    _, block, local, rest = name.split(".", 3)
    return manifest.layer_stack.source_name(manifest.block_source_layers(int(block))[int(local)], rest)


def routed_layer_name(name: str, block_index: int, manifest: ConversionManifest) -> str:
    """The source name of stack layer `i` (`transformer_blocks.<i>.rest`) → `blocks.<b>.<j>.rest`, j the
    position of i among the source layers block b started from."""
    return f"blocks.{block_index}.{block_local_name(name, block_index, manifest)}"


def block_local_name(name: str, block_index: int, manifest: ConversionManifest) -> str:
    """The source name of a layer tensor of block `block_index` → `<j>.rest` inside the block."""
    located = manifest.layer_stack.split_source_name(name)
    if located is None:
        raise ValueError(f"tensor {name!r} is not a layer of {manifest.layer_stack.describe()}.")
    layer, rest = located
    indices = manifest.block_source_layers(block_index)
    if layer not in indices:
        raise ValueError(f"tensor {name!r} is not a layer of block {block_index} (it starts from source layers {indices}).")
    return f"{indices.index(layer)}.{rest}"


def block_layers(layers: list[nn.Module], manifest: ConversionManifest, block_index: int) -> list[nn.Module]:
    """The skeleton layers of block `block_index`: the source's modules, each a copy of its own (blocks of a
    non-contiguous init may start from the same source layer, and must not share its parameters)."""
    indices = manifest.block_source_layers(block_index)
    if manifest.is_contiguous:
        return [layers[i] for i in indices]
    return [copy.deepcopy(layers[i]) for i in indices]


def select_samples(value: Any, indices: torch.Tensor, batch: int) -> Any:
    """The samples `indices` of every per-sample tensor in `value` (dicts are walked; others kept)."""
    if isinstance(value, torch.Tensor) and value.ndim >= 1 and value.shape[0] == batch:
        return value.index_select(0, indices.to(value.device))
    if isinstance(value, dict):
        return {key: select_samples(item, indices, batch) for key, item in value.items()}
    return value


class RoutedTransformerMixin(BlockContainerMixin):
    """Block routing shared by the routed classes; the class attribute `source_class` names the diffusers class."""

    source_class: type
    # forward arguments that are not per sample (Flux's position ids): never split between blocks
    shared_arguments: tuple[str, ...] = ()
    # the axes of `hidden_states` (Flux: packed latent patches, one token each)
    sample_layout: tuple[str, ...] = ("N", "in_channels", "H", "W")

    # ---- loading --------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        block_index: int | Sequence[int] | None = None,
        *,
        subfolder: str = "",
        revision: str | None = None,
        cache_dir: str | None = None,
        token: str | bool | None = None,
        local_files_only: bool = False,
        force_download: bool = False,
        dtype: torch.dtype | str | None = None,
        device: str | torch.device | None = None,
        lora_dir: str | None = None,
        **kwargs: Any,
    ):
        """Load the stems and all blocks, or only `block_index` (an int or a list), from a converted folder or Hub repo.

        Only the requested blocks' files are read; the other layers are never built (they exist
        only as shapes while the skeleton is made). `lora_dir` merges per-block LoRA adapters
        saved by fine-tuning (`lora.py`) into the blocks that have one.
        """
        owner = f"{cls.__name__}.from_pretrained"
        dtype, device, download_options, unapplied = sort_loader_keywords(kwargs, dtype, device, owner)
        if unapplied:  # `config`, `verify_checksums`: what the table honours for block models only
            raise ValueError(f"{owner} got arguments it does not take: {sorted(unapplied)}.")
        options = HubOptions(subfolder, revision, cache_dir, token, local_files_only, force_download, download_options)
        source = str(pretrained_model_name_or_path)
        manifest = read_manifest(source, options)
        if manifest.source_class != cls.source_class.__name__:
            raise ValueError(
                f"{source} was converted from a {manifest.source_class}; load it with the routed class of that source, not {cls.__name__}."
            )
        where = f"{source}/{options.subfolder}" if options.subfolder else source
        check_manifest_mapping(manifest, f"{where}/{MANIFEST_NAME}")
        requested = range(manifest.num_blocks) if block_index is None else ([block_index] if isinstance(block_index, int) else block_index)
        indices = validate_block_indices(list(requested), manifest.num_blocks)

        model = cls.build_skeleton(manifest, indices)
        state = dict(load_stems(source, manifest, options))
        training_steps = {}
        for index in indices:
            tensors, steps = load_block(source, index, manifest, options)
            state.update({routed_layer_name(name, index, manifest): tensor for name, tensor in tensors.items()})
            if steps is not None:
                training_steps[index] = steps
        model.load_state_dict(state, strict=True, assign=True)
        model.block_training_steps = training_steps
        if lora_dir is not None:
            merge_block_loras(model, lora_dir)
        dtype = resolve_dtype(dtype, next((t.dtype for t in state.values() if t.is_floating_point()), torch.float32))
        if dtype is not None:
            model = model.to(dtype)
        if device is not None:
            model = model.to(device)
        return model.eval()

    @classmethod
    def build_skeleton(cls, manifest: ConversionManifest, block_indices: list[int]):
        """The model with empty (meta) weights: stems, the blocks `block_indices`, no other layer."""
        config = {key: value for key, value in manifest.source_config.items() if not key.startswith("_")}
        with init_empty_weights():
            model = cls.from_config(config)
        stack = manifest.layer_stack
        layers = [layer for name in stack.names for layer in model.get_submodule(name)]
        for stem, prefix in manifest.extra_stems.items():
            # a copy, not the layer's own module: fine-tuning that layer must not move the stem
            setattr(model, stem, copy.deepcopy(model.get_submodule(prefix)))
        blocks = nn.ModuleDict({str(b): nn.ModuleList(block_layers(layers, manifest, b)) for b in block_indices})
        for name in stack.names:
            model._modules[name] = nn.ModuleList()
        model.blocks = blocks
        model.conversion = manifest
        model.time_partition = manifest.time_partition
        model.block_training_steps = {}
        return model

    # ---- blocks ---------------------------------------------------------------------------------
    @property
    def num_blocks_total(self) -> int:
        return self.conversion.num_blocks

    def stem_parameters(self):
        return (parameter for name, parameter in self.named_parameters() if not name.startswith("blocks."))

    def block_state_dict(self, block_index: int) -> dict[str, torch.Tensor]:
        """Block `block_index`'s weights under their source names (`transformer_blocks.<i>.…`)."""
        prefix = f"blocks.{block_index}."
        return {
            source_layer_name(prefix + name, self.conversion): tensor
            for name, tensor in self.get_block(block_index).state_dict().items()
        }

    def stems_state_dict(self) -> dict[str, torch.Tensor]:
        return {name: tensor for name, tensor in self.state_dict().items() if not name.startswith("blocks.")}

    # ---- saving ---------------------------------------------------------------------------------
    def save_pretrained(
        self, save_directory: str | os.PathLike, block_indices: Sequence[int] | None = None, is_main_process: bool = True, **kwargs: Any
    ) -> None:
        """Write the converted folder with the loaded blocks (or `block_indices`), each with its training steps.

        The stems must be the conversion's (frozen); a block saved here is accepted by every folder
        of the same conversion. The ecosystem's `save_pretrained` keywords are sorted by `loader_keywords.SAVE_KEYWORDS`
        (a `variant` or unsafe serialization is refused by name).
        """
        check_keywords(kwargs, SAVE_KEYWORDS, f"{type(self).__name__}.save_pretrained")
        if not is_main_process:
            return
        indices = self.loaded_block_indices if block_indices is None else validate_block_indices(block_indices, self.conversion.num_blocks)
        stems = self.stems_state_dict()
        if tensors_digest(stems) != self.conversion.stems_sha256:
            raise ValueError(
                "the stems differ from the conversion's (trained, or cast to another dtype): save blocks with "
                "save_block_files(...) into the original folder, or convert again."
            )
        write_converted_folder(
            str(save_directory), self.conversion, stems, {b: self.block_state_dict(b) for b in indices}, self.block_training_steps
        )

    # ---- routing --------------------------------------------------------------------------------
    def axis_timestep(self, timestep: torch.Tensor) -> torch.Tensor:
        """The time partition's timestep (in `[0, T]`) of the `timestep` the source forward takes (the same here)."""
        return timestep

    def model_timestep(self, timestep: torch.Tensor) -> torch.Tensor:
        """The `timestep` argument of the source forward for a time partition timestep (the same here)."""
        return timestep

    def route(self, timestep: Any, batch: int) -> torch.Tensor:
        """The block of each of the `batch` samples, from their timestep (a scalar or one per sample)."""
        if timestep is None:
            raise ValueError(f"{type(self).__name__} needs `timestep`: it picks the block to run from it.")
        # on the CPU in float64 (not every accelerator has it): Flux's flow time × T must not round across a boundary
        t = self.axis_timestep(torch.as_tensor(timestep).detach().cpu().to(torch.float64)).reshape(-1)
        if t.numel() == 1:
            t = t.expand(batch)
        if t.numel() != batch:
            raise ValueError(f"timestep must be a scalar or have {batch} entries (one per sample), got {t.numel()}.")
        blocks = self.time_partition.block_index_for_level(t)
        missing = sorted(set(blocks.tolist()) - set(self.loaded_block_indices))
        if missing:
            raise ValueError(
                f"timesteps {t.tolist()} fall in blocks {missing}, which are not loaded (loaded: {self.loaded_block_indices})."
            )
        return blocks

    def routed_forward(self, *args: Any, **kwargs: Any):
        arguments = inspect.signature(self.source_class.forward).bind(self, *args, **kwargs).arguments
        arguments.pop("self")
        return_dict = arguments.pop("return_dict", True)
        hidden_states = arguments["hidden_states"]
        batch = hidden_states.shape[0]
        blocks = self.route(arguments.get("timestep"), batch)
        output = run_by_owning_block(
            blocks,
            lambda block_index, indices: self.run_block(
                block_index,
                arguments if indices is None else {
                    k: v if k in self.shared_arguments else select_samples(v, indices, batch) for k, v in arguments.items()
                },
            ),
        )
        return Transformer2DModelOutput(sample=output) if return_dict else (output,)

    def forward_block(self, block_index: int, *args: Any, **kwargs: Any):
        """Run block `block_index` on the whole batch whatever the timesteps (training: a block's
        overlap-widened interval reaches into its neighbours'). Arguments are the source forward's."""
        arguments = inspect.signature(self.source_class.forward).bind(self, *args, **kwargs).arguments
        arguments.pop("self")
        return_dict = arguments.pop("return_dict", True)
        self.get_block(block_index)
        output = self.run_block(block_index, arguments)
        return Transformer2DModelOutput(sample=output) if return_dict else (output,)

    def run_block(self, block_index: int, arguments: dict[str, Any]) -> torch.Tensor:
        """The source forward with its layer lists set to block `block_index`'s layers (each list gets the
        block's layers of that list; Flux: its double-stream layers, then its single-stream ones)."""
        indices = self.conversion.block_source_layers(block_index)
        parts = self.conversion.layer_stack.split_block(indices, list(self.blocks[str(block_index)]))
        empty = {name: self._modules[name] for name in parts}
        for name, layers in parts.items():
            self._modules[name] = nn.ModuleList(layers)
        try:
            return self.source_class.forward(self, **self.block_arguments(block_index, arguments), return_dict=False)[0]
        finally:
            self._modules.update(empty)

    def block_arguments(self, block_index: int, arguments: dict[str, Any]) -> dict[str, Any]:
        """Hook for classes whose forward takes per-layer arguments (SD3's `skip_layers`)."""
        return arguments


class RoutedDiTTransformer2DModel(RoutedTransformerMixin, DiTTransformer2DModel):
    """A converted `DiTTransformer2DModel` that runs one block per call (see the module docstring)."""

    source_class = DiTTransformer2DModel

    def forward(self, *args, **kwargs):
        return self.routed_forward(*args, **kwargs)

    forward.__signature__ = inspect.signature(DiTTransformer2DModel.forward)

    def run_block(self, block_index: int, arguments: dict[str, Any]) -> torch.Tensor:
        hidden_states, timestep = arguments["hidden_states"], arguments.get("timestep")
        class_labels, cross_attention_kwargs = arguments.get("class_labels"), arguments.get("cross_attention_kwargs")
        tokens = self.pos_embed(hidden_states)
        for layer in self.blocks[str(block_index)]:
            layer_arguments = (tokens, None, None, None, timestep, cross_attention_kwargs, class_labels)
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                tokens = self._gradient_checkpointing_func(layer, *layer_arguments)
            else:
                tokens = layer(*layer_arguments)
        # the head is conditioned by the source's layer-0 embedder, kept as a stem
        conditioning = self.output_conditioning_embedding(timestep, class_labels, hidden_dtype=tokens.dtype)
        shift, scale = self.proj_out_1(F.silu(conditioning)).chunk(2, dim=1)
        tokens = self.norm_out(tokens) * (1 + scale[:, None]) + shift[:, None]
        patches = self.proj_out_2(tokens)
        return unpatchify(patches, self.patch_size, self.out_channels)


class RoutedPixArtTransformer2DModel(RoutedTransformerMixin, PixArtTransformer2DModel):
    """A converted `PixArtTransformer2DModel` (Alpha or Sigma) that runs one block per call."""

    source_class = PixArtTransformer2DModel

    def forward(self, *args, **kwargs):
        return self.routed_forward(*args, **kwargs)

    forward.__signature__ = inspect.signature(PixArtTransformer2DModel.forward)


class RoutedSD3Transformer2DModel(RoutedTransformerMixin, SD3Transformer2DModel):
    """A converted `SD3Transformer2DModel` that runs one block per call.

    `skip_layers` (source layer indices) is honoured for the layers of the running block;
    ControlNet residuals (`block_controlnet_hidden_states`) are indexed over all L layers and are refused.
    """

    source_class = SD3Transformer2DModel

    def forward(self, *args, **kwargs):
        return self.routed_forward(*args, **kwargs)

    forward.__signature__ = inspect.signature(SD3Transformer2DModel.forward)

    def block_arguments(self, block_index: int, arguments: dict[str, Any]) -> dict[str, Any]:
        if arguments.get("block_controlnet_hidden_states") is not None:
            raise ValueError("block_controlnet_hidden_states is not supported by a routed SD3 transformer (its residuals index all layers).")
        arguments = dict(arguments)
        # the source pops IP-adapter embeddings from this dict: each block call gets its own copy
        if arguments.get("joint_attention_kwargs") is not None:
            arguments["joint_attention_kwargs"] = dict(arguments["joint_attention_kwargs"])
        if arguments.get("skip_layers") is not None:
            indices = self.conversion.block_source_layers(block_index)
            arguments["skip_layers"] = [local for local, i in enumerate(indices) if i in arguments["skip_layers"]]
        return arguments


class RoutedFluxTransformer2DModel(RoutedTransformerMixin, FluxTransformer2DModel):
    """A converted `FluxTransformer2DModel` that runs one block per call.

    A block is a slice of the concatenated stack (double-stream `transformer_blocks`, then
    `single_transformer_blocks`); the source forward runs with each list set to the block's layers of
    that list. A block that straddles the two lists passes its last double-stream layer's two streams
    (text, image) to its first single-stream layer, which joins them, as the source does between its
    lists; a block of single-stream layers only starts from the embedded text and image. The forward
    takes Flux's timestep, flow time in `[0, 1]` (the pipeline's `timestep / 1000`); the partition's
    axis is that time × T. The position ids `img_ids` / `txt_ids` are shared by every sample. ControlNet
    residuals (indexed over all layers of each list) are refused.
    """

    source_class = FluxTransformer2DModel
    shared_arguments = ("img_ids", "txt_ids")
    sample_layout = ("N", "tokens", "in_channels")

    def forward(self, *args, **kwargs):
        return self.routed_forward(*args, **kwargs)

    forward.__signature__ = inspect.signature(FluxTransformer2DModel.forward)

    def axis_timestep(self, timestep: torch.Tensor) -> torch.Tensor:
        return timestep * self.time_partition.num_train_timesteps

    def model_timestep(self, timestep: torch.Tensor) -> torch.Tensor:
        return timestep / self.time_partition.num_train_timesteps

    def block_arguments(self, block_index: int, arguments: dict[str, Any]) -> dict[str, Any]:
        for name in ("controlnet_block_samples", "controlnet_single_block_samples"):
            if arguments.get(name) is not None:
                raise ValueError(f"{name} is not supported by a routed Flux transformer (its residuals index all layers).")
        arguments = dict(arguments)
        # the source pops IP-adapter embeddings from this dict: each block call gets its own copy
        if arguments.get("joint_attention_kwargs") is not None:
            arguments["joint_attention_kwargs"] = dict(arguments["joint_attention_kwargs"])
        return arguments


ROUTED_CLASSES = {
    cls.source_class.__name__: cls
    for cls in (RoutedDiTTransformer2DModel, RoutedPixArtTransformer2DModel, RoutedSD3Transformer2DModel, RoutedFluxTransformer2DModel)
}


def routed_class_for(manifest_or_class_name: ConversionManifest | str) -> type:
    """The routed class of a conversion (or of a source class name)."""
    name = manifest_or_class_name if isinstance(manifest_or_class_name, str) else manifest_or_class_name.source_class
    if name not in ROUTED_CLASSES:
        raise ValueError(f"no routed class for {name!r}; supported: {sorted(ROUTED_CLASSES)}.")
    return ROUTED_CLASSES[name]


def load_routed_transformer(path_or_repo: str, block_index: int | Sequence[int] | None = None, **kwargs: Any):
    """Load a converted folder with the routed class of its source (read from `diffusion_blocks.json`)."""
    options = HubOptions(kwargs.get("subfolder", ""), kwargs.get("revision"), kwargs.get("cache_dir"), kwargs.get("token"),
                         kwargs.get("local_files_only", False))
    return routed_class_for(read_manifest(str(path_or_repo), options)).from_pretrained(path_or_repo, block_index, **kwargs)
