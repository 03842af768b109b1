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
import re
import shutil
import sys
from dataclasses import dataclass, replace
from typing import Sequence

import torch
from huggingface_hub.errors import HfHubHTTPError
from safetensors import safe_open

from .atomic_io import make_staging_folder, read_json_file
from .families import load_config_file, model_class_for_config
from .hub import BLOCK_FILE_PATTERN, root_files
from .hub_download import HubOptions, locate_model, read_safetensors_header, resolve_file
from .model_card import partition_table, read_block_statuses
from .modeling.block_checkpoint import CONFIG_NAME, block_weights_name, load_block_file, tensors_digest
from .partition import PARTITION_FIELDS, PARTITIONS, assign_layers_to_blocks
from .pipelines.pipeline_utils import MODEL_INDEX_NAME
from .schedulers import DiffusionBlocksScheduler

# Keys of a pipeline's JSON files that record the writing library's version, not the pipeline.
_VERSION_KEYS = ("_diffusers_version", "transformers_version")
# The files transformers' tokenizers save next to a model (kept when model folders are assembled).
_TOKENIZER_FILE = re.compile(r"^(tokenizer.*|special_tokens_map\.json|added_tokens\.json|vocab\..*|merges\.txt|chat_template.*)$")


# ---- info ----------------------------------------------------------------------------------------


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


def inspect_conversion(path_or_repo: str, subfolder: str, options: HubOptions) -> tuple[str, list[int]] | None:
    """For a folder written by `convert` (a pretrained diffusers transformer split into blocks): the source, the
    partition on its time axis, and every block's file status; the blocks of another conversion. None otherwise."""
    from .pretrained.command_convert import describe_conversion
    from .pretrained.converted_folder import MANIFEST_NAME, ConversionManifest

    for candidate in ([subfolder, ""] if subfolder else [""]):
        candidate_options = replace(options, subfolder=candidate)
        manifest_path = resolve_file(path_or_repo, MANIFEST_NAME, candidate_options)
        if manifest_path is not None:
            break
    else:
        return None
    manifest = ConversionManifest.from_dict(read_json_file(manifest_path))
    lines = [f"converted model: {path_or_repo}", describe_conversion(manifest, None), "",
             f"{'block':>5}  {'status':>8}  {'training_steps':>14}  {'parameters':>12}"]
    foreign = []
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
            status = "present" if belongs else "foreign"
            if not belongs:
                foreign.append(block_index)
        lines.append(f"{block_index:>5}  {status:>8}  {steps:>14}  {parameters:>12}")
    return "\n".join(lines), foreign


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


def config_differences(reference: BlockFolder, other: BlockFolder) -> list[str]:
    """One line naming the differing fields when two folders' model configs differ (none when they agree)."""
    differing = reference.config.differing_fields(other.config)
    if not differing:
        return []
    details = ", ".join(
        f"{name}: {getattr(reference.config, name, None)!r} vs {getattr(other.config, name, None)!r}" for name in differing
    )
    return [f"{other.path} holds a model with another config than {reference.path}; differing fields: {details}."]


def block_file_problems(path: str, block_index: int, skeleton, verify: bool) -> tuple[list[str], str | None]:
    """What is wrong with one block file for the model `skeleton` (a meta-device instance of the reference
    config): unreadable, another block or config, missing/unexpected/mis-shaped tensors, a checksum that does
    not match. Returns the problems and the digest of its tensors (None when it could not be read)."""
    try:
        metadata = type(skeleton).check_block_file(path, block_index, skeleton.config)
        with safe_open(path, framework="pt") as file:
            shapes = {name: tuple(file.get_slice(name).get_shape()) for name in file.keys()}
    except ValueError as error:
        return [str(error)], None
    problems = [f"block {block_index} ({path}): {problem}" for problem in skeleton.block_tensor_mismatches(block_index, shapes)]
    digest = metadata["weights_sha256"]
    if verify or digest is None:
        try:
            digest = tensors_digest(load_block_file(path, verify_checksum=verify))
        except ValueError as error:
            return problems + [str(error)], None
    return problems, digest


