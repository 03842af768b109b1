"""`hf-diffusionblocks info PATH_OR_REPO`: what a model folder, pipeline folder or Hub repo holds.

Model type, partition table, and every block's file status (present, missing, or foreign: a file that is not
this model's block), read from config.json and the block files' headers without loading weights. A folder
written by `convert` (a pretrained diffusers transformer split into blocks) is described from its manifest.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

from .atomic_io import read_json_file
from .families import load_config_file, model_class_for_config
from .hub_download import HubOptions, locate_model, read_safetensors_header, resolve_file
from .model_card import partition_table, read_block_statuses
from .modeling.block_checkpoint import block_weights_name, metadata_edit
from .pretrained.command_convert import describe_conversion
from .pretrained.conversion import check_manifest_mapping
from .pretrained.converted_folder import MANIFEST_NAME, STEMS_NAME, ConversionManifest


def describe(path_or_repo: str, subfolder: str = "transformer", options: HubOptions = HubOptions()) -> str:
    """The text `info` prints: model type, partition table, and every block's status and size."""
    return inspect_model(path_or_repo, subfolder, options)[0]


def inspect_model(
    path_or_repo: str, subfolder: str = "transformer", options: HubOptions = HubOptions()
) -> tuple[str, dict[int, str]]:
    """`describe`'s text, and the blocks whose files do not belong to the model (index → why)."""
    config_path, model_options = locate_model(path_or_repo, subfolder, options)
    config = load_config_file(config_path)
    model_class = model_class_for_config(config)
    blocks = read_block_statuses(path_or_repo, config, model_options)
    where = f"{path_or_repo}/{model_options.subfolder}" if model_options.subfolder else path_or_repo
    present = [block.block_index for block in blocks if block.present]
    missing = [block.block_index for block in blocks if not block.present]
    lines = [
        f"model: {where}",
        f"model_type: {config.model_type} ({model_class.__name__})",
        f"num_blocks: {config.num_blocks}  num_hidden_layers: {config.num_hidden_layers}  "
        f"layers_per_block: {config.resolved_layers_per_block}",
        "",
        partition_table(config),
        "",
        f"{'block':>5}  {'layers':>9}  {'status':>8}  {'training_steps':>14}  {'parameters':>12}",
    ]
    foreign = {block.block_index: foreign_block_reason(block, config) for block in blocks if block.present}
    foreign = {index: reason for index, reason in foreign.items() if reason}
    for block in blocks:
        steps = "-" if block.training_steps is None else str(block.training_steps)
        parameters = "-" if block.parameter_count is None else str(block.parameter_count)
        status = "foreign" if block.block_index in foreign else "present" if block.present else "missing"
        lines.append(f"{block.block_index:>5}  {block.layers:>9}  {status:>8}  {steps:>14}  {parameters:>12}")
    lines += [
        "",
        f"present blocks: {[index for index in present if index not in foreign]}",
        f"missing blocks: {missing}",
        f"parameters of present blocks: {sum(b.parameter_count for b in blocks if b.present and b.block_index not in foreign)}",
    ]
    lines += [f"foreign block {index}: {reason}" for index, reason in sorted(foreign.items())]
    return "\n".join(lines), foreign


def foreign_block_reason(block, config) -> str | None:
    """Why a present block file does not belong to the model of `config` (another block, another
    partition or architecture, no block metadata), or None when it does."""
    metadata = block.header.metadata
    if metadata_edit(block_weights_name(block.block_index), metadata):
        return "its metadata (block_index, config, training_steps, ...) was edited after it was saved (metadata_sha256 differs)"
    try:
        block_index, block_config = int(metadata["block_index"]), json.loads(metadata["config"])
    except (KeyError, ValueError):
        return "its file carries no DiffusionBlocks block metadata"
    if block_index != block.block_index:
        return f"its file holds block {block_index}"
    differing = config.differing_fields(block_config)
    if differing:
        return "trained under another config: " + ", ".join(
            f"{name}={block_config.get(name)!r} (model: {config.architecture_dict().get(name)!r})" for name in differing
        )
    return None


def inspect_conversion(path_or_repo: str, subfolder: str, options: HubOptions) -> tuple[str, list[int | str]] | None:
    """For a folder written by `convert` (a pretrained diffusers transformer split into blocks): the source, the
    partition on its time axis, the stems' and every block's file status; the blocks of another conversion (and
    `"stems"` when the stems file is missing or another conversion's). None otherwise."""
    for candidate in ([subfolder, ""] if subfolder else [""]):
        candidate_options = replace(options, subfolder=candidate)
        manifest_path = resolve_file(path_or_repo, MANIFEST_NAME, candidate_options)
        if manifest_path is not None:
            break
    else:
        return None
    where = f"{path_or_repo}/{candidate_options.subfolder}" if candidate_options.subfolder else path_or_repo
    manifest = ConversionManifest.from_dict(read_json_file(manifest_path), where=f"{where}/{MANIFEST_NAME}")
    check_manifest_mapping(manifest, f"{where}/{MANIFEST_NAME}")
    stems = stems_status(path_or_repo, manifest, candidate_options)
    lines = [f"converted model: {path_or_repo}", describe_conversion(manifest, None), "", f"stems: {stems}", "",
             f"{'block':>5}  {'status':>8}  {'training_steps':>14}  {'parameters':>12}"]
    foreign: list = [] if stems == "present" else ["stems"]
    for block_index in range(manifest.num_blocks):
        header = read_safetensors_header(path_or_repo, block_weights_name(block_index), candidate_options)
        status, steps, parameters = "missing", "-", "-"
        if header is not None:
            steps = "-" if header.training_steps is None else str(header.training_steps)
            parameters = str(header.parameter_count)
            try:
                recorded = json.loads(header.metadata["config"])
                belongs = int(header.metadata["block_index"]) == block_index and recorded == manifest.identity()
            except (KeyError, ValueError):
                belongs = False
            belongs = belongs and metadata_edit(block_weights_name(block_index), header.metadata) is None
            status = "present" if belongs else "foreign"
            if not belongs:
                foreign.append(block_index)
        lines.append(f"{block_index:>5}  {status:>8}  {steps:>14}  {parameters:>12}")
    return "\n".join(lines), foreign


def stems_status(path_or_repo: str, manifest: ConversionManifest, options: HubOptions) -> str:
    """`present`, or why the stems file is not this conversion's (read from its header only: a truncated or
    unreadable file raises a `ValueError` naming it)."""
    header = read_safetensors_header(path_or_repo, STEMS_NAME, options)
    if header is None:
        return f"missing ({STEMS_NAME} is absent: no block can run without it)"
    if header.metadata.get("sha256") != manifest.stems_sha256:
        return (f"foreign ({STEMS_NAME} records digest {header.metadata.get('sha256')!r}, "
                f"{MANIFEST_NAME} expects {manifest.stems_sha256!r})")
    return "present"


def command_info(args: argparse.Namespace) -> int:
    options = HubOptions(
        revision=args.revision, cache_dir=args.cache_dir, local_files_only=args.local_files_only
    )
    converted = inspect_conversion(args.path_or_repo, args.subfolder, options)
    if converted is not None:
        print(converted[0])
        return 1 if converted[1] else 0
    text, foreign = inspect_model(args.path_or_repo, args.subfolder, options)
    print(text)
    return 1 if foreign else 0
