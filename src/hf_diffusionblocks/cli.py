"""`hf-diffusionblocks` command line: inspect checkpoints, assemble blocks, print partitions.

    hf-diffusionblocks info PATH_OR_REPO [--subfolder transformer]
    hf-diffusionblocks assemble OUTPUT_DIR BLOCK_DIR [BLOCK_DIR ...]
    hf-diffusionblocks partition --num_blocks 3 [--partition equiprobable] [--overlap 0.05]
    hf-diffusionblocks convert SRC OUT --num_blocks B [--partition equiprobable|uniform] [--overlap γ]

The model family is found from `model_type` in config.json through the Auto-class registrations
that importing `hf_diffusionblocks` performs, so every registered family works the same way.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from typing import Sequence

import torch
from huggingface_hub.errors import HfHubHTTPError
from safetensors.torch import load_file

from .hub import BLOCK_FILE_PATTERN, root_files
from .hub_utils import HubOptions, load_config_file, locate_model, model_class_for_config
from .model_card import partition_table, read_block_statuses
from .modeling.block_checkpoint import CONFIG_NAME, block_weights_name
from .partition import PARTITIONS, assign_layers_to_blocks
from .pipelines.pipeline_utils import MODEL_INDEX_NAME
from .schedulers import DiffusionBlocksScheduler

# Keys of a pipeline's JSON files that record the writing library's version, not the pipeline.
_VERSION_KEYS = ("_diffusers_version", "transformers_version")


# ---- info ----------------------------------------------------------------------------------------


def describe(path_or_repo: str, subfolder: str = "transformer", options: HubOptions = HubOptions()) -> str:
    """The text `info` prints: model type, partition table, and every block's status and size."""
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
    for block in blocks:
        steps = "-" if block.training_steps is None else str(block.training_steps)
        parameters = "-" if block.parameter_count is None else str(block.parameter_count)
        status = "present" if block.present else "missing"
        lines.append(f"{block.block_index:>5}  {block.layers:>9}  {status:>8}  {steps:>14}  {parameters:>12}")
    lines += [
        "",
        f"present blocks: {present}",
        f"missing blocks: {missing}",
        f"parameters of present blocks: {sum(block.parameter_count for block in blocks if block.present)}",
    ]
    return "\n".join(lines)


def command_info(args: argparse.Namespace) -> int:
    options = HubOptions(
        revision=args.revision, cache_dir=args.cache_dir, local_files_only=args.local_files_only
    )
    print(describe(args.path_or_repo, args.subfolder, options))
    return 0


# ---- assemble ------------------------------------------------------------------------------------


@dataclass
class BlockFolder:
    """One input of `assemble`: a model folder, or a pipeline folder whose model is in a subfolder."""

    path: str
    model_dir: str
    is_pipeline: bool
    config: object
    block_files: dict[int, str]


def read_block_folder(path: str, subfolder: str = "transformer") -> BlockFolder:
    """The config and block files of a local model or pipeline folder."""
    if not os.path.isdir(path):
        raise ValueError(f"{path!r} is not a folder (assemble takes local model or pipeline folders).")
    is_pipeline = os.path.isfile(os.path.join(path, MODEL_INDEX_NAME))
    model_dir = os.path.join(path, subfolder) if is_pipeline else path
    config_path = os.path.join(model_dir, CONFIG_NAME)
    if not os.path.isfile(config_path):
        raise ValueError(
            f"no {CONFIG_NAME} in {model_dir!r}: not a DiffusionBlocks model or pipeline folder."
        )
    block_files = {
        int(name[len("block_") : -len(".safetensors")]): os.path.join(model_dir, name)
        for name in os.listdir(model_dir)
        if BLOCK_FILE_PATTERN.match(name)
    }
    return BlockFolder(path, model_dir, is_pipeline, load_config_file(config_path), block_files)


def file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def same_block_weights(path: str, other_path: str) -> bool:
    """Whether two block files hold the same tensors (their headers' metadata order may differ)."""
    first, second = load_file(path), load_file(other_path)
    return first.keys() == second.keys() and all(torch.equal(first[name], second[name]) for name in first)


