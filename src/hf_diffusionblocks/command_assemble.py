"""`hf-diffusionblocks assemble OUTPUT_DIR BLOCK_DIR [BLOCK_DIR ...]`: merge folders that each hold some blocks.

Blocks trained by different processes or machines land in different folders. Before anything is written,
every input is checked against the others (config, pipeline components, the scheduler's partition, each
block file's metadata, tensors and checksum, and blocks present twice); every inconsistency is reported in
one error. The merged folder is written under a temporary name and renamed into place once complete.
Folders written by `convert` and by fine-tuning a converted model merge by `assemble_converted`
(`pretrained/assembly.py`: same conversion and stems, each block's trained version over the converted one).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import sys
from dataclasses import dataclass
from typing import Sequence

import torch
from huggingface_hub import ModelCard
from safetensors import safe_open

from .atomic_io import atomic_folder, read_json_file
from .command_info import describe, inspect_conversion
from .families import load_config_file, model_class_for_config
from .hub import BLOCK_FILE_PATTERN, root_files
from .hub_download import HubOptions
from .model_card import write_model_card
from .modeling.block_checkpoint import CONFIG_NAME, block_weights_name, load_block_file, tensors_digest
from .pipelines.pipeline_utils import MODEL_INDEX_NAME
from .pretrained.assembly import choose_files, conversion_problems, read_converted_input, write_merged_folder
from .remote_code import REMOTE_CODE_MODULE, write_remote_code_module

# Keys of a pipeline's JSON files that record the writing library's version, not the pipeline.
_VERSION_KEYS = ("_diffusers_version", "transformers_version")
# The files transformers' tokenizers save next to a model (kept when model folders are assembled).
# What a training run writes once its folder holds every block: generated samples, and the model card.
SAMPLE_FILES = ("samples.png", "samples.txt")
CARD_NAME = "README.md"
_CARD_TRAINING_MODE = re.compile(r"^- \*\*Training mode:\*\* `(\w+)`", re.M)
_TOKENIZER_FILE = re.compile(r"^(tokenizer.*|special_tokens_map\.json|added_tokens\.json|vocab\..*|merges\.txt|chat_template.*)$")


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


def card_fields(folders: Sequence[BlockFolder]) -> tuple[str, str]:
    """(dataset, training mode) for the merged folder's card: from the first input with a model card, else
    what assemble can say without one (it merges blocks trained block-wise; the data was not recorded)."""
    for folder in folders:
        path = os.path.join(folder.path, CARD_NAME)
        if not os.path.isfile(path):
            continue
        card = ModelCard.load(path)
        datasets = card.data.to_dict().get("datasets") or []
        mode = _CARD_TRAINING_MODE.search(card.text)
        if datasets and mode:
            return str(datasets[0]), mode.group(1)
    return "not recorded (assembled from block folders that have no model card)", "blockwise"


def complete_input(folders: Sequence[BlockFolder]) -> BlockFolder | None:
    """The first input that holds every block: its samples were generated by exactly the merged blocks (a block
    present in several inputs holds the same weights in each, which `choose_block_files` checks)."""
    return next((folder for folder in folders if len(folder.block_files) == folder.config.num_blocks), None)


def write_assembly(
    output_dir: str, folders: Sequence[BlockFolder], block_files: dict[int, str], subfolder: str
) -> None:
    """Write the merged folder under a temporary name next to `output_dir`, then rename it into place.

    The folder is complete as a training run leaves it: the defining files, the model's root files and blocks,
    `hf_diffusionblocks_classes.py` beside every file that names it (model_index.json at the top of a pipeline,
    the model's config.json, the components copied), and, once every block is present, the samples of an input
    that held every block and a model card."""
    pipelines = [folder for folder in folders if folder.is_pipeline]
    # only an empty output_dir may be replaced (checked in assemble(); atomic_folder refuses any other)
    with atomic_folder(output_dir) as staging:
        source = pipelines[0] if pipelines else folders[0]
        for relative in defining_files(source, subfolder):
            destination = os.path.join(staging, *relative.split("/"))
            os.makedirs(os.path.dirname(destination), exist_ok=True)
            shutil.copyfile(os.path.join(source.path, *relative.split("/")), destination)
        if pipelines and names_remote_code(read_json_file(os.path.join(staging, MODEL_INDEX_NAME))):
            write_remote_code_module(staging)  # model_index.json names the pipeline class in it
        model_dir = os.path.join(staging, subfolder) if pipelines else staging
        os.makedirs(model_dir, exist_ok=True)
        reference = folders[0].config
        with torch.device("meta"):
            skeleton = model_class_for_config(reference)(reference, block_indices=[min(block_files)])
        skeleton.save_root_files(model_dir)
        for block_index, path in block_files.items():
            shutil.copyfile(path, os.path.join(model_dir, block_weights_name(block_index)))
        if len(block_files) < reference.num_blocks:
            return
        complete = complete_input(pipelines or folders)
        samples = [name for name in SAMPLE_FILES if complete is not None and os.path.isfile(os.path.join(complete.path, name))]
        for name in samples:
            shutil.copyfile(os.path.join(complete.path, name), os.path.join(staging, name))
        dataset, training_mode = card_fields(folders)
        write_model_card(staging, dataset=dataset, training_mode=training_mode,
                         sample_grid="samples.png" if "samples.png" in samples else None,
                         repo_id=f"your-username/{os.path.basename(os.path.abspath(output_dir))}")


def names_remote_code(model_index: object) -> bool:
    """Whether a model_index.json names its pipeline class in `hf_diffusionblocks_classes.py`."""
    name = model_index.get("_class_name") if isinstance(model_index, dict) else None
    return isinstance(name, list) and bool(name) and name[0] == REMOTE_CODE_MODULE


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
    converted = assemble_converted(output_dir, inputs, subfolder, require_complete, verify)
    if converted is not None:
        return converted
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


def assemble_converted(
    output_dir: str, inputs: Sequence[str], subfolder: str, require_complete: bool, verify: bool
) -> list[int] | None:
    """`assemble` for folders written by `convert` and by fine-tuning a converted model (`pretrained/assembly.py`:
    same conversion and stems, each block's trained version over the converted one); returns the missing
    blocks, or None when the inputs are not converted folders."""
    converted = [read_converted_input(path, subfolder) for path in inputs]
    if all(item is None for item in converted):
        return None
    if any(item is None for item in converted):
        others = [path for path, item in zip(inputs, converted) if item is None]
        raise ValueError(f"{others} are not converted folders (no diffusion_blocks.json), but the other inputs are.")
    problems = conversion_problems(converted)
    pipelines = [BlockFolder(item.path, item.model_dir, True, None, {}) for item in converted if item.is_pipeline]
    for folder in pipelines[1:]:
        problems += component_differences(pipelines[0], folder, subfolder)
    merged = choose_files(converted, verify) if not problems else None
    problems += merged.problems if merged is not None else []
    if problems:
        raise ValueError(_problem_report(problems))
    missing = [index for index in range(converted[0].manifest.num_blocks) if index not in merged.blocks]
    if missing and require_complete:
        raise ValueError(f"blocks {missing} are in none of the inputs (present: {sorted(merged.blocks)}).")
    reference = next((item for item in converted if item.is_pipeline), converted[0])
    with atomic_folder(output_dir) as staging:
        for relative in defining_files(pipelines[0], subfolder) if pipelines else []:
            destination = os.path.join(staging, *relative.split("/"))
            os.makedirs(os.path.dirname(destination), exist_ok=True)
            shutil.copyfile(os.path.join(pipelines[0].path, *relative.split("/")), destination)
        write_merged_folder(os.path.join(staging, subfolder) if pipelines else staging, reference, merged)
    return missing


def _problem_report(problems: list[str]) -> str:
    if len(problems) == 1:
        return problems[0]
    return f"{len(problems)} inconsistencies, nothing written:\n" + "\n".join(f"  - {problem}" for problem in problems)


def command_assemble(args: argparse.Namespace) -> int:
    missing = assemble(args.output_dir, args.block_dirs, args.subfolder, args.require_complete, verify=not args.no_verify)
    converted = inspect_conversion(args.output_dir, args.subfolder, HubOptions())
    print(converted[0] if converted is not None else describe(args.output_dir, args.subfolder))
    if missing:
        print(
            f"warning: blocks {missing} are missing; the folder cannot sample until they are added.",
            file=sys.stderr,
        )
    return 0
