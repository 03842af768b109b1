"""Converting a diffusers transformer folder into a block folder (see `converted_folder.py`).

Every supported class is listed with an explicit mapping: which module list is the homogeneous
layer stack that blocks slice, and which top-level modules are the shared stems. A tensor that is
neither is an error, so a variant of a class with a module this mapping does not know is refused
instead of silently dropped.

- `DiTTransformer2DModel`: layers `transformer_blocks`; stems `pos_embed`, `proj_out_1`, `proj_out_2`.
  DiT keeps its timestep/class embedder inside every layer's AdaLN, and its output head reuses
  layer 0's (`transformer_blocks.0.norm1.emb`). That embedder is copied into the stems as
  `output_conditioning_embedding`, so every block's head is conditioned as the source's was while
  block 0's own copy is free to be fine-tuned.
- `PixArtTransformer2DModel`: layers `transformer_blocks`; stems `pos_embed`, `adaln_single`,
  `caption_projection`, `scale_shift_table`, `proj_out`.
- `SD3Transformer2DModel`: layers `transformer_blocks` (joint blocks); stems `pos_embed`,
  `time_text_embed`, `context_embedder`, `norm_out`, `proj_out`. The last source layer is
  `context_pre_only` (it drops the text stream); it stays the last layer of the last block, and the
  other blocks end on an ordinary joint layer whose text output is discarded, as the source does
  at every layer but the last.

- `FluxTransformer2DModel`: two layer lists run in order, the double-stream `transformer_blocks`
  (`num_layers`) then the single-stream `single_transformer_blocks` (`num_single_layers`); blocks
  slice their concatenation (`layer_stack.py`), so one block may hold layers of both. Stems
  `pos_embed`, `time_text_embed` (with the guidance embedder of guidance-distilled variants),
  `context_embedder`, `x_embedder`, `norm_out`, `proj_out`. The time axis is flow matching with the
  scheduler's static `shift`; a scheduler with dynamic (resolution-dependent) shifting is refused
  (`time_axis.py`): a partition needs one fixed map from timestep to training mass.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from safetensors import SafetensorError, safe_open

from ..atomic_io import atomic_save_folder, read_json_file
from ..hub_download import path_inside
from ..modeling.block_checkpoint import CONFIG_NAME, tensors_digest
from ..partition import assign_layers_to_blocks
from .converted_folder import ConversionManifest, write_converted_folder
from .initial_layers import INITS, contiguous_layers, initial_source_layers
from .layer_stack import LayerStack
from .time_axis import TimeAxisPartition, time_partition_from_scheduler_config

SOURCE_WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
SOURCE_INDEX_NAME = "diffusion_pytorch_model.safetensors.index.json"


@dataclass(frozen=True)
class ClassMapping:
    """How one diffusers transformer class splits into stems and a layer stack."""

    class_name: str
    stem_modules: tuple[str, ...]
    default_time_axis: str
    # the module lists blocks slice, in execution order, each with the config key of its length
    layer_lists: tuple[tuple[str, str], ...] = (("transformer_blocks", "num_layers"),)
    # stem name → source tensor prefix copied into it (DiT's output-head embedder)
    copied_stems: dict[str, str] = field(default_factory=dict)


CLASS_MAPPINGS: dict[str, ClassMapping] = {
    "DiTTransformer2DModel": ClassMapping(
        "DiTTransformer2DModel", ("pos_embed", "norm_out", "proj_out_1", "proj_out_2"), "ddpm",
        copied_stems={"output_conditioning_embedding": "transformer_blocks.0.norm1.emb"},
    ),
    "PixArtTransformer2DModel": ClassMapping(
        "PixArtTransformer2DModel",
        ("pos_embed", "adaln_single", "caption_projection", "norm_out", "scale_shift_table", "proj_out"), "ddpm",
    ),
    "SD3Transformer2DModel": ClassMapping(
        "SD3Transformer2DModel", ("pos_embed", "time_text_embed", "context_embedder", "norm_out", "proj_out", "image_proj"), "flow",
    ),
    "FluxTransformer2DModel": ClassMapping(
        "FluxTransformer2DModel", ("pos_embed", "time_text_embed", "context_embedder", "x_embedder", "norm_out", "proj_out"), "flow",
        layer_lists=(("transformer_blocks", "num_layers"), ("single_transformer_blocks", "num_single_layers")),
    ),
}

# What each known-but-unsupported class lacks, for the error message.
UNSUPPORTED_REASONS = {
    "SanaTransformer2DModel": "no stem/layer mapping has been written for it",
    "HunyuanDiT2DModel": "long skip connections between layers, so its layers are not an independent residual stack",
    "UNet2DConditionModel": "no homogeneous layer stack (a U-Net, not a transformer)",
}


def layer_stack_of(mapping: ClassMapping, source_config: dict, where: str | None = None) -> LayerStack:
    """The layer lists of a source config, with their lengths read from the config keys the mapping names
    (`where`: the config's file, for the error)."""
    counts = []
    for name, key in mapping.layer_lists:
        count = source_config.get(key)
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            where = where or f"the {mapping.class_name} config.json"
            raise ValueError(f"{where} needs an integer {key!r} (the length of {name}), got {count!r}.")
        counts.append((name, count))
    return LayerStack(tuple(counts))


def mapping_for(class_name: str) -> ClassMapping:
    if class_name in CLASS_MAPPINGS:
        return CLASS_MAPPINGS[class_name]
    reason = UNSUPPORTED_REASONS.get(class_name, "no stem/layer mapping is registered for it")
    raise ValueError(
        f"cannot convert a {class_name!r}: {reason}. Supported classes: {sorted(CLASS_MAPPINGS)}."
    )


def source_is_not_diffusers_model(model_dir: str, config: object) -> str:
    """Why a config.json without diffusers' `_class_name` cannot be converted: what the folder is instead."""
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if isinstance(model_type, str) and model_type.startswith("diffusion_blocks"):
        what = (f"a DiffusionBlocks model (model_type {model_type!r}), already split into "
                f"{config.get('num_blocks', 'its')} blocks: sample or fine-tune it as it is")
    elif model_type is not None:
        what = f"a transformers model (model_type {model_type!r})"
    else:
        what = "not a diffusers model (no _class_name)"
    return (f"cannot convert {model_dir!r}: its {CONFIG_NAME} is {what}; convert takes a diffusers "
            f"{' / '.join(sorted(CLASS_MAPPINGS))} folder or a pipeline folder holding one.")


def check_manifest_mapping(manifest: ConversionManifest, where: str) -> None:
    """A `ValueError` naming `where` (the manifest's file) when the fields the source class decides (its layer lists
    and their lengths in the source config, the stems copied out of a layer) are not what this class's mapping says:
    an edited manifest would otherwise slice the wrong modules or condition the head on another layer's embedder."""
    mapping = mapping_for(manifest.source_class)
    stack = layer_stack_of(mapping, manifest.source_config, where=f"{where}: source_config")
    for name, recorded, expected in (
        ("layer_list", manifest.layer_list, stack.to_manifest()),
        ("extra_stems", manifest.extra_stems, mapping.copied_stems),
    ):
        if recorded != expected:
            raise ValueError(
                f"{where}: {name}={recorded!r}, but a converted {manifest.source_class} has {name}={expected!r}: "
                "the manifest was edited; convert the source again."
            )
    if sum(manifest.layers_per_block) != stack.num_layers:
        lengths = ", ".join(f"{key}={manifest.source_config.get(key)}" for _, key in mapping.layer_lists)
        raise ValueError(
            f"{where}: layers_per_block={manifest.layers_per_block} sums to {sum(manifest.layers_per_block)}, but "
            f"source_config gives {stack.describe()} {stack.num_layers} layers ({lengths})."
        )


def locate_transformer(source: str, subfolder: str | None = None) -> tuple[str, str | None]:
    """(model folder, pipeline folder or None): a pipeline folder is one with `model_index.json`."""
    if not os.path.isdir(source):
        raise ValueError(f"source {source!r} is not a folder (a diffusers transformer or pipeline folder).")
    is_pipeline = os.path.isfile(os.path.join(source, "model_index.json"))
    if subfolder is None:
        subfolder = "transformer" if is_pipeline else ""
    model_dir = path_inside(source, subfolder, "subfolder") if subfolder else source
    if not os.path.isfile(os.path.join(model_dir, CONFIG_NAME)):
        raise ValueError(f"{model_dir!r} has no {CONFIG_NAME}; pass subfolder= for a pipeline folder (usually 'transformer').")
    return model_dir, source if is_pipeline else None


def source_weight_files(model_dir: str) -> list[str]:
    """The safetensors files of the source: the single file, or the shards its index names (each inside
    `model_dir`: a shard name that is absolute, climbs out with `..` or leaves through a link is refused)."""
    single = os.path.join(model_dir, SOURCE_WEIGHTS_NAME)
    if os.path.isfile(single):
        return [single]
    index = os.path.join(model_dir, SOURCE_INDEX_NAME)
    if os.path.isfile(index):
        weight_map = read_json_file(index)
        weight_map = weight_map.get("weight_map") if isinstance(weight_map, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise ValueError(f"{index} has no weight_map (an object of tensor name -> shard file).")
        paths = []
        for shard in sorted(set(map(str, weight_map.values()))):
            path = path_inside(model_dir, shard, f"{index}: shard")
            if not os.path.isfile(path):
                raise ValueError(f"{index} names shard {shard!r}, which is not a file in {model_dir!r}.")
            paths.append(path)
        return paths
    raise ValueError(f"{model_dir!r} has neither {SOURCE_WEIGHTS_NAME} nor {SOURCE_INDEX_NAME} (only safetensors weights are read).")


def read_scheduler_config(pipeline_dir: str | None) -> dict | None:
    if pipeline_dir is None:
        return None
    path = os.path.join(pipeline_dir, "scheduler", "scheduler_config.json")
    if not os.path.isfile(path):
        return None
    config = read_json_file(path)
    if not isinstance(config, dict):
        raise ValueError(f"{path} holds JSON but not an object (a scheduler config).")
    return config


def default_scheduler_config(time_axis: str) -> dict:
    """The scheduler used for fine-tuning objectives when the source folder has none."""
    from diffusers import DDPMScheduler, FlowMatchEulerDiscreteScheduler

    scheduler = DDPMScheduler() if time_axis == "ddpm" else FlowMatchEulerDiscreteScheduler(shift=3.0)
    return {"_class_name": type(scheduler).__name__, **dict(scheduler.config)}


def conversion_time_partition(
    mapping: ClassMapping, class_name: str, pipeline_dir: str | None, scheduler_config: dict | None, num_blocks: int,
    **partition_options: Any,
) -> tuple[dict, TimeAxisPartition]:
    """The scheduler config a conversion records (given, else the pipeline's, else the class default) and the
    partition of its time axis into `num_blocks` blocks; a `ValueError` when that axis is not the one the
    source class is trained on."""
    where = "scheduler_config"
    if scheduler_config is None:
        scheduler_config = read_scheduler_config(pipeline_dir)
        if scheduler_config is not None:
            where = os.path.join(pipeline_dir, "scheduler", "scheduler_config.json")
    scheduler_config = scheduler_config or default_scheduler_config(mapping.default_time_axis)
    time_partition = time_partition_from_scheduler_config(scheduler_config, num_blocks, where=where, **partition_options)
    if time_partition.time_axis != mapping.default_time_axis:
        raise ValueError(
            f"scheduler {scheduler_config.get('_class_name')!r} gives a {time_partition.time_axis!r} time axis, "
            f"but {class_name} models are trained on a {mapping.default_time_axis!r} axis."
        )
    return scheduler_config, time_partition


def convert_pretrained_transformer(
    source: str,
    output_dir: str,
    num_blocks: int,
    *,
    subfolder: str | None = None,
    partition: str = "equiprobable",
    overlap: float = 0.05,
    layers_per_block: Sequence[int] | None = None,
    logit_mean: float = 0.0,
    logit_std: float = 1.0,
    scheduler_config: dict | None = None,
    init: str = "strided",
) -> ConversionManifest:
    """Split a diffusers transformer into stems and `num_blocks` block files in `output_dir`.

    Args:
        source (`str`): a diffusers model folder (`config.json` + safetensors) or pipeline folder.
        output_dir (`str`): the converted folder to write (must not already hold a conversion).
        num_blocks (`int`): B, at most the number of layers.
        subfolder (`str`, *optional*): the transformer's folder in a pipeline (`"transformer"` when
            `source` has a `model_index.json`).
        partition (`str`, defaults to `"equiprobable"`): `"equiprobable"` or `"uniform"` on the model's time axis.
        overlap (`float`, defaults to 0.05): training overlap γ ∈ [0, 1).
        layers_per_block (`list[int]`, *optional*): uneven layer counts (default: L / B each).
        logit_mean, logit_std (`float`): the logit-normal the flow model was trained with (SD3: 0, 1).
        scheduler_config (`dict`, *optional*): overrides the pipeline's `scheduler/scheduler_config.json`
            (and the class default when there is none); it sets the time axis and the fine-tuning objective.
        init (`str`, defaults to `"strided"`): which source layers each block starts from, `"strided"`
            (each block: layers spread evenly over the whole depth, first and last kept; it recovers the
            source's quality in a fraction of the fine-tuning steps, docs/results/pretrained.md) or
            `"contiguous"` (block b: the b-th slice; the blocks together are the source exactly); see
            `initial_layers.py`.
    Returns:
        The `ConversionManifest` written to `diffusion_blocks.json`.
    """
    model_dir, pipeline_dir = locate_transformer(source, subfolder)
    config_path = os.path.join(model_dir, CONFIG_NAME)
    source_config = read_json_file(config_path)
    if not isinstance(source_config, dict):
        raise ValueError(f"{config_path} holds JSON but not an object (a diffusers model config).")
    class_name = source_config.get("_class_name")
    if class_name is None:
        raise ValueError(source_is_not_diffusers_model(model_dir, source_config))
    mapping = mapping_for(str(class_name))
    stack = layer_stack_of(mapping, source_config, where=config_path)
    layers, source_layers = choose_block_layers(stack, num_blocks, layers_per_block, init, class_name)
    if os.path.isfile(os.path.join(output_dir, "diffusion_blocks.json")):
        raise ValueError(f"output_dir {output_dir!r} already holds a converted folder; choose an empty folder.")

    scheduler_config, time_partition = conversion_time_partition(
        mapping, class_name, pipeline_dir, scheduler_config, num_blocks,
        partition=partition, overlap=overlap, logit_mean=logit_mean, logit_std=logit_std,
    )

    stems, blocks = split_source_weights(source_weight_files(model_dir), mapping, stack, source_layers, class_name)
    contiguous = source_layers == contiguous_layers(layers)  # e.g. B = 1: every init keeps all layers in order
    manifest = ConversionManifest(
        source_class=class_name,
        source_config=source_config,
        layer_list=stack.to_manifest(),
        layers_per_block=layers,
        time_partition=time_partition,
        scheduler_config=scheduler_config,
        stems_sha256=tensors_digest(stems),
        block_sha256={b: tensors_digest(blocks[b]) for b in range(num_blocks)},
        extra_stems=dict(mapping.copied_stems),
        source=os.path.abspath(source),
        source_layers=None if contiguous else source_layers,
        init=init,
    )
    atomic_save_folder(output_dir, lambda staging: write_converted_folder(staging, manifest, stems, blocks), last=("diffusion_blocks.json",))
    return manifest


def choose_block_layers(
    stack: LayerStack, num_blocks: int, layers_per_block: Sequence[int] | None, init: str, class_name: str
) -> tuple[list[int], list[list[int]]]:
    """(layer count of each block, the source stack indices each block starts from under `init`)."""
    num_layers = stack.num_layers
    if not isinstance(num_blocks, int) or isinstance(num_blocks, bool) or not 1 <= num_blocks <= num_layers:
        raise ValueError(f"num_blocks must be an integer in [1, {num_layers}] (the {stack.describe()} of this {class_name}), got {num_blocks!r}.")
    if layers_per_block is None and num_layers % num_blocks:
        # uneven split when B does not divide L: the first L mod B blocks get one more layer
        base, extra = divmod(num_layers, num_blocks)
        layers_per_block = [base + (1 if b < extra else 0) for b in range(num_blocks)]
    layers = assign_layers_to_blocks(num_layers, num_blocks, layers_per_block)
    if init not in INITS:
        raise ValueError(f"init must be one of {list(INITS)}, got {init!r}.")
    return layers, initial_source_layers(init, num_layers, layers)


def split_source_weights(
    files: list[str], mapping: ClassMapping, stack: LayerStack, source_layers: list[list[int]], class_name: str
) -> tuple[dict[str, torch.Tensor], dict[int, dict[str, torch.Tensor]]]:
    """Read the source tensors once and sort them into stems and blocks (source names kept); a layer goes to
    every block whose `source_layers` list it is in (each gets its own copy), and to none when it is in none."""
    owners: list[list[int]] = [[] for _ in range(stack.num_layers)]
    for b, indices in enumerate(source_layers):
        for index in indices:
            owners[index].append(b)
    stems: dict[str, torch.Tensor] = {}
    blocks: dict[int, dict[str, torch.Tensor]] = {b: {} for b in range(len(source_layers))}
    for path in files:
        try:
            _split_file(path, mapping, stack, owners, stems, blocks, class_name)
        except (SafetensorError, OSError) as error:
            raise ValueError(f"{path} cannot be read as safetensors ({error}): the file is truncated or corrupt.") from None
    empty = [b for b, tensors in blocks.items() if not tensors]
    if empty:
        raise ValueError(f"blocks {empty} received no tensors: the source weights lack layers of {stack.describe()}.")
    return stems, blocks


def _split_file(
    path: str, mapping: ClassMapping, stack: LayerStack, owners: list[list[int]], stems: dict[str, torch.Tensor],
    blocks: dict[int, dict[str, torch.Tensor]], class_name: str,
) -> None:
    """Sort the tensors of one source file into `stems` and `blocks` (see `split_source_weights`)."""
    with safe_open(path, framework="pt") as file:
        for name in file.keys():
            try:
                layer = stack.index_of(name)
            except ValueError as error:
                raise ValueError(f"{path}: {error} (from config.json)") from None
            if layer is not None:
                if layer >= len(owners):
                    raise ValueError(f"{path} holds {name!r}, but the config has only {len(owners)} layers.")
                for block_index in owners[layer]:  # each block that starts from this layer gets its own copy
                    blocks[block_index][name] = file.get_tensor(name)
            elif name.split(".", 1)[0] in mapping.stem_modules:
                stems[name] = file.get_tensor(name)
            else:
                raise ValueError(
                    f"{class_name} tensor {name!r} belongs neither to the layer lists {list(stack.names)} "
                    f"nor to the known stems {list(mapping.stem_modules)}: this variant is not supported."
                )
            for stem, prefix in mapping.copied_stems.items():
                if name.startswith(prefix + "."):
                    stems[stem + name[len(prefix):]] = file.get_tensor(name)