def check_same_config(reference: BlockFolder, other: BlockFolder) -> None:
    """Refuse folders whose model configs differ, naming the fields."""
    differing = reference.config.differing_fields(other.config)
    if differing:
        details = ", ".join(
            f"{name}: {getattr(reference.config, name, None)!r} vs {getattr(other.config, name, None)!r}"
            for name in differing
        )
        raise ValueError(
            f"{other.path} holds a model with another config than {reference.path}; "
            f"differing fields: {details}."
        )


def choose_block_files(folders: Sequence[BlockFolder]) -> dict[int, str]:
    """One checked file per block index; a block found twice must hold the same weights both times."""
    reference = folders[0]
    model_class = model_class_for_config(reference.config)
    chosen: dict[int, str] = {}
    for folder in folders:
        for block_index, path in sorted(folder.block_files.items()):
            model_class.check_block_file(path, block_index, reference.config)
            if block_index in chosen and not same_block_weights(chosen[block_index], path):
                raise ValueError(
                    f"block {block_index} is in {chosen[block_index]} and {path} with different contents."
                )
            chosen.setdefault(block_index, path)
    return chosen


def _comparable(path: str) -> object:
    """JSON content without library-version keys, or the SHA-256 of any other file."""
    if path.endswith(".json"):
        with open(path, encoding="utf-8") as file:
            content = json.load(file)
        return (
            {key: value for key, value in content.items() if key not in _VERSION_KEYS}
            if isinstance(content, dict)
            else content
        )
    return file_digest(path)


def pipeline_root_files(folder: BlockFolder, subfolder: str) -> list[str]:
    """The files a pipeline folder holds besides its model and its (per-folder) model card."""
    return [
        path
        for path in root_files(folder.path)
        if not path.startswith(f"{subfolder}/") and path != "README.md"
    ]


def check_same_pipeline(reference: BlockFolder, other: BlockFolder, subfolder: str) -> None:
    """Refuse pipeline folders whose other components (model_index.json, scheduler, vae, ...) differ."""
    files = set(pipeline_root_files(reference, subfolder)) | set(pipeline_root_files(other, subfolder))
    for relative in sorted(files):
        paths = [os.path.join(folder.path, *relative.split("/")) for folder in (reference, other)]
        if not all(os.path.isfile(path) for path in paths) or _comparable(paths[0]) != _comparable(paths[1]):
            raise ValueError(f"pipeline folders {reference.path} and {other.path} differ in {relative}.")