def choose_block_files(folders: Sequence[BlockFolder], verify: bool = True) -> tuple[dict[int, str], list[str]]:
    """One checked file per block index, and every problem found; a block found twice must hold the same weights."""
    reference = folders[0].config
    with torch.device("meta"):
        skeleton = model_class_for_config(reference)(reference)
    chosen: dict[int, tuple[str, str]] = {}
    problems: list[str] = []
    for folder in folders:
        for block_index, path in sorted(folder.block_files.items()):
            if block_index >= reference.num_blocks:
                problems.append(f"{path}: block {block_index} does not exist in a model of num_blocks={reference.num_blocks}.")
                continue
            found, digest = block_file_problems(path, block_index, skeleton, verify)
            problems += found
            if found or digest is None:
                continue
            if block_index in chosen and chosen[block_index][1] != digest:
                problems.append(f"block {block_index} is in {chosen[block_index][0]} and {path} with different contents.")
            chosen.setdefault(block_index, (path, digest))
    return {index: path for index, (path, _) in chosen.items()}, problems


def _comparable(path: str) -> object:
    """JSON content without library-version keys, or the SHA-256 of any other file."""
    if path.endswith(".json"):
        content = read_json_file(path)
        return (
            {key: value for key, value in content.items() if key not in _VERSION_KEYS}
            if isinstance(content, dict)
            else content
        )
    return file_digest(path)


def defining_files(folder: BlockFolder, subfolder: str) -> list[str]:
    """The files that define what a folder loads as, besides the model itself: for a pipeline folder,
    `model_index.json` and the folders of the components it lists (scheduler, vae, tokenizer, ...); for a
    model folder, the tokenizer files next to the model. Run artefacts (validation images, samples, logs,
    checkpoints, the model card) are not among them: they differ between the processes of one run."""
    files = root_files(folder.path)
    if not folder.is_pipeline:
        return [path for path in files if "/" not in path and _TOKENIZER_FILE.match(path)]
    model_index = read_json_file(os.path.join(folder.path, MODEL_INDEX_NAME))
    components = {name for name, entry in model_index.items() if not name.startswith("_") and name != subfolder}
    return [path for path in files if path == MODEL_INDEX_NAME or path.split("/")[0] in components]


def scheduler_differences(folder: BlockFolder) -> list[str]:
    """A pipeline's scheduler must sample with the partition its model was trained on."""
    path = os.path.join(folder.path, "scheduler", "scheduler_config.json")
    if not folder.is_pipeline or not os.path.isfile(path) or not hasattr(folder.config, "scheduler_kwargs"):
        return []
    scheduler_config = read_json_file(path)
    return [
        f"{path}: {name}={scheduler_config[name]!r} contradicts the model's {name}={value!r}."
        for name, value in folder.config.scheduler_kwargs().items()
        if name in scheduler_config and scheduler_config[name] != value
    ]


def component_differences(reference: BlockFolder, other: BlockFolder, subfolder: str) -> list[str]:
    """The defining files (see `defining_files`) that differ between two folders, one line each."""
    files = set(defining_files(reference, subfolder)) | set(defining_files(other, subfolder))
    problems = []
    for relative in sorted(files):
        paths = [os.path.join(folder.path, *relative.split("/")) for folder in (reference, other)]
        if not all(os.path.isfile(path) for path in paths):
            problems.append(f"{relative} is in only one of {reference.path} and {other.path}.")
        elif _comparable(paths[0]) != _comparable(paths[1]):
            problems.append(f"{reference.path} and {other.path} differ in {relative}.")
    return problems


