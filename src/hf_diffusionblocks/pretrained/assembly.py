"""Merging converted folders whose blocks were fine-tuned apart (what `hf-diffusionblocks assemble` does with them).

A fine-tuning run writes a complete converted folder (`finetuning.prepare_output_folder`): the
conversion's files, the block(s) it trained, every other block as converted, and its LoRA adapters in
`lora/`. Runs on different machines therefore each hold every block, but only some trained. Merging
checks that every input is the same conversion with the same stems (the manifest's identity, and the
stems file against its digest), that every block file is that block of that conversion and matches
its checksum, and then takes for every block the trained version (tensors that differ from the
conversion's) over the converted one. Two different trained versions of one block (or two different
adapters) are a conflict; every problem found is reported at once.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field

from ..modeling.block_checkpoint import CONFIG_NAME, block_weights_name, load_block_file, read_block_metadata, tensors_digest
from ..model_card import write_converted_model_card
from ..remote_code import REMOTE_CODE_FILE
from .converted_folder import (
    MANIFEST_NAME, STEMS_NAME, ConversionManifest, check_block_file, load_stems, read_manifest, write_index_for,
)
from .finetuning import LORA_FOLDER
from .lora import check_adapter_file


@dataclass
class ConvertedInput:
    """One input of a merge: a converted folder, or a pipeline folder whose transformer is one."""

    path: str
    model_dir: str
    is_pipeline: bool
    manifest: ConversionManifest


@dataclass
class MergedBlocks:
    """The file chosen for every block (and adapter) found, and every problem met choosing them."""

    blocks: dict[int, str] = field(default_factory=dict)
    adapters: dict[int, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def read_converted_input(path: str, subfolder: str = "transformer") -> ConvertedInput | None:
    """The converted folder at `path` (or in its pipeline's `subfolder`), or None when `path` holds none."""
    is_pipeline = os.path.isfile(os.path.join(path, "model_index.json"))
    model_dir = os.path.join(path, subfolder) if is_pipeline else path
    if not os.path.isfile(os.path.join(model_dir, MANIFEST_NAME)):
        return None
    return ConvertedInput(path, model_dir, is_pipeline, read_manifest(model_dir))


def conversion_problems(inputs: list[ConvertedInput]) -> list[str]:
    """Inputs of another conversion than the first, and stems files that are not their conversion's."""
    reference = inputs[0].manifest.identity()
    problems = []
    for item in inputs:
        identity = item.manifest.identity()
        differing = sorted(key for key in set(reference) | set(identity) if reference.get(key) != identity.get(key))
        if differing:
            problems.append(f"{item.path} is another conversion than {inputs[0].path}: {differing} differ.")
            continue
        try:
            load_stems(item.model_dir, item.manifest)
        except ValueError as error:
            problems.append(str(error))
    return problems


def file_digest_and_problems(
    path: str, block_index: int, manifest: ConversionManifest, adapter: bool, verify: bool
) -> tuple[str | None, list[str]]:
    """The digest of a block (or adapter) file's tensors, after checking it is block `block_index` of `manifest`."""
    try:
        if adapter:
            check_adapter_file(path, block_index, manifest)
        else:
            check_block_file(path, block_index, manifest)
        digest = read_block_metadata(path)["weights_sha256"]
        if verify or digest is None:
            digest = tensors_digest(load_block_file(path, verify_checksum=verify))
    except ValueError as error:
        return None, [str(error)]
    return digest, []


def choose_files(inputs: list[ConvertedInput], verify: bool = True) -> MergedBlocks:
    """For every block: the trained version over the converted one; for every adapter: the one there is."""
    manifest = inputs[0].manifest
    merged = MergedBlocks()
    for adapter, chosen in ((False, merged.blocks), (True, merged.adapters)):
        for block_index in range(manifest.num_blocks):
            versions: dict[str, str] = {}  # digest → first file holding it
            for item in inputs:
                folder = os.path.join(item.model_dir, LORA_FOLDER) if adapter else item.model_dir
                path = os.path.join(folder, block_weights_name(block_index))
                if not os.path.isfile(path):
                    continue
                digest, problems = file_digest_and_problems(path, block_index, manifest, adapter, verify)
                merged.problems += problems
                if digest is not None:
                    versions.setdefault(digest, path)
            trained = {digest: path for digest, path in versions.items() if adapter or digest != manifest.block_sha256[block_index]}
            if len(trained) > 1:
                kind = "adapter" if adapter else "block"
                merged.problems.append(f"{kind} {block_index} was trained differently in {sorted(trained.values())}: keep one.")
            elif versions:
                chosen[block_index] = next(iter(trained.values()), None) or next(iter(versions.values()))
    return merged


def write_merged_folder(model_dir: str, reference: ConvertedInput, merged: MergedBlocks) -> None:
    """The converted folder `model_dir`: the reference's root files, the chosen blocks and adapters, index and card."""
    os.makedirs(model_dir, exist_ok=True)
    for name in (CONFIG_NAME, MANIFEST_NAME, STEMS_NAME, REMOTE_CODE_FILE):
        if os.path.isfile(os.path.join(reference.model_dir, name)):
            shutil.copyfile(os.path.join(reference.model_dir, name), os.path.join(model_dir, name))
    for block_index, path in merged.blocks.items():
        shutil.copyfile(path, os.path.join(model_dir, block_weights_name(block_index)))
    if merged.adapters:
        os.makedirs(os.path.join(model_dir, LORA_FOLDER), exist_ok=True)
        for block_index, path in merged.adapters.items():
            shutil.copyfile(path, os.path.join(model_dir, LORA_FOLDER, block_weights_name(block_index)))
    write_index_for(model_dir, reference.manifest, load_stems(reference.model_dir, reference.manifest))
    write_converted_model_card(model_dir, pipeline_dir=os.path.dirname(os.path.normpath(model_dir)) if reference.is_pipeline else None)