def write_assembly(
    output_dir: str, folders: Sequence[BlockFolder], block_files: dict[int, str], subfolder: str
) -> None:
    """Write the merged folder under a temporary name next to `output_dir`, then rename it into place."""
    pipelines = [folder for folder in folders if folder.is_pipeline]
    parent = os.path.dirname(os.path.abspath(output_dir))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(output_dir))}.", dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes the folder private (0700); give it the usual mode
    try:
        if pipelines:
            for relative in pipeline_root_files(pipelines[0], subfolder):
                destination = os.path.join(staging, *relative.split("/"))
                os.makedirs(os.path.dirname(destination), exist_ok=True)
                shutil.copyfile(os.path.join(pipelines[0].path, *relative.split("/")), destination)
        model_dir = os.path.join(staging, subfolder) if pipelines else staging
        os.makedirs(model_dir, exist_ok=True)
        reference = folders[0].config
        with torch.device("meta"):
            skeleton = model_class_for_config(reference)(reference, block_indices=[min(block_files)])
        skeleton.save_root_files(model_dir)
        for block_index, path in block_files.items():
            shutil.copyfile(path, os.path.join(model_dir, block_weights_name(block_index)))
        if os.path.isdir(output_dir):
            os.rmdir(output_dir)  # only an empty folder may be replaced; checked in assemble()
        os.replace(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def assemble(
    output_dir: str, inputs: Sequence[str], subfolder: str = "transformer", require_complete: bool = False
) -> list[int]:
    """Merge folders that each hold some blocks into one folder; returns the missing block indices.

    All inputs must hold the same model config (and, for pipeline folders, the same scheduler and
    other components); a block present in several inputs must hold the same weights in each. The output is a
    pipeline folder if any input is one, a model folder otherwise. It is written atomically: under a
    temporary name, renamed into place once complete.
    """
    if os.path.exists(output_dir) and (not os.path.isdir(output_dir) or os.listdir(output_dir)):
        raise ValueError(f"output_dir {output_dir!r} already exists and is not an empty folder.")
    if any(os.path.abspath(output_dir) == os.path.abspath(path) for path in inputs):
        raise ValueError(f"output_dir {output_dir!r} is also an input folder.")
    folders = [read_block_folder(path, subfolder) for path in inputs]
    for folder in folders[1:]:
        check_same_config(folders[0], folder)
    pipelines = [folder for folder in folders if folder.is_pipeline]
    for folder in pipelines[1:]:
        check_same_pipeline(pipelines[0], folder, subfolder)
    block_files = choose_block_files(folders)
    if not block_files:
        raise ValueError(f"no block files (block_<b>.safetensors) in {list(inputs)}.")
    missing = [index for index in range(folders[0].config.num_blocks) if index not in block_files]
    if missing and require_complete:
        raise ValueError(f"blocks {missing} are in none of the inputs (present: {sorted(block_files)}).")
    write_assembly(output_dir, folders, block_files, subfolder)
    return missing


def command_assemble(args: argparse.Namespace) -> int:
    missing = assemble(args.output_dir, args.block_dirs, args.subfolder, args.require_complete)
    print(describe(args.output_dir, args.subfolder))
    if missing:
        print(
            f"warning: blocks {missing} are missing; the folder cannot sample until they are added.",
            file=sys.stderr,
        )
    return 0


# ---- partition -----------------------------------------------------------------------------------


def command_partition(args: argparse.Namespace) -> int:
    scheduler = DiffusionBlocksScheduler(
        num_blocks=args.num_blocks,
        sigma_min=args.sigma_min,
        sigma_max=args.sigma_max,
        p_mean=args.p_mean,
        p_std=args.p_std,
        partition=args.partition,
        overlap=args.overlap,
    )
    layers_per_block = args.layers_per_block
    if layers_per_block is not None:
        layers_per_block = assign_layers_to_blocks(sum(layers_per_block), args.num_blocks, layers_per_block)
    print(scheduler.partition_table(layers_per_block))
    boundaries = ", ".join(f"{sigma:.4f}" for sigma in scheduler.block_sigmas.flip(0).tolist())
    print(f"boundaries (increasing): {boundaries}")
    return 0


# ---- entry point ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-diffusionblocks", description="DiffusionBlocks checkpoints and partitions."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    info = commands.add_parser(
        "info", help="model type, partition and per-block status of a folder or Hub repo"
    )
    info.add_argument(
        "path_or_repo", help="a model folder, a pipeline folder (model in --subfolder) or a Hub repo id"
    )
    info.add_argument(
        "--subfolder", default="transformer", help="where a pipeline keeps its model (default: transformer)"
    )
    info.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit)")
    info.add_argument("--cache_dir", default=None, help="Hub cache folder")
    info.add_argument(
        "--local_files_only", action="store_true", help="use only files already in the Hub cache"
    )
    info.set_defaults(run=command_info)

    merge = commands.add_parser("assemble", help="merge folders that each hold some blocks into one folder")
    merge.add_argument("output_dir", help="the merged folder to create (must not exist, or be empty)")
    merge.add_argument("block_dirs", nargs="+", help="model or pipeline folders, each holding some blocks")
    merge.add_argument("--subfolder", default="transformer", help="where pipeline folders keep the model")
    merge.add_argument("--require_complete", action="store_true", help="fail if any block is missing")
    merge.set_defaults(run=command_assemble)

    table = commands.add_parser("partition", help="print the noise partition of a DiffusionBlocksScheduler")
    table.add_argument("--num_blocks", type=int, default=3)
    table.add_argument("--partition", choices=PARTITIONS, default="equiprobable")
    table.add_argument("--overlap", type=float, default=0.05)
    table.add_argument("--sigma_min", type=float, default=0.002)
    table.add_argument("--sigma_max", type=float, default=80.0)
    table.add_argument("--p_mean", type=float, default=-1.2)
    table.add_argument("--p_std", type=float, default=1.2)
    table.add_argument(
        "--layers_per_block", type=int, nargs="+", default=None, help="layer count of each block"
    )
    table.set_defaults(run=command_partition)

    from .pretrained.command_convert import add_convert_command

    add_convert_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `hf-diffusionblocks`; exit status 1, with a message, on bad input or a Hub error."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, HfHubHTTPError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