def write_assembly(
    output_dir: str, folders: Sequence[BlockFolder], block_files: dict[int, str], subfolder: str
) -> None:
    """Write the merged folder under a temporary name next to `output_dir`, then rename it into place."""
    pipelines = [folder for folder in folders if folder.is_pipeline]
    parent = os.path.dirname(os.path.abspath(output_dir))
    os.makedirs(parent, exist_ok=True)
    staging = make_staging_folder(parent, os.path.basename(os.path.abspath(output_dir)))
    try:
        source = pipelines[0] if pipelines else folders[0]
        for relative in defining_files(source, subfolder):
            destination = os.path.join(staging, *relative.split("/"))
            os.makedirs(os.path.dirname(destination), exist_ok=True)
            shutil.copyfile(os.path.join(source.path, *relative.split("/")), destination)
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
    output_dir: str,
    inputs: Sequence[str],
    subfolder: str = "transformer",
    require_complete: bool = False,
    verify: bool = True,
) -> list[int]:
    """Merge folders that each hold some blocks into one folder; returns the missing block indices.

    All inputs must hold the same model config and, for pipeline folders, the same components
    (`model_index.json`, scheduler, VAE, tokenizer: what defines the pipeline, not run artefacts such as
    validation images); a pipeline's scheduler must carry its model's partition; every block file must be
    that block of that config with exactly the expected tensors and (unless `verify=False`) match its
    checksum; a block present in several inputs must hold the same weights in each. Every inconsistency
    found is reported in one `ValueError`. The output is a pipeline folder if any input is one, a model
    folder otherwise, written atomically: under a temporary name, renamed into place once complete.
    """
    if os.path.exists(output_dir) and (not os.path.isdir(output_dir) or os.listdir(output_dir)):
        raise ValueError(f"output_dir {output_dir!r} already exists and is not an empty folder.")
    if any(os.path.abspath(output_dir) == os.path.abspath(path) for path in inputs):
        raise ValueError(f"output_dir {output_dir!r} is also an input folder.")
    folders = [read_block_folder(path, subfolder) for path in inputs]
    problems: list[str] = []
    for folder in folders[1:]:
        problems += config_differences(folders[0], folder)
    if problems:  # blocks cannot be checked against a config the inputs do not agree on
        raise ValueError(_problem_report(problems))
    for folder in folders:
        problems += scheduler_differences(folder)
    pipelines = [folder for folder in folders if folder.is_pipeline]
    same_kind = pipelines if pipelines else folders
    for folder in same_kind[1:]:
        problems += component_differences(same_kind[0], folder, subfolder)
    block_files, block_problems = choose_block_files(folders, verify)
    problems += block_problems
    if problems:
        raise ValueError(_problem_report(problems))
    if not block_files:
        raise ValueError(f"no block files (block_<b>.safetensors) in {list(inputs)}.")
    missing = [index for index in range(folders[0].config.num_blocks) if index not in block_files]
    if missing and require_complete:
        raise ValueError(f"blocks {missing} are in none of the inputs (present: {sorted(block_files)}).")
    write_assembly(output_dir, folders, block_files, subfolder)
    return missing


def _problem_report(problems: list[str]) -> str:
    if len(problems) == 1:
        return problems[0]
    return f"{len(problems)} inconsistencies, nothing written:\n" + "\n".join(f"  - {problem}" for problem in problems)


def command_assemble(args: argparse.Namespace) -> int:
    missing = assemble(args.output_dir, args.block_dirs, args.subfolder, args.require_complete, verify=not args.no_verify)
    print(describe(args.output_dir, args.subfolder))
    if missing:
        print(
            f"warning: blocks {missing} are missing; the folder cannot sample until they are added.",
            file=sys.stderr,
        )
    return 0


# ---- partition -----------------------------------------------------------------------------------


def command_partition(args: argparse.Namespace) -> int:
    scheduler = DiffusionBlocksScheduler(**{name: getattr(args, name) for name in PARTITION_FIELDS})
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
    merge.add_argument(
        "--no_verify", action="store_true",
        help="skip hashing every block file against the checksum it recorded (faster for large blocks)",
    )
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
    """Entry point of `hf-diffusionblocks`; exit status 1 with a one-line message (no traceback) on any error."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError, OSError, HfHubHTTPError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted.", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - a command line answers with a message, never a traceback
        print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
